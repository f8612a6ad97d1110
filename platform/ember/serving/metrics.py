"""Ember's own Prometheus metrics, served at GET /metrics by the RAG ingress.

They count this replica's requests, tokens and retrieval latency; Ray's
metrics (replicas, queues, vLLM engine) are exported by Ray itself on each
node's metrics port and scraped beside these.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry()
REQUESTS = Counter("ember_requests", "HTTP requests handled by Ember's ingress",
                   ["endpoint", "status"], registry=REGISTRY)
TOKENS = Counter("ember_tokens", "tokens processed for Ember's RAG and generate endpoints",
                 ["kind"], registry=REGISTRY)
RETRIEVAL_SECONDS = Histogram("ember_retrieval_seconds",
                              "time to embed a query and search the vector store",
                              ["collection"], registry=REGISTRY,
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


def render() -> bytes:
    return generate_latest(REGISTRY)


def count_usage(usage: dict | None) -> None:
    if usage:
        TOKENS.labels("prompt").inc(usage.get("prompt_tokens") or 0)
        TOKENS.labels("completion").inc(usage.get("completion_tokens") or 0)
