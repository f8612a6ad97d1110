"""The Grafana dashboard and the Prometheus config Ember writes."""

from __future__ import annotations

import json
from importlib.resources import files

import yaml
from ember.monitoring.dashboard import PANELS, all_queries, dashboard_json
from ember.monitoring.prometheus import write_config


def test_the_committed_dashboard_is_the_generators_output():
    committed = files("ember.monitoring").joinpath("grafana-dashboard.json").read_text()
    assert committed == dashboard_json(), (
        "regenerate: python -c 'from ember.monitoring.dashboard import dashboard_json; "
        "print(dashboard_json(), end=\"\")' > platform/ember/monitoring/grafana-dashboard.json")


def test_every_panel_the_issue_asks_for_is_there():
    board = json.loads(dashboard_json())
    titles = " | ".join(p["title"] for p in board["panels"]).lower()
    for what in ("latency", "time to first token", "inter-token", "tokens/s", "utilisation",
                 "queue depth", "kv-cache", "error rate", "cost", "by key", "by model",
                 "refused", "trend"):
        assert what in titles, what
    queries = all_queries(board)
    assert len(queries) == sum(len(p.queries) for p in PANELS)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in board["panels"])


def test_prometheus_scrapes_rays_discovered_targets(tmp_path):
    path = write_config(tmp_path, tmp_path / "sd.json", 5)
    config = yaml.safe_load(path.read_text())
    (job,) = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / "sd.json")]
    assert config["global"]["scrape_interval"] == "5s"
    (rules,) = config["rule_files"]
    alerts = {r["alert"]: r for g in yaml.safe_load(open(rules))["groups"] for r in g["rules"]}
    assert "ray_ember_service_up" in alerts["EmberServiceUnreachable"]["expr"]
    assert "ray_ember_usage_rows_dropped_total" in alerts["EmberUsageRowsDropped"]["expr"]
