"""Ember's one door to Ray's private modules.

Only this module imports `ray.llm._internal`, `ray._private` or `ray.serve._private`
(tests/unit/test_ray_internals.py walks `platform/` and `serve_apps/` to keep it so,
and checks that every private name below still exists in the installed Ray: a Ray
upgrade that moves one fails `make test`, not a replica at run time).

Design choices:
- public first: `ray.serve.llm` (and its `openai_api_models`, `deployment`, `ingress`
  modules) names the request types, `LLMServer` and `OpenAiIngress`; Ember takes
  those, and `_internal` only for what has no public name;
- each private member Ember touches is a named re-export or a small function, with
  one line saying why Ember needs it;
- where Ember subclasses a Ray class and overrides or reads its private members,
  the names are listed (`*_PRIVATE_MEMBERS`) for the test to check on the base class;
- lazy: a name is imported on first use (PEP 562 `__getattr__`), so `ember up`
  (which needs `local_gcs_addresses` only) does not import vLLM, and each importer
  pays what it paid when it imported Ray directly.
"""

from __future__ import annotations

import importlib
from typing import Any

_SERVE_LLM = "ray.serve.llm"
_MODELS = "ray.llm._internal.serve.core.configs.openai_api_models"
_INGRESS = "ray.llm._internal.serve.core.ingress.ingress"

# name -> (module, attribute), imported on first use
REEXPORTS = {
    # public: the OpenAI request bodies Ember's routes parse and build
    "ChatCompletionRequest": (f"{_SERVE_LLM}.openai_api_models", "ChatCompletionRequest"),
    "CompletionRequest": (f"{_SERVE_LLM}.openai_api_models", "CompletionRequest"),
    "EmbeddingRequest": (f"{_SERVE_LLM}.openai_api_models", "EmbeddingRequest"),
    # public: the engine deployment Ember's `EngineServer`/`EmberServer` extend
    "LLMServer": (f"{_SERVE_LLM}.deployment", "LLMServer"),
    # public: the OpenAI ingress Ember's routes extend (not re-implement)
    "OpenAiIngress": (f"{_SERVE_LLM}.ingress", "OpenAiIngress"),
    # private: the /v1/models wire types; Ember adds `rag:*` and embedder cards to the list
    "ModelCard": (_MODELS, "ModelCard"),
    "ModelList": (_MODELS, "ModelList"),
    # private: what Ray's ingress raises for an OpenAI error; Ember re-shapes it
    "OpenAIHTTPException": (_MODELS, "OpenAIHTTPException"),
    # private: the model card Ray's own app builder makes; Ember builds the ingress itself
    "to_model_metadata": (_MODELS, "to_model_metadata"),
    # private: Ray's route for each OpenAiIngress method; Ember binds them on its own app
    "DEFAULT_ENDPOINTS": (_INGRESS, "DEFAULT_ENDPOINTS"),
    # private: Ray Data LLM's engine stage; `NiceEngineUDF` starts it at a lower priority
    "vLLMEngineStageUDF": ("ray.llm._internal.batch.stages.vllm_engine_stage",
                           "vLLMEngineStageUDF"),
}

# Private members of the classes above that Ember overrides or reads (checked by the test).
OPENAI_INGRESS_PRIVATE_MEMBERS = (
    "_get_model_id",  # overridden: an unknown model as an OpenAI 404 listing the models
    "_process_llm_request",  # overridden: errors as OpenAI error objects
    "_model_cards",  # read through `ingress_model_cards()`
)
LLM_SERVER_PRIVATE_MEMBERS = (
    "__serve_build_asgi_app__",  # overridden: the replica serves Ember's app (engine_replica)
    "_run_request",  # called through `run_request()`
    "_llm_config",  # read through `served_model_id()`
    "engine",  # read through `engine_client()`/`build_engine_asgi_app()`
)
ACTOR_HANDLE_PRIVATE_MEMBERS = (
    "_actor_id",  # read through `actor_id()`
)
# Ray's vLLM engine imports vLLM's Ray stat logger by name when it starts an engine, so
# `ember.serving.engine_metrics.install()` can put its lean subclass there first; the
# test checks Ray's engine start still says so.
ENGINE_STAT_LOGGER_IMPORT = "from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger"
VLLM_ENGINE_PRIVATE_MEMBERS = (
    "_engine_client",  # read through `engine_client()`
    "build_asgi_app",  # called through `build_engine_asgi_app()`
)


def __getattr__(name: str) -> Any:
    if name not in REEXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = REEXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *REEXPORTS})


def build_openai_fastapi_app():
    """A FastAPI app with Ray's ingress middleware (errors, CORS, metrics, request ids)."""
    # Ray's `init` is the only way to get that stack without Ray's routes bound to it
    return importlib.import_module(_INGRESS).init()


def ingress_model_cards(ingress) -> dict:
    """The model cards (by model id) an OpenAiIngress routes by."""
    # Ray keeps them only in `_model_cards`; its async `models()` also lists LoRA adapters
    return ingress._model_cards


def served_model_id(server) -> str:
    """The model id an LLMServer replica serves."""
    # Ray's `llm_config()` is an async handle method; the attribute is the same config
    return server._llm_config.model_id


def engine_client(server):
    """vLLM's EngineClient inside an LLMServer replica (unfinished-request count)."""
    # Ray exposes no getter for the vLLM client its engine wraps
    return server.engine._engine_client


async def build_engine_asgi_app(server):
    """vLLM's own OpenAI server app on an LLMServer replica's engine."""
    # what Ray's own `__serve_build_asgi_app__` serves; Ember wraps it in its gate and routes
    return await server.engine.build_asgi_app()


async def run_request(server, body, engine_method: str, raw_request_info=None):
    """An LLMServer's response stream for `body`, unbatched, for an in-process call."""
    # the public `chat`/`completions` batch the stream for a Ray hop, which this call skips
    return await server._run_request(body, engine_method=engine_method,
                                     batch_output_stream=False,
                                     raw_request_info=raw_request_info)


def actor_id(handle) -> str:
    """The actor's id, to tell a replaced actor from the one a handle pointed at."""
    # Ray's handles carry it as `_actor_id`; there is no public accessor
    return handle._actor_id.hex()


def swap_vllm_engine_stage(processor, udf_cls) -> None:
    """Run `udf_cls` (a `vLLMEngineStageUDF` subclass) as a Ray Data LLM processor's engine."""
    # `build_processor` takes no UDF class; the stage's `fn` is the only place to put one
    for name in processor.list_stage_names():
        stage = processor.get_stage_by_name(name)
        if stage.fn.__name__ == "vLLMEngineStageUDF":
            # not `stage.fn = ...`: assignment re-runs the stage's validator, which
            # recomputes its resources without the placement group (and asks for a GPU)
            object.__setattr__(stage, "fn", udf_cls)


def local_gcs_addresses() -> list[str]:
    """Addresses of the Ray clusters (GCS processes) running on this machine."""
    # Ray's own `address="auto"` discovery; it has no public form
    from ray._private.services import find_gcs_addresses

    return list(find_gcs_addresses())


def session_dir() -> str:
    """The connected Ray node's session folder (Prometheus' service discovery file)."""
    # only the caller of `ray.init` gets the node's context; the worker holds it for everyone
    from ray._private.worker import global_worker

    return global_worker.node.get_session_dir_path()


def dashboard_url() -> str:
    """The connected Ray cluster's dashboard, as http://host:port."""
    # same reason as `session_dir`
    from ray._private.worker import global_worker

    return f"http://{global_worker.node.address_info['webui_url']}"
