"""Sweep configs: the shipped one parses; bad search spaces are named before any trial."""

from pathlib import Path

import pytest
import yaml
from ember.config.loading import ConfigError
from ember.tuning.sweep import (
    SweepResult,
    TrialRow,
    evaluations,
    job_dict,
    load_sweep_config,
    trial_job,
    trials_that_fit,
    unflatten,
)

JOBS = Path(__file__).resolve().parents[2] / "cluster" / "jobs"
SWEEPS = sorted(JOBS.glob("sweep-*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_config_parses_and_opens_with_its_command(path):
    config = load_sweep_config(str(path))
    header = path.read_text().split("\n\n")[0]
    assert f"python -m tune.sweep --config cluster/jobs/{path.name}" in header
    assert config.search_space and config.asha.enabled


def write(tmp_path, **changes) -> str:
    data = yaml.safe_load((JOBS / "sweep-lora-cpu.yaml").read_text())
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("space, message", [
    ({"train.learning_rate": {"type": "uniform", "low": 0, "high": 1}},
     "'train.learning_rate': 'learning_rate' is not a key of train"),
    ({"method.lora.rank": {"type": "choice", "values": [4]}}, "'rank' is not a key"),
    ({"method.lora": {"type": "choice", "values": [4]}}, "is a section, not a value"),
    ({"method.lora.r": {"type": "choice", "values": []}}, "non-empty `values`"),
    ({"train.lr": {"type": "loguniform", "low": 1e-2, "high": 1e-4}}, "inverted or empty range"),
    ({"train.lr": {"type": "loguniform", "low": 0, "high": 1e-4}}, "loguniform needs low > 0"),
    ({"train.lr": {"type": "uniform", "low": 1}}, "needs `low` and `high`"),
    ({"train.lr": {"type": "normal", "low": 0, "high": 1}}, "search_space.train.lr.type"),
])
def test_bad_search_space_is_refused_naming_the_parameter(tmp_path, space, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep_config(write(tmp_path, search_space=space))


def test_points_to_evaluate_must_name_search_space_parameters(tmp_path):
    search = {"points_to_evaluate": [{"train.weight_decay": 0.1}]}
    with pytest.raises(ConfigError, match="outside search_space"):
        load_sweep_config(write(tmp_path, search=search))


def test_sweep_needs_evaluations_for_asha(tmp_path):
    with pytest.raises(ConfigError, match="eval_every > 0"):
        load_sweep_config(write(tmp_path, overrides={"train": {"eval_every": 0}}))


def test_trial_job_applies_params_and_keeps_no_weights():
    config = load_sweep_config(str(JOBS / "sweep-lora-cpu.yaml"))
    job = trial_job(config, {"train.lr": 0.01, "method.lora.r": 4}, name="t1")
    assert (job.name, job.train.lr, job.method.lora.r) == ("t1", 0.01, 4)
    assert job.train.max_steps == 12  # the sweep's override
    assert not job.train.checkpoint_at_end and job.tracking.register_as is None
    assert evaluations(job) == 4
    best = job_dict(config, {"train.lr": 0.01})  # what the best config file holds
    assert "checkpoint_at_end" not in best["train"]  # the trial-only changes stay out
    assert best["tracking"]["register_as"] == "lantern-keeper"


def test_unflatten_and_table():
    assert unflatten({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    rows = [TrialRow("t1", "finished", {"train.lr": 0.001}, 4, 1.5),
            TrialRow("t2", "stopped early", {"train.lr": 2.0}, 1, 9.0)]
    table = SweepResult(rows, rows[0], None, None).table("val_loss")
    assert "t1 * | finished | 0.001 | 4 | 1.5000" in table
    assert "t2 | stopped early | 2 | 1 | 9.0000" in table


def test_concurrency_is_what_free_resources_fit_per_trial():
    config = load_sweep_config(str(JOBS / "sweep-lora-cpu.yaml"))
    job = trial_job(config, {})  # 1 worker x 1 CPU, plus the trial's 0.1-CPU driver
    assert trials_that_fit({"CPU": 4.0}, job) == 3
    assert trials_that_fit({"CPU": 0.5}, job) == 1
    gpu = job.model_copy(update={"scaling": job.scaling.model_copy(update={
        "use_gpu": True, "num_workers": 2, "resources_per_worker": {"GPU": 1}})})
    assert trials_that_fit({"CPU": 64.0, "GPU": 8.0}, gpu) == 4
