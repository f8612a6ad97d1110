"""Ember's metrics, all of them, through Ray's metrics agent, beside Ray's and vLLM's.

`ray.util.metrics` objects are exported by every node's metrics agent (Ray
prefixes them `ray_`), so Prometheus scraping Ray's targets gets them from
every engine replica at once, with no replica-by-replica `/metrics` scrape
through the load balancer; the Ray dashboard reads the same. Label values are
bounded: route, model, key name, status class, refusal reason, RAG endpoint,
collection.

    ray_ember_requests_total{route,model,key,status}
    ray_ember_tokens_total{model,key,kind}          kind: prompt | completion
    ray_ember_ttft_seconds / ray_ember_e2e_seconds / ray_ember_itl_seconds {model}
    ray_ember_refused_total{key,reason}             reason: 400 401 402 403 413 429
    ray_ember_service_up{service}                   1 while a replica reaches the service
                                                    (usage-keeper), 0 while it does not
    ray_ember_usage_rows_buffered                   usage rows a replica holds for the keeper
    ray_ember_usage_rows_dropped_total              rows dropped from a full outbox (lost)
    ray_ember_cost_usd_total{model,key}, ray_ember_replicas{model},
    ray_ember_cost_per_1k_requests_usd{model}, ray_ember_cost_per_1m_tokens_usd{model}
                                                    (the keeper's, every cost interval)
    ray_ember_rag_requests_total{endpoint,status}   the RAG routes' answers (retrieve,
                                                    generate, rag-generate, chat errors)
    ray_ember_retrieval_seconds{collection}         embedding a query and searching
"""

from __future__ import annotations

from functools import cache

LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
ITL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
RETRIEVAL_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]


@cache
def request_metrics() -> dict:
    from ray.util.metrics import Counter, Histogram

    return {
        "requests": Counter("ember_requests", "requests through Ember's gate",
                            tag_keys=("route", "model", "key", "status")),
        "tokens": Counter("ember_tokens", "prompt and completion tokens per key and model",
                          tag_keys=("model", "key", "kind")),
        "ttft": Histogram("ember_ttft_seconds", "time to first byte of the response",
                          boundaries=LATENCY_BUCKETS, tag_keys=("model",)),
        "e2e": Histogram("ember_e2e_seconds", "request latency, end to end",
                         boundaries=LATENCY_BUCKETS, tag_keys=("model",)),
        "itl": Histogram("ember_itl_seconds", "mean time between output tokens of a request",
                         boundaries=ITL_BUCKETS, tag_keys=("model",)),
        "refused": Counter("ember_refused", "requests refused by keys and limits",
                           tag_keys=("key", "reason")),
    }


def observe(row: dict, key_name: str) -> None:
    """One finished request's usage row into the metrics."""
    m = request_metrics()
    model = row.get("served_model") or row.get("model") or "-"
    status = row["status"]
    m["requests"].inc(1, {"route": row["route"], "model": model, "key": key_name,
                          "status": str(status)})
    if status in (400, 401, 402, 403, 413, 429):
        m["refused"].inc(1, {"key": key_name, "reason": str(status)})
    if status != 200:
        return
    for kind in ("prompt", "completion"):
        if row.get(f"{kind}_tokens"):
            m["tokens"].inc(row[f"{kind}_tokens"], {"model": model, "key": key_name,
                                                    "kind": kind})
    m["e2e"].observe(row["latency_s"], {"model": model})
    if row.get("ttft_s") is not None:
        m["ttft"].observe(row["ttft_s"], {"model": model})
        if row.get("completion_tokens", 0) > 1:
            itl = (row["latency_s"] - row["ttft_s"]) / (row["completion_tokens"] - 1)
            m["itl"].observe(max(itl, 0.0), {"model": model})


@cache
def cost_metrics() -> dict:
    from ray.util.metrics import Counter, Gauge

    return {
        "cost": Counter("ember_cost_usd", "measured replica cost, split among keys by tokens",
                        tag_keys=("model", "key")),
        "replicas": Gauge("ember_replicas", "running replicas of a priced model",
                          tag_keys=("model",)),
        "per_1k": Gauge("ember_cost_per_1k_requests_usd", "measured cost per 1,000 requests "
                        "over the last 15 minutes", tag_keys=("model",)),
        "per_1m": Gauge("ember_cost_per_1m_tokens_usd", "measured cost per 1M tokens over the "
                        "last 15 minutes", tag_keys=("model",)),
    }


@cache
def service_metrics() -> dict:
    """What each replica sees of Ember's service actors (`access.accounting`)."""
    from ray.util.metrics import Counter, Gauge

    return {
        "up": Gauge("ember_service_up", "1 while this replica reaches the service, 0 while "
                    "it does not", tag_keys=("service",)),
        "buffered": Gauge("ember_usage_rows_buffered", "usage rows this replica holds until "
                          "the keeper acknowledges them"),
        "dropped": Counter("ember_usage_rows_dropped", "usage rows dropped from a full outbox "
                           "(access.usage_buffer_rows): lost"),
    }


@cache
def rag_metrics() -> dict:
    """The RAG routes' (`ember.serving.rag`): answers by endpoint, retrieval latency."""
    from ray.util.metrics import Counter, Histogram

    return {
        "requests": Counter("ember_rag_requests", "requests answered by Ember's RAG "
                            "endpoints, by endpoint and HTTP status",
                            tag_keys=("endpoint", "status")),
        "retrieval": Histogram("ember_retrieval_seconds", "time to embed a query and search "
                               "the vector store", boundaries=RETRIEVAL_BUCKETS,
                               tag_keys=("collection",)),
    }


def count_rag_request(endpoint: str, status: int | str) -> None:
    rag_metrics()["requests"].inc(1, {"endpoint": endpoint, "status": str(status)})


def observe_retrieval(collection: str, seconds: float) -> None:
    rag_metrics()["retrieval"].observe(seconds, {"collection": collection})
