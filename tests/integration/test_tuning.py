"""Sweeps for real: Ray Tune + Optuna + ASHA over the SFT job, MLflow parent/child runs.

Trials train the LoRA job on the small random model of training_support.py (four
steps each, evaluated at steps 2 and 4), one trial at a time so the order ASHA
sees is fixed: a sound config first, then one with a learning rate far too high
(stopped at its first evaluation), then one whose config crashes, then one
proposal of Optuna's own. Each trial starts its own Ray Train run (most of its
time), so one sweep, killed part-way and restored, shows every claim.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import REPO
from tests.integration.training_support import TINY_MODEL

# Longer than the suite's ceiling (pyproject.toml): the sweep waits up to 900 s for two
# ended trials, then may run for its time_budget_s (1200 s), paid by the first test.
pytestmark = pytest.mark.timeout(1800)

GOOD = {"train.lr": 3e-3, "method.lora.r": 8, "method.lora.dropout": 0.0,
        "train.warmup_steps": 0}
TOO_HIGH = {**GOOD, "train.lr": 2.0}
CRASHES = {**GOOD, "method.lora.dropout": 1.5}  # outside LoRA's [0, 1): the trial's job is refused
# Evaluations count Tune reports, one per eval_every (2) steps: the base model's evaluation
# at step 0 is logged to MLflow, not reported. 4 steps = 2 evaluations, so ASHA's max_t is 2
# and its rungs are at 1 and 2: TOO_HIGH is compared with GOOD at evaluation 1 and stopped,
# and a trial stopped there (1 of 2 evaluations) reads "stopped early".
STEPS = 4


def sweep_yaml(tmp: Path, mlflow_uri: str, name: str, points: list[dict], samples: int) -> Path:
    data = {
        "name": name, "base_job": str(REPO / "cluster" / "jobs" / "sft-lora-cpu.yaml"),
        "overrides": {"model": TINY_MODEL,
                      "train": {"max_steps": STEPS, "eval_every": 2, "log_every": 2,
                                "eval_batches": 2, "batch_size": 4, "grad_accum": 1},
                      "scaling": {"resources_per_worker": {"CPU": 1}},
                      "tracking": {"uri": mlflow_uri, "register_as": None}},
        "search_space": {
            "train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
            "method.lora.r": {"type": "choice", "values": [4, 8]},
            "method.lora.dropout": {"type": "uniform", "low": 0.0, "high": 0.1},
            "train.warmup_steps": {"type": "randint", "low": 0, "high": 2}},
        "search": {"seed": 7, "num_samples": samples, "max_concurrent_trials": 1,
                   "points_to_evaluate": points},
        "asha": {"grace_period": 1, "reduction_factor": 2},
        "time_budget_s": 1200,
        "storage_path": str(tmp / "tune"),
        "tracking": {"uri": mlflow_uri, "experiment": "ember-sweeps-test"},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class KilledAndRestored:
    config: object
    result: object  # ember.tuning.sweep.SweepResult of the restored run
    ended_before_kill: list[str]  # trial ids Tune had marked TERMINATED when it was killed
    restored_output: str  # what the restored run printed


@pytest.fixture(scope="module")
def sweep(ray_cluster, tmp_path_factory, mlflow_uri):
    """The sweep as `python -m tune.sweep`, killed (SIGKILL to its process group) once two
    trials ended, then run again in this process, which restores it.

    Two ended trials are GOOD (finished) and TOO_HIGH (stopped by ASHA): Tune saves no
    scheduler state, so the kill comes after ASHA's decision; CRASHES and Optuna's proposal
    run in the restored sweep (or, cut short by the kill, again). One sweep shows both the
    sweep's claims and the restore's: each trial is a Ray Train run, most of the time here.
    """
    from ember.tuning.sweep import load_sweep_config, run_sweep

    tmp = tmp_path_factory.mktemp("sweep")
    path = sweep_yaml(tmp, mlflow_uri, "tiny-sweep", [GOOD, TOO_HIGH, CRASHES], samples=4)
    command = [sys.executable, "-m", "tune.sweep", "--config", str(path)]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ended = wait_for_ended_trials(tmp / "tune" / "tiny-sweep", first, count=2)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    config = load_sweep_config(str(path))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = run_sweep(config)
    return KilledAndRestored(config, result, ended, printed.getvalue())


def by_params(rows, params: dict):
    return next(r for r in rows if all(r.params.get(k) == v for k, v in params.items()))


def test_sweep_runs_every_trial_and_asha_stops_the_bad_one(sweep):
    result = sweep.result
    assert len(result.rows) == 4
    assert by_params(result.rows, GOOD).status == "finished"
    stopped = by_params(result.rows, TOO_HIGH)
    assert (stopped.status, stopped.evaluations) == ("stopped early", 1)
    assert by_params(result.rows, CRASHES).status == "failed"
    assert result.best is not None and result.best.status == "finished"


def test_optuna_proposed_the_other_trial_within_the_space(sweep):
    result = sweep.result
    fixed = [GOOD, TOO_HIGH, CRASHES]
    proposed = [r for r in result.rows if r.params not in fixed]
    assert len(proposed) == 1
    for row in proposed:
        assert 1e-4 <= row.params["train.lr"] <= 1e-2
        assert row.params["method.lora.r"] in (4, 8)
        assert 0 <= row.params["method.lora.dropout"] <= 0.1
        assert row.status == "finished" or row.status == "stopped early"


def test_mlflow_has_the_parent_run_child_runs_and_the_best_tagged(sweep, mlflow_uri):
    from mlflow import MlflowClient

    result = sweep.result
    client = MlflowClient(mlflow_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["ember.best_trial"] == result.best.trial_id
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    trained = [r for r in result.rows if r.status != "failed"]
    assert {c.data.tags["ember.trial"] for c in children} == {r.trial_id for r in trained}
    best = [c for c in children if c.data.tags.get("ember.best_trial") == "true"]
    assert [c.data.tags["ember.trial"] for c in best] == [result.best.trial_id]
    stopped = next(c for c in children
                   if c.data.tags["ember.trial"] == by_params(result.rows, TOO_HIGH).trial_id)
    assert stopped.info.status == "KILLED"
    assert stopped.data.tags["ember.trial_status"] == "stopped early"
    assert "val_loss" in stopped.data.metrics


def test_best_config_is_a_ready_to_run_sft_job(sweep, tmp_path):
    from ember.models.adapters import check_adapter_folder
    from ember.training.job import load_job_config, run_sft

    result = sweep.result
    path = Path(result.best_config_path)
    assert path.read_text().startswith(f"# Best trial {result.best.trial_id}")
    assert load_job_config(str(path)).train.max_steps == STEPS  # the file as written
    # run for 2 of its steps (one evaluation, at the end): the claim is that the file runs
    # as an SFT job and exports a model, not how far it trains
    job = load_job_config(str(path), {"output": {"storage_path": str(tmp_path)},
                                      "train": {"max_steps": 2},
                                      "eval": {"sample_prompts": 0}})
    assert job.train.lr == pytest.approx(result.best.params["train.lr"])
    assert job.method.lora.r == result.best.params["method.lora.r"]
    outcome = run_sft(job)
    # a LoRA job exports its adapter (served on the base's engines by `ember serve-model`)
    assert check_adapter_folder(Path(outcome.model_dir)) == job.method.lora.r


def test_killed_sweep_is_restored_without_rerunning_ended_trials(sweep, mlflow_uri):
    from mlflow import MlflowClient

    assert "restoring sweep tiny-sweep" in sweep.restored_output
    assert len(sweep.ended_before_kill) >= 2
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("ember-sweeps-test")
    runs = client.search_runs([experiment.experiment_id], "tags.`ember.sweep` = 'tiny-sweep'")
    trial_runs = [r.data.tags["ember.trial"] for r in runs if "ember.trial" in r.data.tags]
    for trial_id in sweep.ended_before_kill:
        assert trial_runs.count(trial_id) == 1, f"trial {trial_id} ran again after the restore"
    trained = {r.trial_id for r in sweep.result.rows if r.status != "failed"}
    assert set(trial_runs) == trained and len(trained) == 3


def wait_for_ended_trials(folder: Path, process, count: int, timeout_s: float = 900) -> list[str]:
    """Trial ids Tune's saved experiment state marks TERMINATED (finished or stopped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        done = terminated_trials(folder)
        if len(done) >= count:
            return done
        time.sleep(1)
    raise AssertionError(f"{count} trials did not end in time")


def terminated_trials(folder: Path) -> list[str]:
    done = []
    for state in folder.glob("experiment_state-*.json"):
        try:
            data = json.loads(state.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        for trial_json, _ in data.get("trial_data", []):
            trial = json.loads(trial_json)
            if trial.get("status") == "TERMINATED":
                done.append(trial["trial_id"])
    return done
