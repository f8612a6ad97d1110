"""Ember's Grafana dashboard, generated with grafana-foundation-sdk (Grafana's own builders).

`PANELS` is the single list of what the dashboard shows; the committed JSON
(`platform/ember/monitoring/grafana-dashboard.json`) is its output (a test keeps them
equal), and the monitoring integration test runs every query of every panel
against a real Prometheus. Metric names are as Prometheus sees them through
Ray's metrics agent: Ember's and vLLM's get Ray's `ray_` prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

RATE = "1m"
WINDOW = "5m"


@dataclass(frozen=True)
class PanelSpec:
    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)


def _quantiles(metric: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"histogram_quantile({q}, sum by (le, model) "
                  f"(rate(ray_{metric}_bucket[{WINDOW}])))", f"p{int(q * 100)} {{{{model}}}}")
                 for q in (0.5, 0.95, 0.99))


PANELS = (
    PanelSpec("Requests/s by model", "reqps", (
        (f"sum by (model) (rate(ray_ember_requests_total[{RATE}]))", "{{model}}"),)),
    PanelSpec("Requests/s by key", "reqps", (
        (f"sum by (key) (rate(ray_ember_requests_total[{RATE}]))", "{{key}}"),)),
    PanelSpec("Error rate (share of 5xx)", "percentunit", (
        (f'(sum(rate(ray_ember_requests_total{{status=~"5.."}}[{WINDOW}])) or vector(0)) / '
         f"sum(rate(ray_ember_requests_total[{WINDOW}]))", "errors"),)),
    PanelSpec("Refused by keys and limits, per status", "reqps", (
        (f"sum by (reason) (rate(ray_ember_refused_total[{WINDOW}]))", "{{reason}}"),)),
    PanelSpec("End-to-end latency", "s", _quantiles("ember_e2e_seconds")),
    PanelSpec("Time to first token", "s", _quantiles("ember_ttft_seconds")),
    PanelSpec("Inter-token latency", "s", _quantiles("ember_itl_seconds")),
    PanelSpec("Tokens/s by model", "short", (
        (f"sum by (model, kind) (rate(ray_ember_tokens_total[{RATE}]))", "{{model}} {{kind}}"),)),
    PanelSpec("Tokens/s by key", "short", (
        (f"sum by (key) (rate(ray_ember_tokens_total[{RATE}]))", "{{key}}"),)),
    PanelSpec("Queue depth", "short", (
        ("sum by (model_name) (ray_vllm_num_requests_waiting)", "engine waiting {{model_name}}"),
        ("sum by (model_name) (ray_vllm_num_requests_running)", "engine running {{model_name}}"),
        ("sum by (deployment) (ray_serve_deployment_queued_queries)",
         "Serve queued {{deployment}}"))),
    PanelSpec("KV-cache usage", "percentunit", (
        ("max by (model_name) (ray_vllm_kv_cache_usage_perc)", "{{model_name}}"),)),
    PanelSpec("Accelerator utilisation (GPU; CPU on CPU-only clusters)", "percent", (
        ("avg(ray_node_gpus_utilization) or avg(ray_node_cpu_utilization)", "utilisation"),)),
    PanelSpec("Ember services reached by every replica (1 = yes), usage rows held", "short", (
        ("min by (service) (ray_ember_service_up)", "{{service}} reached"),
        ("sum(ray_ember_usage_rows_buffered)", "usage rows waiting in replicas"))),
    PanelSpec("Running replicas (priced models)", "short", (
        ("sum by (model) (ray_ember_replicas)", "{{model}}"),)),
    PanelSpec("Cost USD/hour by model (measured)", "currencyUSD", (
        (f"3600 * sum by (model) (rate(ray_ember_cost_usd_total[{WINDOW}]))", "{{model}}"),)),
    PanelSpec("Cost USD/hour by key (measured)", "currencyUSD", (
        (f"3600 * sum by (key) (rate(ray_ember_cost_usd_total[{WINDOW}]))", "{{key}}"),)),
    PanelSpec("Cost per 1k requests and per 1M tokens (last 15 min)", "currencyUSD", (
        ("max by (model) (ray_ember_cost_per_1k_requests_usd)", "per 1k requests {{model}}"),
        ("max by (model) (ray_ember_cost_per_1m_tokens_usd)", "per 1M tokens {{model}}"))),
    PanelSpec("Cost trend: USD per day", "currencyUSD", (
        ("sum by (model) (increase(ray_ember_cost_usd_total[1d]))", "{{model}}"),)),
    PanelSpec("RAG answers/s by endpoint and status", "reqps", (
        (f"sum by (endpoint, status) (rate(ray_ember_rag_requests_total[{RATE}]))",
         "{{endpoint}} {{status}}"),)),
    PanelSpec("Retrieval latency (embed the query, search)", "s", tuple(
        (f"histogram_quantile({q}, sum by (le, collection) "
         f"(rate(ray_ember_retrieval_seconds_bucket[{WINDOW}])))",
         f"p{int(q * 100)} {{{{collection}}}}") for q in (0.5, 0.95, 0.99))),
)


def build_dashboard() -> dict:
    from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    # A datasource variable: on import, Grafana asks which Prometheus to use.
    source = DataSourceRef(type_val="prometheus", uid="${datasource}")
    board = (dashboard.Dashboard("Ember: serving, limits and cost").uid("ember-overview")
             .tags(["ember", "ray", "vllm"]).refresh("10s").time("now-1h", "now")
             .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus")
                            .type("prometheus")))
    for i, spec in enumerate(PANELS):
        panel = (timeseries.Panel().title(spec.title).unit(spec.unit).datasource(source)
                 .grid_pos(_grid(i)))
        for ref, (expr, legend) in zip("ABCDEFGH", spec.queries, strict=False):
            panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend)
                                      .ref_id(ref))
        board = board.with_panel(panel)
    return json.loads(JSONEncoder(sort_keys=True).encode(board.build()))


def _grid(i: int):
    from grafana_foundation_sdk.models.dashboard import GridPos

    return GridPos(h=8, w=12, x=(i % 2) * 12, y=(i // 2) * 8)


def dashboard_json() -> str:
    return json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n"


def all_queries(board: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel of a dashboard JSON."""
    return [(panel["title"], target["expr"]) for panel in board.get("panels", [])
            for target in panel.get("targets", [])]
