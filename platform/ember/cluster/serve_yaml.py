"""Serve YAML files for `ember up` (cluster/serve/*.yaml): find, load, validate, size.

A Serve config is validated twice: against Ray's own `ServeDeploySchema`
(what `serve deploy` accepts) and, for Ember's applications, their `args`
against Ember's `LLMAppConfig`, so a typo fails here with the key named
instead of inside the Serve controller minutes later. (The `args` schema
itself is `ember.serving.config`; this module reads files.)

The cluster files are found through `EMBER_CLUSTER_DIR` when it is set, else in
the source checkout Ember runs from (`platform/ember/...` beside `cluster/`);
an installed Ember without either asks for `--config` or the variable, instead
of guessing a path inside site-packages.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ember.config.loading import ConfigError, describe_errors, load_yaml, validate
from ember.serving.config import LLMAppConfig
from ember.serving.rag.config import RAGAppConfig

LLM_IMPORT_PATH = "serve_apps.llm:build_app"
RAG_IMPORT_PATH = "serve_apps.rag:build_app"
APP_ARG_SCHEMAS = {LLM_IMPORT_PATH: LLMAppConfig, RAG_IMPORT_PATH: RAGAppConfig}


CLUSTER_DIR_VARIABLE = "EMBER_CLUSTER_DIR"
DEFAULT_SERVE_CONFIG = Path("serve") / "local.yaml"


def checkout_cluster_dir() -> Path:
    """`cluster/` beside `platform/` in the source checkout this Ember runs from."""
    import ember

    return Path(ember.__file__).resolve().parent.parent.parent / "cluster"


def cluster_dir() -> Path:
    """The folder of Ember's cluster files: EMBER_CLUSTER_DIR, else the checkout's."""
    configured = os.environ.get(CLUSTER_DIR_VARIABLE)
    if configured:
        folder = Path(configured).expanduser()
        if not (folder / DEFAULT_SERVE_CONFIG).is_file():
            raise ConfigError(f"{CLUSTER_DIR_VARIABLE}={configured}: no "
                              f"{DEFAULT_SERVE_CONFIG} in it; point it at a copy of Ember's "
                              f"cluster/ folder")
        return folder
    checkout = checkout_cluster_dir()
    if (checkout / DEFAULT_SERVE_CONFIG).is_file():
        return checkout
    raise ConfigError(f"Ember's cluster files are not beside this installation (no "
                      f"{checkout / DEFAULT_SERVE_CONFIG}): pass a Serve config with "
                      f"`ember up --config FILE`, or set {CLUSTER_DIR_VARIABLE} to a copy of "
                      f"the repository's cluster/ folder")


def default_serve_config() -> Path:
    return cluster_dir() / DEFAULT_SERVE_CONFIG


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
