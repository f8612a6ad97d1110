"""`ember monitor up|down`: a real Prometheus scraping the Ray cluster, config written by Ember.

Design choices:
- The targets come from Ray's own service-discovery file
  (`/tmp/ray/prom_metrics_service_discovery.json`, kept current by the head):
  every node's metrics agent, which exports Ray's, vLLM's and Ember's metrics
  (`ember.access.telemetry`). The same works at scale with Ray's
  Prometheus/Grafana integration, which reads the same file.
- The binary is the system's `prometheus` (Debian's package; or any install on
  PATH, or `--binary`). Its data, config, log and pid live in
  `$EMBER_HOME/monitor/`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from ember.errors import EmberError

INSTALL_HINT = ("install Prometheus: `sudo apt-get install --no-install-recommends prometheus` "
                "(Debian/Ubuntu), or put the `prometheus` binary from prometheus.io on PATH "
                "(or pass --binary)")


def monitor_dir() -> Path:
    from ember.config.paths import ember_home

    return ember_home() / "monitor"


def ray_discovery_file() -> Path:
    ray_tmp = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
    return ray_tmp / "prom_metrics_service_discovery.json"


# Alerts on Ember's own health (`ember.access.telemetry.service_metrics`): loaded by the
# Prometheus `ember monitor up` starts; an Alertmanager, if the operator has one, routes them.
ALERT_RULES = {"groups": [{"name": "ember", "rules": [
    {"alert": "EmberServiceUnreachable",
     "expr": "min by (service) (ray_ember_service_up) == 0", "for": "1m",
     "labels": {"severity": "critical"},
     "annotations": {"summary": "An Ember replica has not reached its {{ $labels.service }} "
                                "for a minute: usage rows wait in the replicas' outboxes and "
                                "each replica enforces limits on its own traffic."}},
    {"alert": "EmberUsageRowsDropped",
     "expr": "increase(ray_ember_usage_rows_dropped_total[15m]) > 0",
     "labels": {"severity": "critical"},
     "annotations": {"summary": "Usage rows were dropped from a full replica outbox "
                                "(access.usage_buffer_rows): requests went unaccounted."}},
]}]}


def write_config(folder: Path, discovery: Path, scrape_s: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rules = folder / "ember-alerts.yml"
    rules.write_text("# Written by `ember monitor up`: alerts on Ember's own health.\n"
                     + yaml.safe_dump(ALERT_RULES, sort_keys=False))
    config = {
        "global": {"scrape_interval": f"{scrape_s:g}s", "evaluation_interval": f"{scrape_s:g}s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{
            "job_name": "ray",
            "file_sd_configs": [{"files": [str(discovery)], "refresh_interval": "10s"}],
        }],
    }
    path = folder / "prometheus.yml"
    path.write_text("# Written by `ember monitor up`: Ray's targets (Ray, vLLM, Ember metrics).\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


def find_binary(binary: str | None = None) -> str:
    found = shutil.which(binary or "prometheus")
    if not found:
        raise EmberError(f"no Prometheus binary found; {INSTALL_HINT}")
    return found


def start(port: int = 9090, scrape_s: float = 5.0, binary: str | None = None,
          folder: Path | None = None, discovery: Path | None = None,
          timeout_s: float = 60) -> str:
    """Start Prometheus in the background; its URL once it is ready."""
    folder = folder or monitor_dir()
    running = read_pid(folder)
    if running:
        raise EmberError(f"Prometheus is already running (pid {running}); `ember monitor down` "
                         f"stops it")
    exe = find_binary(binary)
    config = write_config(folder, discovery or ray_discovery_file(), scrape_s)
    log = open(folder / "prometheus.log", "ab")  # noqa: SIM115 - the child keeps it open
    process = subprocess.Popen(
        [exe, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (folder / "prometheus.pid").write_text(str(process.pid))
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, process, folder, timeout_s)
    return url


def _wait_ready(url: str, process, folder: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (folder / "prometheus.log").read_text(errors="replace")[-1500:]
            raise EmberError(f"Prometheus exited with code {process.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise EmberError(f"Prometheus not ready at {url} after {timeout_s:.0f}s; see "
                     f"{folder / 'prometheus.log'}")


def read_pid(folder: Path | None = None) -> int | None:
    path = (folder or monitor_dir()) / "prometheus.pid"
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop(folder: Path | None = None) -> bool:
    folder = folder or monitor_dir()
    pid = read_pid(folder)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(40):
        if read_pid(folder) is None:
            break
        time.sleep(0.25)
    (folder / "prometheus.pid").unlink(missing_ok=True)
    return True


def query(url: str, expr: str) -> list[dict]:
    """An instant query's result vector (empty when there is no data)."""
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=30)
    body = response.json()
    if body.get("status") != "success":
        raise EmberError(f"Prometheus refused {expr!r}: {body.get('error')}")
    return body["data"]["result"]
