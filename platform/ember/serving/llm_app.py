"""Build the OpenAI-compatible Serve application from Ember's typed config.

Ember's `LLMAppConfig` -> one `ray.serve.llm.LLMConfig` per model ->
the first model's engine deployment as the app's ingress, serving Ember's
routes (`build_ingress_app`). Model sources are resolved
here (catalogue names are prepared on first use), so a bad model reference
fails at deploy time with a message, not inside a replica's traceback.
"""

from __future__ import annotations

from typing import Any

from ember.deployment_names import LLM_DEPLOYMENT_PREFIX
from ember.serving.config import LLMAppConfig, ModelDeploymentConfig


def build_llm_config(model: ModelDeploymentConfig, resolve: bool = True):
    from ray.serve.llm import LLMConfig

    from ember.models.catalogue import resolve_model

    source = resolve_model(model.source) if resolve else model.source
    return LLMConfig(
        model_loading_config={"model_id": model.name, "model_source": source},
        engine_kwargs=model.engine_kwargs(),
        accelerator_type=model.accelerator_type,
        placement_group_config=_placement(model),
        deployment_config=_deployment_options(model),
        runtime_env={"env_vars": _env_vars(model)},
        experimental_configs=_experimental(model),
    )


def _placement(model: ModelDeploymentConfig) -> dict[str, Any] | None:
    """Bundles from the config; on CPU one bundle per engine worker by default.

    With no accelerator Ray's defaults ask for GPUs, so CPU models need
    explicit CPU bundles (docs/architecture.md, "The stack underneath").
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
    options = {"autoscaling_config": scaling, "max_ongoing_requests": model.max_ongoing_requests}
    if model.max_queued_requests is not None:
        options["max_queued_requests"] = model.max_queued_requests
    return options


def _env_vars(model: ModelDeploymentConfig) -> dict[str, str]:
    env = {"HF_HUB_OFFLINE": "1"} if model.accelerator_type is None else {}
    if model.lora is not None:  # vLLM loads an adapter it is asked for (serving.adapters)
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "1"
    return {**env, **model.env}


def _experimental(model: ModelDeploymentConfig) -> dict[str, Any]:
    if model.stream_batching_interval_ms is None:
        return {}
    return {"stream_batching_interval_ms": model.stream_batching_interval_ms}


def build_serving_args(config: LLMAppConfig, resolve: bool = True) -> dict[str, Any]:
    """The models as Ray's `LLMServingArgs` (validated against Ray's own schema)."""
    return {"llm_configs": [build_llm_config(m, resolve) for m in config.models]}


def build_llm_app(config: LLMAppConfig):
    return build_ingress_app(config, "ember.serving.openai_routes:OpenAIRoutes",
                             "ember.serving.openai_routes:ROUTES")


def batch_models(config: LLMAppConfig, llm_configs: list) -> dict:
    """What a batch job needs of each served model: its folder and engine settings."""
    return {m.name: {"source": c.model_loading_config.model_source,
                     "engine": m.engine.to_engine_kwargs()}
            for m, c in zip(config.models, llm_configs, strict=True)}


def build_ingress_app(config: LLMAppConfig, routes_cls: str, route_map: str,
                      **routes_kwargs):
    """The first model's engine deployment as the app's ingress (`engine_replica`).

    Its replicas answer HTTP themselves: Ember's routes and the access gate run
    in each of them, its own model's tokens go straight from vLLM's server code
    to the Serve proxy. Other models are plain `LLMServer` deployments reached
    through Serve handles. Deployment names stay `LLMServer:<model>`
    (`LLM_DEPLOYMENT_PREFIX`: the cost sampler and `ember status` read them).
    """
    from ray import serve
    from ray.serve.llm import build_llm_deployment

    from ember.ray_internals import to_model_metadata
    from ember.serving.engine_replica import EmberServer, EngineServer

    first, *others = [build_llm_config(m) for m in config.models]
    niceness = {m.name: m.cpu_worker_niceness for m in config.models}
    routes_kwargs = {
        "access": config.access.model_dump(),
        "batch": {"settings": config.batch.model_dump(),
                  "models": batch_models(config, [first, *others])},
        "prices": {m.name: m.usd_per_hour for m in config.models if m.usd_per_hour is not None},
        "lora_paths": {}, "lora_bases": [m.name for m in config.models if m.lora is not None],
        "hot_path_model": first.model_id, "aliases": config.model_aliases(),
        **routes_kwargs}
    name_prefix = f"{LLM_DEPLOYMENT_PREFIX}:"
    return build_llm_deployment(
        first, name_prefix=name_prefix, deployment_cls=serve.ingress()(EmberServer),
        bind_kwargs={
            "routes_cls": routes_cls, "route_map": route_map,
            "other_models": {c.model_id: build_llm_deployment(
                c, name_prefix=name_prefix, deployment_cls=EngineServer,
                bind_kwargs={"cpu_worker_niceness": niceness[c.model_id]}) for c in others},
            "model_cards": {c.model_id: to_model_metadata(c.model_id, c)
                            for c in [first, *others]},
            "routes_kwargs": routes_kwargs,
            "cpu_worker_niceness": niceness[first.model_id]})
