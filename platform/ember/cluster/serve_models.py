"""Adding a fine-tuned model to the running service (`ember serve-model`).

The service's applications are read back from Serve (`get_serve_details`), the
app's `args.models` gains one entry (the first model's engine, autoscaling and
resources, with the new name and folder; it starts on one replica), and the
whole config is applied again with `deploy_applications`, exactly what
`serve deploy` does. The new model then sits in `/v1/models`, answers chat
completions, and answers RAG requests as `rag@NAME` / `rag:COLLECTION@NAME`.

Serve derives an app's code version from its args, so the app's deployments are
replaced by a rolling update: with one replica per deployment, as on the local
CPU cluster, requests wait while the engines restart (about two minutes here).

A LoRA adapter (a PEFT folder, what LoRA/QLoRA jobs export by default) is not
deployed at all: it is registered for a served model that has `lora:` on
(`ember.models.adapters`), and that model's replicas load it on its first
request. Nothing restarts; it answers within seconds.

MLflow URIs (`models:/NAME/VERSION`, `runs:/ID/model`) are downloaded into
`$EMBER_HOME/models/served/NAME` (`ember.models.fetch`); on a multi-node cluster
EMBER_HOME must be on storage every node sees (as for the training job's outputs).
"""

from __future__ import annotations

import copy
from pathlib import Path

from ember.errors import ClusterError
from ember.models.adapters import check_adapter_folder, is_adapter_folder, register_adapter
from ember.models.fetch import fetch_model
from ember.serving.config import LoraServingConfig

# What a new model inherits from the app's first model: it runs on the same kind of replica.
INHERITED_KEYS = ("engine", "autoscaling", "placement", "accelerator_type",
                  "max_ongoing_requests", "env", "stream_batching_interval_ms",
                  "cpu_worker_niceness")


def with_extra_model(app: dict, name: str, folder: str | Path) -> dict:
    """A copy of one application config whose `args.models` also serves `folder` as `name`."""
    app = copy.deepcopy(app)
    models = (app.get("args") or {}).get("models") or []
    if not models:
        raise ClusterError(f"application '{app.get('name')}' lists no models in its args")
    taken = [m.get("name") for m in models]
    if name in taken:
        raise ClusterError(f"a model named '{name}' is already served by "
                           f"'{app.get('name')}' (models: {taken}); pick another --name")
    entry = {k: copy.deepcopy(models[0][k]) for k in INHERITED_KEYS if k in models[0]}
    if "autoscaling" in entry:
        # A new model starts on one replica and scales up to the first model's maximum
        # under load: cloning a floor of several replicas can ask for more than the
        # cluster has left, and the rolling update would wait for it forever.
        entry["autoscaling"].update(min_replicas=1)
        entry["autoscaling"].pop("initial_replicas", None)
    models.append({"name": name, "source": str(folder), **entry})
    return app


def deploy_config(details: dict, app_name: str, name: str, folder: Path) -> dict:
    """The full Serve config to apply: every app as deployed, one of them extended."""
    apps = details.get("applications") or {}
    if app_name not in apps:
        raise ClusterError(f"no Serve application '{app_name}' is running "
                           f"(running: {sorted(apps)}); start it with `ember up`")
    configs = []
    for app, info in apps.items():
        deployed = info.get("deployed_app_config")
        if deployed is None:
            raise ClusterError(f"application '{app}' was deployed from Python (serve.run), "
                               f"so Serve has no config to extend; add the model to its "
                               f"Serve config instead")
        configs.append(with_extra_model(deployed, name, folder) if app == app_name
                       else deployed)
    http = {k: v for k, v in (details.get("http_options") or {}).items() if v is not None}
    return {"proxy_location": details.get("proxy_location") or "HeadOnly",
            "http_options": http, "applications": configs}


def add_model(dashboard_url: str, source: str, name: str, app_name: str = "ember",
              tracking_uri: str | None = None, progress=print, base: str | None = None) -> Path:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from ember.cluster.serve_status import serve_details
    from ember.cluster.serve_yaml import validate_app_args

    folder = fetch_model(source, name, tracking_uri, adapters=True)
    progress(f"model {source} -> {folder}")
    details = serve_details(dashboard_url)
    if is_adapter_folder(folder):
        return add_adapter(details, folder, name, app_name, base, progress, source)
    config = deploy_config(details, app_name, name, folder)
    for app in config["applications"]:
        validate_app_args(app, source="serve-model")
    progress(f"redeploying '{app_name}' with model '{name}' (a rolling update)")
    ServeSubmissionClient(dashboard_url).deploy_applications(config)
    host, port = config["http_options"].get("host", "127.0.0.1"), \
        config["http_options"].get("port", 8000)
    wait_for_model(f"http://{_reachable(host)}:{port}", name, dashboard_url, app_name, progress)
    return folder


def add_adapter(details: dict, folder: Path, name: str, app_name: str,
                base: str | None = None, progress=print, source: str | None = None) -> Path:
    """Register a LoRA adapter for one of the app's models with `lora:` on."""
    models = _app_models(details, app_name)
    if name in {m.get("name") for m in models}:
        raise ClusterError(f"'{name}' is a served model's name; pick another --name")
    rank = check_adapter_folder(folder)  # first: the base is found from its config
    model = _adapter_base(models, folder, base, app_name)
    limit = LoraServingConfig(**model["lora"]).max_lora_rank
    if rank > limit:
        raise ClusterError(f"the adapter's rank is {rank}, above '{model['name']}'s "
                           f"lora.max_lora_rank ({limit}); raise it in the Serve config or "
                           f"train with method.lora.r <= {limit}")
    adapter = register_adapter(folder, name, model["name"], source)
    progress(f"adapter '{name}' (rank {rank}) registered on '{model['name']}': its replicas "
             f"load it on its first request, nothing restarts")
    return adapter.path


def _app_models(details: dict, app_name: str) -> list[dict]:
    app = (details.get("applications") or {}).get(app_name)
    if app is None:
        raise ClusterError(f"no Serve application '{app_name}' is running; start it with "
                           f"`ember up`")
    return ((app.get("deployed_app_config") or {}).get("args") or {}).get("models") or []


def _adapter_base(models: list[dict], folder: Path, base: str | None, app_name: str) -> dict:
    """The served model the adapter runs on: --base, else the one it was trained on."""
    import json

    with_lora = [m for m in models if m.get("lora") is not None]
    names = [m.get("name") for m in with_lora]
    if not with_lora:
        raise ClusterError(f"no model of '{app_name}' serves LoRA adapters: add `lora: {{}}` "
                           f"to the base model's entry in the Serve config (docs/fine-tuning.md)")
    if base is not None:
        for model in with_lora:
            if model.get("name") == base:
                return model
        raise ClusterError(f"--base '{base}' is not a served model with `lora:` on "
                           f"(those are: {names})")
    trained_on = json.loads((folder / "adapter_config.json").read_text()).get(
        "base_model_name_or_path")
    for model in with_lora:
        if trained_on and _folder_of(model) == str(trained_on):
            return model
    if len(with_lora) == 1:
        return with_lora[0]
    raise ClusterError(f"the adapter was trained on '{trained_on}', which no served model "
                       f"loads; name its base with --base (one of {names})")


def _folder_of(model: dict) -> str:
    """The folder a served model's engine loads (its source as written if unresolvable)."""
    from ember.errors import EmberError
    from ember.models.catalogue import resolve_model

    source = model.get("source", model["name"])
    try:
        return str(resolve_model(source))
    except EmberError:
        return str(source)


def wait_for_model(base_url: str, name: str, dashboard_url: str, app_name: str,
                   progress=print, timeout_s: float = 1200) -> None:
    """Until `name` is in /v1/models and the app is RUNNING, showing Serve's progress."""
    import time

    import httpx

    from ember.cluster.serve_status import app_summary, serve_details

    start, last = time.monotonic(), None
    while time.monotonic() - start < timeout_s:
        state = app_summary(serve_details(dashboard_url)).get(app_name, {})
        line = f"{app_name}: {state.get('status')} {state.get('deployments', {})}"
        if line != last:
            progress(f"  [{time.monotonic() - start:5.0f}s] {line}")
            last = line
        if state.get("status") == "DEPLOY_FAILED":
            raise ClusterError(f"redeploying '{app_name}' failed:\n{state.get('message')}")
        if state.get("status") == "RUNNING" and name in _listed_models(httpx, base_url):
            return
        time.sleep(3)
    raise ClusterError(f"model '{name}' not served after {timeout_s:.0f}s; see `ember status`")


def _listed_models(httpx, base_url: str) -> list[str]:
    try:
        from ember.client.types import auth_headers

        response = httpx.get(f"{base_url}/v1/models", timeout=10, headers=auth_headers(None))
        return [m["id"] for m in response.json().get("data", [])]
    except (httpx.HTTPError, ValueError):
        return []


def _reachable(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host
