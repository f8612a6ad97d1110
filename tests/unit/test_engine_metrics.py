"""Ember's engine stat logger drops vLLM's per-token observations and nothing else."""

from __future__ import annotations

import inspect

from ember.serving import engine_metrics
from vllm.v1.metrics import ray_wrappers
from vllm.v1.metrics.stats import IterationStats


class Recorder:
    """Stands in for vLLM's RayPrometheusStatLogger's own `record` (which needs a
    running engine's config): it keeps what it was given."""

    def record(self, scheduler_stats, iteration_stats, *args, **kwargs):
        self.got = (scheduler_stats, iteration_stats, args, kwargs)


def test_per_token_latencies_are_dropped_the_rest_passed_on():
    stats = IterationStats()
    stats.num_generation_tokens = 7
    stats.time_to_first_tokens_iter = [0.05]
    stats.inter_token_latencies_iter = [0.01] * 6
    logger = engine_metrics.lean_stat_logger(Recorder)()
    logger.record("scheduler", stats, None, engine_idx=0)
    scheduler, passed, args, kwargs = logger.got
    assert (scheduler, args, kwargs) == ("scheduler", (None,), {"engine_idx": 0})
    assert passed.inter_token_latencies_iter == []
    assert passed.num_generation_tokens == 7 and passed.time_to_first_tokens_iter == [0.05]
    assert stats.inter_token_latencies_iter == [0.01] * 6  # the shared original is untouched
    logger.record(None, None)
    assert logger.got[1] is None


def test_install_replaces_vllms_ray_logger_once(monkeypatch):
    original = ray_wrappers.RayPrometheusStatLogger
    monkeypatch.setattr(ray_wrappers, "RayPrometheusStatLogger", original)
    engine_metrics.install()
    lean = ray_wrappers.RayPrometheusStatLogger
    assert lean.__name__ == "LeanRayStatLogger" and issubclass(lean, original)
    engine_metrics.install()
    assert ray_wrappers.RayPrometheusStatLogger is lean
    # the logger Ray calls takes the engine's (scheduler_stats, iteration_stats, ...)
    assert list(inspect.signature(original.record).parameters)[1:3] == [
        "scheduler_stats", "iteration_stats"]
