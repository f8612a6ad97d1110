"""`ember up|status|down`: the local cluster and its Serve deployment."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ember.cluster.environment import DEFAULT_INGRESS, INGRESS_ENV

DASHBOARD = "http://127.0.0.1:8265"


def register(commands) -> None:
    up = commands.add_parser("up", help="start a local Ray cluster and deploy the service")
    up.add_argument("--config", type=Path, help="Serve config (default cluster/serve/local.yaml)")
    up.add_argument("--port", type=int, help="HTTP port of the service (overrides the config)")
    up.add_argument(
        "--num-cpus",
        type=int,
        help="logical CPUs of the head (default: sized from the config, at least 8)",
    )
    up.add_argument("--timeout", type=float, default=1200, help="seconds to wait for healthy")
    up.add_argument("--ingress", choices=sorted(INGRESS_ENV), default=DEFAULT_INGRESS,
                    help="how HTTP reaches the engine replicas: 'haproxy' (Serve's HAProxy "
                         "ingress, straight to each replica's HTTP server) or 'proxy' "
                         "(Serve's Python proxy); docs/architecture.md, 'Serving hot path'. "
                         f"Default {DEFAULT_INGRESS}")
    up.set_defaults(func=run_up)
    status = commands.add_parser("status", help="the cluster, applications and models")
    status.set_defaults(func=run_status)
    down = commands.add_parser("down", help="remove the service and stop the local cluster")
    down.set_defaults(func=run_down)


def run_up(args) -> int:
    from ember.cluster import local
    from ember.cluster.serve_status import wait_until_running
    from ember.cluster.serve_yaml import (
        app_names,
        cpus_needed,
        default_serve_config,
        http_endpoint,
        load_serve_config,
    )

    start = time.monotonic()
    config_path = args.config or default_serve_config()
    config = load_serve_config(config_path)
    if args.port:
        config.setdefault("http_options", {})["port"] = args.port
        config_path = _write_effective_config(config)
    host, port = http_endpoint(config)
    address = local.running_cluster()
    if address:
        print(
            f"a Ray cluster is already running at {address}; deploying onto it "
            f"(`ember down` stops it, or `ray stop` if you started it yourself)"
        )
    else:
        local.check_ports_free({"Serve HTTP": (host, port), **local.ingress_ports(args.ingress)})
        num_cpus = args.num_cpus or max(8, cpus_needed(config) + 2)
        local.start_head(num_cpus, args.ingress)
    _ensure_keys(config)
    print(f"deploying {config_path} ...")
    local.serve_deploy(config_path, DASHBOARD)
    wait_until_running(DASHBOARD, app_names(config), timeout_s=args.timeout)
    _print_ready(host, port, time.monotonic() - start)
    return 0


def _ensure_keys(config: dict) -> None:
    """Apps with auth on need the keys database: make it and the local admin key once."""
    from ember.access.admin import ensure_admin_key
    from ember.access.config import AccessConfig

    for app in config.get("applications") or []:
        access = AccessConfig(**((app.get("args") or {}).get("access") or {}))
        if access.auth:
            ensure_admin_key(access.url())
        else:
            print(f"application {app.get('name')}: API keys are OFF (access.auth: false); "
                  f"anyone who reaches the port can use it")


def _write_effective_config(config: dict) -> Path:
    import yaml

    from ember.config.paths import cluster_state_dir

    path = cluster_state_dir() / "serve-effective.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _print_ready(host: str, port: int, seconds: float) -> None:
    from ember.client import Client

    url = f"http://{host}:{port}"
    models = [m.id for m in Client(url).models()]
    print(f"\nEmber is up after {seconds:.0f}s.")
    print(f"  OpenAI endpoint: {url}/v1   models: {', '.join(models)}")
    print(f"  Ray dashboard:   {DASHBOARD}")
    print('  try:             ember chat "What is the capital of France?"')


def run_status(args) -> int:
    from ember.cluster import local
    from ember.cluster.serve_status import app_summary, serve_details

    address = local.running_cluster()
    if not address:
        print("no Ray cluster is running on this machine (`ember up` starts one)")
        return 1
    ingress = local.started_ingress()
    print(f"Ray cluster: {address}   dashboard: {DASHBOARD}"
          + (f"   ingress: {ingress}" if ingress else ""))
    details = serve_details(DASHBOARD)
    summary = app_summary(details)
    if not summary:
        print("no Serve applications deployed")
    for name, app in summary.items():
        print(f"application {name}: {app['status']} {app['message']}".rstrip())
        for deployment, state in app["deployments"].items():
            print(f"  {deployment}: {state}")
    _print_services()
    _print_adapters()
    if summary:
        _print_health(details.get("http_options") or {})
    return 0


def _print_adapters() -> None:
    """The registered LoRA adapters, and why any failed to load."""
    from ember.models.adapters import list_adapters

    adapters = list_adapters()
    if adapters:
        failed = [a for a in adapters if a.load_error]
        print(f"LoRA adapters: {len(adapters)} registered"
              + (f", {len(failed)} failed to load" if failed else ""))
        for adapter in failed:
            print(f"  {adapter.name} on {adapter.base}: LOAD FAILED: {adapter.load_error}")
    from ember.models.rollouts import list_rollouts

    for rollout in list_rollouts():  # served names with versions (ember models rollouts)
        print(f"  rollout {rollout.describe()}")


def _print_services() -> None:
    """Ember's service actors: their state, and that they live outside any replica."""
    from ember.service_actors import service_actors

    actors = [a for a in service_actors(DASHBOARD) if a["state"] != "DEAD"]
    print("Ember services:" if actors else "Ember services: none started yet")
    for actor in actors:
        where = ("outside placement groups" if not actor["placement_group_id"]
                 else f"IN placement group {actor['placement_group_id'][:8]}")
        print(f"  {actor['name']}: {actor['state']} (pid {actor['pid']}, {where})")


def _print_health(http: dict) -> None:
    """The service's own /health: ok, or degraded with the reasons."""
    import httpx

    host = http.get("host") or "127.0.0.1"
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{http.get('port', 8000)}"
    try:
        health = httpx.get(f"{url}/health", timeout=15).json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"service health: no answer from {url}/health ({exc})")
        return
    print(f"service health: {health.get('status')}")
    for reason in health.get("reasons") or [health.get("error")] * ("error" in health):
        print(f"  - {reason}")


def run_down(args) -> int:
    from ember.cluster import local

    if not local.running_cluster():
        print("no Ray cluster is running; nothing to stop")
        return 0
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    local.serve_shutdown(DASHBOARD)
    print("Serve applications removed")
    local.stop_cluster()
    print("Ray cluster stopped")
    return 0
