"""vLLM's engine metrics at a cost per engine step and per request, not per token.

Ray Serve LLM records vLLM's metrics through vLLM's `RayPrometheusStatLogger`, whose
metrics are `ray.util.metrics` objects: each observation is a Python call into Ray's
metrics recorder, on the replica's event loop. vLLM observes one inter-token latency
per generated token, so at GPU rates (16k tokens/s on the 1.1B bench model) those
observations alone took about a tenth of the replica's loop, which is also the loop
that admits requests and writes their streams (profile in docs/benchmarks.md, "GPU
serving: where a request's time goes"). A plain vLLM server records the same
histogram with prometheus_client, which costs far less per call.

Ember keeps every gauge, counter and per-request histogram (the dashboard's running and
waiting requests and KV-cache use, TTFT, end-to-end latency, the request's mean time per
output token) and drops only the per-token inter-token-latency observations.

How it takes effect: Ray's vLLM engine imports `RayPrometheusStatLogger` from vLLM's
module by name when it starts an engine (`ray_internals.ENGINE_STAT_LOGGER_IMPORT`, which
its unit test checks is still so), so `install()` puts Ember's subclass there first; it
runs in each engine replica before the engine starts.
"""

from __future__ import annotations

import copy
import logging

logger = logging.getLogger("ember.engine_metrics")

# IterationStats' per-token lists, by vLLM version (renamed in vLLM's history)
PER_TOKEN_FIELDS = ("inter_token_latencies_iter", "time_per_output_tokens_iter")


def without_per_token(iteration_stats):
    """A shallow copy of vLLM's IterationStats with the per-token lists emptied (the
    original is shared with the other stat loggers, so it is left as it is)."""
    if iteration_stats is None:
        return None
    lean = copy.copy(iteration_stats)
    for field in PER_TOKEN_FIELDS:
        if hasattr(lean, field):
            setattr(lean, field, [])
    return lean


def lean_stat_logger(base):
    """`base` (vLLM's RayPrometheusStatLogger) recording no per-token observation."""

    class LeanRayStatLogger(base):
        def record(self, scheduler_stats, iteration_stats, *args, **kwargs):
            super().record(scheduler_stats, without_per_token(iteration_stats), *args,
                           **kwargs)

    LeanRayStatLogger.__qualname__ = LeanRayStatLogger.__name__
    return LeanRayStatLogger


def install() -> None:
    """Make the engines this process starts record metrics with `LeanRayStatLogger`."""
    from vllm.v1.metrics import ray_wrappers

    current = ray_wrappers.RayPrometheusStatLogger
    if current.__name__ == "LeanRayStatLogger":
        return
    ray_wrappers.RayPrometheusStatLogger = lean_stat_logger(current)
    logger.info("engine metrics: per-token inter-token latencies not recorded "
                "(ember.serving.engine_metrics)")
