"""A real Prometheus on the running service: every query of every dashboard panel has data.

Without a `prometheus` binary it fails, so a run cannot pass with monitoring
untested (`.ci/run` installs Debian's); a developer without Prometheus skips it
with EMBER_SKIP_MONITORING_TEST=1, which CI never sets.

Prometheus scrapes Ray's service-discovered targets (every node's metrics
agent: Ray's, vLLM's and Ember's metrics) every 2 s; the load below touches
every panel: chats and streams by two keys, refusals, embeddings, and the
keeper's cost intervals (cost_sample_s: 2 in this session).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from importlib.resources import files
from pathlib import Path

import httpx
import pytest
from ember.access.keys import create_key
from ember.monitoring import prometheus
from ember.monitoring.dashboard import all_queries

from .conftest import MODEL, free_port

SKIP_VARIABLE = "EMBER_SKIP_MONITORING_TEST"


@pytest.fixture(scope="session", autouse=True)
def prometheus_binary() -> str:
    """A `prometheus` on PATH, or this module fails (skips only when asked to).

    Session scope, though only this module uses it: pytest sets up wider scopes first, so
    this runs before the session's cluster and deployment, and says so in a second.
    """
    found = shutil.which("prometheus")
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{SKIP_VARIABLE}=1 is set: monitoring untested on request (prometheus "
                    f"binary: {found or 'none on PATH'}); CI never sets it")
    if found is None:
        pytest.fail(f"no prometheus binary on PATH, so Ember's monitoring would go untested: "
                    f"{prometheus.INSTALL_HINT}. On a machine without Prometheus, "
                    f"{SKIP_VARIABLE}=1 skips this module.", pytrace=False)
    return found


@pytest.fixture(scope="module")
def prometheus_url(prometheus_binary, ray_cluster, base_url, tmp_path_factory):
    from ray._private.worker import global_worker

    discovery = Path(global_worker.node.get_session_dir_path()) / \
        "prom_metrics_service_discovery.json"
    folder = tmp_path_factory.mktemp("prometheus")
    url = prometheus.start(port=free_port(), scrape_s=2, binary=prometheus_binary,
                           folder=folder, discovery=discovery)
    yield url
    assert prometheus.stop(folder)


def drive_load(base_url: str, keys: list[str]) -> None:
    for key in keys:
        headers = {"Authorization": f"Bearer {key}"}
        for stream in (False, True):
            body = {"model": MODEL, "max_tokens": 8, "stream": stream,
                    "messages": [{"role": "user", "content": "Name a lake."}]}
            with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body,
                              headers=headers, timeout=300) as response:
                assert response.status_code == 200
                response.read()
        httpx.post(f"{base_url}/v1/embeddings", headers=headers, timeout=60,
                   json={"model": "all-minilm-l6-v2", "input": ["a lake"]})
        httpx.post(f"{base_url}/v1/retrieve", headers=headers, timeout=60,
                   json={"query": "a lake"})  # the RAG panels: answers, retrieval latency
    assert httpx.get(f"{base_url}/v1/models", timeout=60).status_code == 401  # refused


def test_every_dashboard_query_returns_data(prometheus_url, base_url, api_key, access_url):
    second, _ = create_key(access_url, "dashboard-viewer")
    board = json.loads(files("ember.monitoring").joinpath("grafana-dashboard.json").read_text())
    queries = all_queries(board)
    missing = queries
    keys_seen: set = set()
    deadline = time.monotonic() + 240
    # Until every panel has data and both keys' requests reached Prometheus: Ray's metrics
    # agent exports every few seconds, so the last load's counters can trail the panels.
    while (missing or not {"admin", "dashboard-viewer"} <= keys_seen) \
            and time.monotonic() < deadline:
        drive_load(base_url, [api_key, second])
        time.sleep(5)
        missing = [(title, expr) for title, expr in missing
                   if not prometheus.query(prometheus_url, expr)]
        keys_seen = {r["metric"].get("key") for r in prometheus.query(
            prometheus_url, "sum by (key) (ray_ember_requests_total)")}
    assert not missing, f"panels without data after 4 minutes of load: {missing}"
    assert {"admin", "dashboard-viewer"} <= keys_seen, keys_seen


def test_prometheus_loaded_embers_alert_rules(prometheus_url):
    rules = httpx.get(f"{prometheus_url}/api/v1/rules", timeout=30).json()["data"]["groups"]
    alerts = {r["name"]: r for g in rules if g["name"] == "ember" for r in g["rules"]}
    assert {"EmberServiceUnreachable", "EmberUsageRowsDropped"} <= set(alerts), rules
    assert alerts["EmberServiceUnreachable"]["health"] == "ok"
