"""Serve YAML files (cluster/serve/*.yaml): load, validate, size the cluster.

A Serve config is validated twice: against Ray's own `ServeDeploySchema`
(what `serve deploy` accepts) and, for Ember's applications, their `args`
against Ember's `LLMAppConfig`, so a typo fails here with the key named
instead of inside the Serve controller minutes later.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ember.config.loading import ConfigError, describe_errors, load_yaml, validate
from ember.serving.config import LLMAppConfig
from ember.serving.rag_config import RAGAppConfig

LLM_IMPORT_PATH = "serve_apps.llm:build_app"
RAG_IMPORT_PATH = "serve_apps.rag:build_app"
APP_ARG_SCHEMAS = {LLM_IMPORT_PATH: LLMAppConfig, RAG_IMPORT_PATH: RAGAppConfig}


def repo_cluster_dir() -> Path:
    """`cluster/` of the source checkout Ember runs from."""
    return Path(__file__).resolve().parents[3] / "cluster"


def default_serve_config() -> Path:
    return repo_cluster_dir() / "serve" / "local.yaml"


def load_serve_config(path: str | Path) -> dict[str, Any]:
    """Load and validate a Serve config; return it as a plain dict."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    data = load_yaml(path)
    try:
        ServeDeploySchema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: not a valid Serve config: {describe_errors(exc)}") from exc
    for app in data.get("applications", []):
        validate_app_args(app, source=str(path))
    return data


def validate_app_args(app: dict[str, Any], source: str) -> None:
    """Check an application's `args` against Ember's schema for its import path."""
    schema = APP_ARG_SCHEMAS.get(app.get("import_path"))
    if schema is not None:
        validate(schema, app.get("args") or {}, source=f"{source}: app '{app.get('name')}' args")


def http_endpoint(config: dict[str, Any]) -> tuple[str, int]:
    options = config.get("http_options") or {}
    return options.get("host", "127.0.0.1"), int(options.get("port", 8000))


def app_names(config: dict[str, Any]) -> list[str]:
    return [app["name"] for app in config.get("applications", [])]


def cpus_needed(config: dict[str, Any]) -> int:
    """Logical CPUs the Serve apps need at their maximum scale.

    Logical CPUs are Ray's scheduling budget, not cores (docs/architecture.md): a head
    started with too few leaves replicas unscheduled. Each LLM replica takes
    its placement bundles plus its own actor (which also serves HTTP); a
    RAG app also its embeddings deployment.
    """
    total = 0.0
    for app in config.get("applications", []):
        schema = APP_ARG_SCHEMAS.get(app.get("import_path"))
        if schema is None:
            continue
        llm = schema.model_validate(app.get("args") or {})
        if isinstance(llm, RAGAppConfig):
            total += llm.rag.embedder_num_cpus
        for model in llm.models:
            bundles = model.placement.bundles or [{"CPU": 1}] * (
                model.engine.tensor_parallel_size * model.engine.pipeline_parallel_size
            )
            per_replica = sum(b.get("CPU", 0) for b in bundles) + 1
            total += per_replica * model.autoscaling.max_replicas
    return math.ceil(total)
