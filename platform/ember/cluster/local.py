"""Start, inspect and stop the local Ray cluster behind `ember up|status|down`.

Design choices:
- Plain Ray underneath: `ray start --head`, `serve deploy FILE`, `ray stop`
  run as subprocesses from this virtualenv, so what `ember up` does is what
  docs/deployment.md's plain-Ray commands do, and the dashboard / `serve status` /
  `ray job submit` see an ordinary cluster.
- Ray 2.60 turns token auth on for a new head; Ember's commands run with
  RAY_AUTH_MODE=token so its own clients send the token (docs/deployment.md). Only
  `ray.init()` creates a missing token, not `ray start --head`, so `ember up`
  creates it first the documented way (`ray get-auth-token --generate`).
- Every refusal (port taken, cluster already there, deploy failed) says what
  happened and what to do.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from ember.cluster.environment import CLIENT_ENV, DEFAULT_INGRESS, node_env
from ember.config.paths import cluster_state_dir
from ember.errors import ClusterError

DASHBOARD_PORT = 8265
GCS_PORT = 6379


def client_env() -> dict[str, str]:
    """This process's environment plus what Ray clients here need."""
    env = {**os.environ}
    for key, value in CLIENT_ENV.items():
        env.setdefault(key, value)
    return env


def ray_bin(name: str) -> str:
    """`ray` / `serve` next to this Python, so the venv's Ray runs them."""
    return str(Path(sys.executable).parent / name)


def running_cluster() -> str | None:
    """Address of a Ray cluster running on this machine, if any."""
    from ember.ray_internals import local_gcs_addresses

    addresses = sorted(local_gcs_addresses())
    return addresses[0] if addresses else None


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports_free(ports: dict[str, tuple[str, int]]) -> None:
    taken = [
        f"{what} port {port} on {host}"
        for what, (host, port) in ports.items()
        if port_in_use(host, port)
    ]
    if taken:
        raise ClusterError(
            f"{', '.join(taken)} already in use by another program. Stop that program "
            f"(`ss -ltnp | grep PORT` shows which), or choose other ports "
            f"(`ember up --port N` for the HTTP endpoint)."
        )


def ingress_ports(ingress: str) -> dict[str, tuple[str, int]]:
    """The fixed ports Serve's HAProxy ingress takes besides the HTTP one (Ray's defaults,
    or the RAY_SERVE_* settings that move them)."""
    if ingress != "haproxy":
        return {}
    ports = {"HAProxy stats": ("RAY_SERVE_HAPROXY_STATS_PORT", 8404),
             "HAProxy metrics": ("RAY_SERVE_HAPROXY_METRICS_PORT", 9101),
             "Serve's fallback proxy": ("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", 8500)}
    return {what: ("0.0.0.0", int(os.environ.get(name, default)))
            for what, (name, default) in ports.items()}


def start_head(num_cpus: int, ingress: str = DEFAULT_INGRESS, progress=print) -> None:
    check_ports_free(
        {"Ray GCS": ("0.0.0.0", GCS_PORT), "Ray dashboard": ("127.0.0.1", DASHBOARD_PORT)}
    )
    ensure_auth_token(progress)
    progress(f"starting a local Ray head with {num_cpus} logical CPUs ({ingress} ingress) ...")
    cmd = [
        ray_bin("ray"),
        "start",
        "--head",
        f"--num-cpus={num_cpus}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={DASHBOARD_PORT}",
        "--disable-usage-stats",
    ]
    result = subprocess.run(cmd, env={**node_env(ingress), **client_env()}, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise ClusterError(f"`ray start --head` failed:\n{result.stdout}{result.stderr}")
    _write_state({"started_by_ember": True, "num_cpus": num_cpus, "ingress": ingress,
                  "started_at": time.time()})


def auth_token_source() -> str | None:
    """Where Ray would read its auth token from, in Ray's own order; None if nowhere."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN variable"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return os.environ["RAY_AUTH_TOKEN_PATH"]
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() and default.stat().st_size else None


def ensure_auth_token(progress=print) -> None:
    """Create Ray's auth token if there is none, as `ray get-auth-token --generate` does.

    A fresh HOME has none, and `ray start --head` with RAY_AUTH_MODE=token then
    fails. The CLI prints the token on stdout: it is captured, never shown.
    """
    if auth_token_source():
        return
    cmd = [ray_bin("ray"), "get-auth-token", "--generate"]
    result = subprocess.run(cmd, env=client_env(), capture_output=True, text=True)
    if result.returncode != 0 or not auth_token_source():
        raise ClusterError(
            f"could not create Ray's auth token with `ray get-auth-token --generate`:\n"
            f"{result.stderr.strip()}\nCheck that {Path.home() / '.ray'} is writable, or "
            f"set RAY_AUTH_TOKEN_PATH to a file holding a token.")
    progress(f"created Ray's auth token at {auth_token_source()} "
             f"(`ray get-auth-token --generate`); Ember's commands send it")


def submit_module_job(address: str, module_args: list[str]) -> int:
    """`ray job submit` of `python -m <module_args>` with this checkout as working dir.

    PYTHONPATH=platform makes the job run the uploaded checkout's Ember when the
    working dir is a checkout; elsewhere the cluster's installed Ember is used.
    """
    import shlex

    runtime_env = json.dumps({"env_vars": {"PYTHONPATH": "platform"}})
    cmd = [ray_bin("ray"), "job", "submit", "--address", address, "--working-dir", ".",
           "--runtime-env-json", runtime_env, "--", "python", "-m", *module_args]
    print("submitting:", shlex.join(cmd))
    return subprocess.run(cmd, env=client_env()).returncode


def stop_cluster() -> None:
    """`ray stop`; its page of per-process lines is shown only if it fails."""
    result = subprocess.run([ray_bin("ray"), "stop"], env=client_env(), check=False,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"`ray stop` failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    _state_file().unlink(missing_ok=True)


def started_by_ember() -> bool:
    return _read_state().get("started_by_ember", False)


def serve_deploy(config_path: Path, dashboard_url: str) -> None:
    cmd = [ray_bin("serve"), "deploy", str(config_path), "--address", dashboard_url]
    result = subprocess.run(cmd, env=client_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"`serve deploy {config_path}` failed:\n{result.stderr[-3000:]}")


def serve_shutdown(dashboard_url: str) -> None:
    cmd = [ray_bin("serve"), "shutdown", "-y", "--address", dashboard_url]
    subprocess.run(cmd, env=client_env(), check=False, capture_output=True)


def _state_file() -> Path:
    return cluster_state_dir() / "cluster.json"


def started_ingress() -> str | None:
    """The ingress `ember up` started this machine's Ray head with (None: not Ember's head,
    or one started before the ingress was recorded)."""
    return _read_state().get("ingress")


def _write_state(state: dict) -> None:
    _state_file().parent.mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps(state))


def _read_state() -> dict:
    try:
        return json.loads(_state_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
