"""Promotion gate, canary assignment and the rollout state machine, on a real MLflow
registry and a real usage database (SQLite files in a temporary EMBER_HOME). The
versions' adapters are registered up front, so no cluster is needed: the served path
is in tests/integration/test_training.py."""

import json
import time

import pytest
from ember.access.version_health import Thresholds, VersionStats, breach, version_stats
from ember.cluster import rollout as ro
from ember.errors import ClusterError
from ember.models import rollouts
from ember.models.adapters import register_adapter
from ember.models.promotion import PromotionError, Registry, judge
from ember.models.rollouts import Rollout, Track

GOOD = {"final_base_val_perplexity": 60.0, "final_val_perplexity": 5.0,
        "eval_base_f1": 0.08, "eval_tuned_f1": 0.29}


@pytest.fixture(autouse=True)
def ember_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_HOME", str(tmp_path / "home"))


def test_keys_in_sequence_split_within_one_key_of_the_weight_and_stay_put():
    state = Rollout("keeper", Track("keeper.v1", "1"), canary=Track("keeper.v2", "2"))
    for first in (1, 137, 5000):
        ids = range(first, first + 50)
        state.weight = 10
        at_10 = {k for k in ids if state.pick(k).adapter == "keeper.v2"}
        assert 4 <= len(at_10) <= 6, len(at_10)
        state.weight = 50
        at_50 = {k for k in ids if state.pick(k).adapter == "keeper.v2"}
        assert 24 <= len(at_50) <= 26 and at_10 <= at_50  # raising the weight only adds keys
    assert all(state.pick(k) == state.pick(k) for k in range(100))  # sticky
    state.weight = 100
    assert {state.pick(k).adapter for k in range(20)} == {"keeper.v2"}
    state.canary, state.weight = None, 0
    assert {state.pick(k).adapter for k in range(20)} == {"keeper.v1"}


def test_the_state_survives_a_write_and_names_are_checked():
    state = Rollout("keeper", Track("keeper", "1"), registered="reg",
                    canary=Track("keeper.v2", "2"), weight=10)
    state.note("canary", version="2", weight=10)
    rollouts.save(state)
    assert rollouts.load("keeper") == state
    assert rollouts.load("../etc/passwd") is None and rollouts.load("nothing") is None
    assert rollouts.adapters_in_use() == {"keeper": "keeper", "keeper.v2": "keeper"}
    assert rollouts.version_adapter_name("keeper", "12") == "keeper.v12"


def test_the_gate_passes_a_better_version_and_names_the_numbers_of_a_worse_one():
    passed, lines = judge(GOOD, 0.02)
    assert passed and len(lines) == 2 and all(line.endswith("ok") for line in lines)
    worse = {**GOOD, "eval_tuned_f1": 0.05}
    passed, lines = judge(worse, 0.02)
    assert not passed
    assert any("token F1" in line and "0.080" in line and "0.050" in line
               and "WORSE" in line for line in lines)
    assert judge(worse, 0.05)[0]  # within a wider margin
    assert judge({**GOOD, "final_val_perplexity": 61.5}, 0.02)[0] is False  # +2.5%
    assert judge({**GOOD, "final_val_perplexity": 61.0}, 0.02)[0] is True  # +1.7%
    passed, lines = judge({"final_val_loss": 1.0}, 0.02)
    assert not passed and "no evaluation is recorded" in lines[0]


def test_a_canary_is_judged_on_errors_and_first_token_time_once_it_has_traffic():
    limits = Thresholds(max_error_rate=0.05, min_requests=10)
    healthy = VersionStats(40, 0, 0.2)
    assert breach(VersionStats(9, 9, 0.1), healthy, limits) is None  # too few to judge
    assert "error rate 20.0% (2 of 10)" in breach(VersionStats(10, 2, 0.1), healthy, limits)
    assert breach(VersionStats(20, 1, 0.2), healthy, limits) is None
    assert "above 350 ms" in breach(VersionStats(20, 0, 0.36), healthy, limits)
    assert breach(VersionStats(20, 0, 0.34), healthy, limits) is None
    fixed = Thresholds(max_ttft_p95_ms=100, min_requests=10)
    assert "above 100 ms" in breach(VersionStats(20, 0, 0.15), healthy, fixed)


def test_version_stats_read_the_usage_rows_the_gate_wrote(tmp_path):
    from ember.access.schema import USAGE
    from ember.access.store import migrate, opened

    url = f"sqlite:///{tmp_path / 'access.db'}"
    migrate(url)
    now = time.time()
    rows = [(200, 0.1), (200, 0.2), (500, None), (400, None), (429, None), (0, None),
            (200, 0.3)]
    with opened(url) as engine, engine.begin() as connection:
        for i, (status, ttft) in enumerate(rows):
            connection.execute(USAGE.insert().values(
                row_id=f"r{i}", ts=now, model="keeper.v2", served_model="keeper.v2",
                route="/v1/chat/completions", status=status, latency_s=0.5, ttft_s=ttft))
        connection.execute(USAGE.insert().values(  # before the rollout: not counted
            row_id="old", ts=now - 100, served_model="keeper.v2", route="/v1/completions",
            status=500, latency_s=0.1))
    stats = version_stats(url, "keeper.v2", since=now - 10)
    assert (stats.requests, stats.errors, stats.ttft_p95_s) == (5, 2, 0.3)


@pytest.fixture()
def registry(tmp_path):
    """A real MLflow registry with versions 1-3 of 'reg': 1 and 2 evaluated, 3 not."""
    reg = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    reg.client.create_registered_model("reg")
    experiment = reg.client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    for version, metrics in (("1", GOOD), ("2", GOOD), ("3", {})):
        run = reg.client.create_run(experiment).info.run_id
        for name, value in metrics.items():
            reg.client.log_metric(run, name, value)
        reg.client.create_model_version("reg", source=str(tmp_path / "art"), run_id=run)
        register_adapter(_adapter(tmp_path, version), f"keeper.v{version}", "base",
                         source=f"models:/reg/{version}")
    return reg


def _adapter(tmp_path, version):
    folder = tmp_path / f"adapter{version}"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"w" * 16)
    return folder


def test_a_rollout_advances_completes_and_rolls_back_with_the_registry_in_step(
        registry, tmp_path):
    from ember.access.store import migrate

    url = f"sqlite:///{tmp_path / 'access.db'}"
    migrate(url)
    register_adapter(_adapter(tmp_path, "0"), "keeper", "base", source="models:/reg/1")
    lines = []
    plan = ro.RolloutPlan(steps=[10, 50, 100], interval_s=0, poll_s=0.01,
                          thresholds=Thresholds(min_requests=0))
    state = ro.run_rollout("http://unused", registry, "keeper", "2", "ember", plan, url,
                           lines.append)
    assert (state.stable, state.previous, state.canary) == (
        Track("keeper.v2", "2"), Track("keeper", "1"), None)
    assert [h["weight"] for h in state.history if h["event"] == "canary"] == [10, 50]
    assert (registry.alias("reg", "champion"), registry.alias("reg", "previous"),
            registry.alias("reg", "challenger")) == ("2", "1", None)
    assert rollouts.load("keeper") == state
    assert "rollout complete: keeper: v2 (keeper.v2) (100%)" in lines

    with pytest.raises(PromotionError, match="not promoted"):  # version 3: no evaluation
        ro.run_rollout("http://unused", registry, "keeper", "3", "ember", plan, url, print)
    assert rollouts.load("keeper").canary is None

    forced = ro.RolloutPlan(steps=[30], interval_s=0, poll_s=0.01, force=True, reason="test")
    # (a last step below 100 holds at once: it needs no traffic to judge)
    state = ro.run_rollout("http://unused", registry, "keeper", "3", "ember", forced, url,
                           print)
    assert (state.canary, state.weight, registry.alias("reg", "challenger")) == (
        Track("keeper.v3", "3"), 30, "3")
    tags = registry.client.get_model_version("reg", "3").tags
    assert tags["ember.gate"].startswith("failed") and tags["ember.gate_forced_reason"] == "test"
    with pytest.raises(ClusterError, match="already rolling out keeper.v3"):
        ro.run_rollout("http://unused", registry, "keeper", "1", "ember", plan, url, print)

    state = ro.rollback(state, registry, "by hand", print)  # the canary goes
    assert (state.canary, state.weight, registry.alias("reg", "challenger")) == (None, 0, None)
    assert registry.client.get_model_version("reg", "3").tags["ember.rolled_back"] == "by hand"
    state = ro.rollback(state, registry, "v2 was bad", print)  # then the previous stable
    assert state.stable == Track("keeper", "1") and registry.alias("reg", "champion") == "1"
    with pytest.raises(ClusterError, match="no rollout to roll back"):
        ro.rollback(state, registry, "again", print)


def test_a_failing_canary_is_rolled_back_by_the_watch(registry, tmp_path):
    from ember.access.schema import USAGE
    from ember.access.store import migrate, opened

    url = f"sqlite:///{tmp_path / 'access.db'}"
    migrate(url)
    rollouts.save(Rollout("keeper", Track("keeper.v1", "1"), registered="reg"))
    with opened(url) as engine, engine.begin() as connection:
        for i in range(10):  # written "during" the rollout: ts in the future
            connection.execute(USAGE.insert().values(
                row_id=f"r{i}", ts=time.time() + 60, served_model="keeper.v2",
                route="/v1/chat/completions", status=500 if i < 3 else 200, latency_s=0.1,
                ttft_s=0.05))
    plan = ro.RolloutPlan(steps=[10, 100], interval_s=30, poll_s=0.01,
                          thresholds=Thresholds(min_requests=10))
    started = time.monotonic()
    state = ro.run_rollout("http://unused", registry, "keeper", "2", "ember", plan, url, print)
    assert time.monotonic() - started < 5  # judged on the first poll, not after the step
    assert state.canary is None and state.stable == Track("keeper.v1", "1")
    assert "error rate 30.0%" in state.history[-1]["reason"]


def test_steps_and_targets_are_checked():
    assert ro.parse_steps("10,50,100") == [10, 50, 100]
    for bad in ("", "50,10", "0,100", "10,x", "10,10"):
        with pytest.raises(ClusterError, match="--steps"):
            ro.parse_steps(bad)
    state = Rollout("keeper", Track("keeper", "1"), registered="reg")
    assert ro.resolve_target(state, "keeper", "4") == ("reg", "4")
    assert ro.resolve_target(None, "keeper", "models:/other/7") == ("other", "7")
    with pytest.raises(ClusterError, match="does not come from the MLflow registry"):
        ro.resolve_target(Rollout("keeper", Track("keeper")), "keeper", "4")


def test_promote_gates_then_switches_the_names_that_follow_the_registered_model(registry):
    rollouts.save(Rollout("keeper", Track("keeper.v1", "1"), registered="reg"))
    with pytest.raises(PromotionError, match="not promoted"):
        ro.promote("http://unused", registry, "reg", "3", "ember", progress=print)
    assert rollouts.load("keeper").stable == Track("keeper.v1", "1")  # nothing moved
    assert ro.promote("http://unused", registry, "reg", "2", "ember", progress=print) == [
        "keeper"]
    state = rollouts.load("keeper")
    assert (state.stable, state.previous) == (Track("keeper.v2", "2"), Track("keeper.v1", "1"))
    assert (registry.alias("reg", "champion"), registry.alias("reg", "previous")) == ("2", "1")
    tags = registry.client.get_model_version("reg", "2").tags
    assert tags["ember.gate"].startswith("passed") and "ember.gate_forced_by" not in tags
