"""Build the OpenAI-compatible Serve application from Ember's typed config.

Ember's `LLMAppConfig` -> one `ray.serve.llm.LLMConfig` per model ->
`build_openai_app` with Ember's ingress subclass. Model sources are resolved
here (catalogue names are prepared on first use), so a bad model reference
fails at deploy time with a message, not inside a replica's traceback.
"""

from __future__ import annotations

from typing import Any

from ember.serving.config import IngressConfig, LLMAppConfig, ModelDeploymentConfig

INGRESS_CLS = "ember.serving.ingress:EmberIngress"


def build_llm_config(model: ModelDeploymentConfig, resolve: bool = True):
    from ray.serve.llm import LLMConfig

    from ember.models.catalogue import resolve_model

    source = resolve_model(model.source) if resolve else model.source
    return LLMConfig(
        model_loading_config={"model_id": model.name, "model_source": source},
        engine_kwargs=model.engine.to_engine_kwargs(),
        accelerator_type=model.accelerator_type,
        placement_group_config=_placement(model),
        deployment_config=_deployment_options(model),
        runtime_env={"env_vars": _env_vars(model)},
        experimental_configs=_experimental(model),
    )


def _placement(model: ModelDeploymentConfig) -> dict[str, Any] | None:
    """Bundles from the config; on CPU one bundle per engine worker by default.

    With no accelerator Ray's defaults ask for GPUs, so CPU models need
    explicit CPU bundles (STACK.md).
    """
    bundles = model.placement.bundles
    if bundles is None and model.accelerator_type is None:
        workers = model.engine.tensor_parallel_size * model.engine.pipeline_parallel_size
        bundles = [{"CPU": 1}] * workers
    if bundles is None:
        return None
    return {"bundles": bundles, "strategy": model.placement.strategy}


def _deployment_options(model: ModelDeploymentConfig) -> dict[str, Any]:
    scaling = model.autoscaling.model_dump(exclude_none=True)
    return {"autoscaling_config": scaling, "max_ongoing_requests": model.max_ongoing_requests}


def _env_vars(model: ModelDeploymentConfig) -> dict[str, str]:
    env = {"HF_HUB_OFFLINE": "1"} if model.accelerator_type is None else {}
    return {**env, **model.env}


def _experimental(model: ModelDeploymentConfig) -> dict[str, Any]:
    if model.stream_batching_interval_ms is None:
        return {}
    return {"stream_batching_interval_ms": model.stream_batching_interval_ms}


def build_serving_args(config: LLMAppConfig, resolve: bool = True) -> dict[str, Any]:
    """The `LLMServingArgs` for `build_openai_app`, with Ember's ingress."""
    return {
        "llm_configs": [build_llm_config(m, resolve) for m in config.models],
        "ingress_cls_config": {"ingress_cls": INGRESS_CLS},
        "ingress_deployment_config": ingress_options(config.ingress),
    }


def ingress_options(ingress: IngressConfig) -> dict[str, Any]:
    """Serve deployment options of the ingress."""
    return {
        "max_ongoing_requests": ingress.max_ongoing_requests,
        "autoscaling_config": {"min_replicas": ingress.min_replicas,
                               "max_replicas": ingress.max_replicas},
        "ray_actor_options": {"num_cpus": ingress.num_cpus},
    }


def build_llm_app(config: LLMAppConfig):
    from ray.llm._internal.serve.core.ingress.ingress import DEFAULT_ENDPOINTS

    from ember.serving.ingress import EmberIngress

    return build_ingress_app(config, EmberIngress, DEFAULT_ENDPOINTS, "OpenAiIngress")


def build_ingress_app(config: LLMAppConfig, ingress_cls, endpoint_map: dict, name: str,
                      **ingress_kwargs):
    """LLM deployments behind an Ember ingress whose FastAPI app has the access gate.

    Ray's `build_openai_app` makes its own FastAPI app, with no way to add a
    middleware; these few lines of its wiring are repeated with Ember's app
    (Ray's app factory + `AccessMiddleware`) passed to `make_fastapi_ingress`.
    """
    from ray import serve
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
    from ray.llm._internal.serve.core.ingress.ingress import init, make_fastapi_ingress
    from ray.serve.llm import build_llm_deployment

    from ember.access.gate import AccessMiddleware

    llm_configs = [build_llm_config(m) for m in config.models]
    app = init()
    app.add_middleware(AccessMiddleware)  # outermost: runs before Ray's own middleware
    ingress = make_fastapi_ingress(ingress_cls, endpoint_map=endpoint_map, app=app)
    return serve.deployment(ingress, name=name, **ingress_options(config.ingress)).bind(
        llm_deployments={c.model_id: build_llm_deployment(c) for c in llm_configs},
        model_cards={c.model_id: to_model_metadata(c.model_id, c) for c in llm_configs},
        lora_paths={}, access=config.access.model_dump(),
        prices={m.name: m.usd_per_hour for m in config.models if m.usd_per_hour is not None},
        **ingress_kwargs)
