"""Full fine-tuning through Ray Train, for real: FSDP2 and DeepSpeed over two workers.

Both use a small model built from the embedded SmolLM2's config (2 layers, random
weights, its tokenizer) so each run takes seconds. The full FSDP2 run is also the one
in which a worker is SIGKILLed and replaced, so its checks (loss, weights, checkpoint,
MLflow) hold across a restart; the crash test resumes from what it left. LoRA and
QLoRA, and serving their result, are in test_training.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import REPO
from tests.integration.training_support import (
    FAST,
    JOBS,
    TINY_MODEL,
    job,
    mlflow_client,
    run,
    tensors,
)

if TYPE_CHECKING:
    from ember.training.config import SFTJobConfig


# --- full fine-tuning, FSDP2 over two workers, one of them killed and replaced ------------

# 30 steps, a checkpoint every 5: the kill lands after the first checkpoint is recorded and
# well before the end (the state API calls that find the worker take a moment), and the
# replaced worker group resumes from a recorded checkpoint.
FULL_RUN = {"name": "tiny-full", "model": json.dumps(TINY_MODEL),
            "tracking.register_as": "tiny-full", "failure.max_failures": "1",
            "train.max_steps": "30", "train.lr": "3e-3", "train.checkpoint_every": "5",
            "train.eval_every": "0", "train.log_every": "1", "train.eval_batches": "3",
            "eval.sample_prompts": "0"}
FULL_STEPS = 30


@dataclass
class KilledRun:
    """A `python -m train_jobs.sft` run in which one Ray Train worker was SIGKILLed."""

    config: SFTJobConfig  # what the job read (the same file and --set values)
    output: str  # the job's stdout and stderr, worker lines included
    killed_pid: int
    run_dir: Path  # Ray Train's folder of the run: <storage_path>/<name>

    def printed(self, label: str) -> str:
        """A value of the job's closing summary (`SFTResult.format`), e.g. "checkpoint"."""
        found = re.findall(rf"^{re.escape(label)} *: (\S+)", self.output, re.MULTILINE)
        assert found, f"no '{label} :' line in the job's output:\n{self.output[-3000:]}"
        return found[-1]

    def ray_log(self) -> str:
        """The run's log of Ray's output (worker lines with Ray's "(pid=N)" prefixes), whose
        path the job's first line names: the terminal keeps Ember's lines only."""
        found = re.search(r"output for this run: (\S+)", self.output)
        assert found, self.output[-3000:]
        return Path(found.group(1)).read_text()

    @property
    def resumed_step(self) -> int:
        """The step of the checkpoint the replaced worker group resumed from."""
        resumed = [line for line in self.output.splitlines()
                   if "resumed from the checkpoint" in line]
        assert resumed, self.output[-3000:]
        return int(resumed[0].rsplit(" ", 1)[1])


@pytest.fixture(scope="module")
def full_run(ray_cluster, tmp_path_factory, mlflow_uri) -> KilledRun:
    """`python -m train_jobs.sft`, full FSDP2, with a worker SIGKILLed after the first
    checkpoint; the job must still succeed (a failed one fails every test that reads it)."""
    from ember.config.loading import parse_set_overrides
    from ember.training.job import load_job_config

    store = tmp_path_factory.mktemp("full") / "store"
    sets = [f"{key}={value}" for key, value in {
        **FULL_RUN, "output.storage_path": str(store), "tracking.uri": mlflow_uri}.items()]
    path = str(JOBS / "sft-full-fsdp2-cpu.yaml")
    config = load_job_config(path, parse_set_overrides(sets))  # as train_jobs.sft reads it
    command = [sys.executable, "-m", "train_jobs.sft", "--config", path]
    for pair in sets:
        command += ["--set", pair]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        killed_pid = kill_a_worker_after(store / config.name / "checkpoint_000005", process)
        output, _ = process.communicate(timeout=600)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, output[-3000:]
    return KilledRun(config, output, killed_pid, store / config.name)


def registered(checkpoint: Path) -> bool:
    """Whether Ray Train's controller has recorded `checkpoint` (not only its files landed):
    only a recorded checkpoint is handed to a restarted worker group."""
    snapshot = checkpoint.parent / "checkpoint_manager_snapshot.json"
    try:
        return checkpoint.name in snapshot.read_text()
    except FileNotFoundError:
        return False


def kill_a_worker_after(checkpoint: Path, process, timeout_s: float = 300) -> int:
    """SIGKILL one Ray Train worker of the job `process` drives, once `checkpoint` exists."""
    from ray.util.state import list_actors, list_jobs

    deadline = time.monotonic() + timeout_s
    while not registered(checkpoint):
        assert process.poll() is None, "the job ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    job_id = next(j.job_id for j in list_jobs()
                  if j.driver_info and int(j.driver_info.pid) == process.pid)
    workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"),
                                   ("state", "=", "ALIVE"), ("job_id", "=", job_id)])
    assert len(workers) == 2, workers
    pid = workers[-1].pid
    os.kill(pid, signal.SIGKILL)
    return pid


def test_full_fsdp2_loss_falls_and_every_weight_trains(full_run, mlflow_uri):
    import torch
    from ember.training.modeling import build_base_model

    # the job's closing metrics (SFTResult.metrics, logged as final_*): the base model's
    # validation loss, measured before training and kept in the checkpoint across the
    # restart, and the tuned model's at the last step
    metrics = mlflow_client(mlflow_uri).get_run(full_run.printed("mlflow run")).data.metrics
    assert metrics["final_val_loss"] < metrics["final_base_val_loss"] - 0.05
    model = build_base_model(full_run.config, "cpu")  # seeded: the job's start
    initial = model.state_dict()
    trained = tensors(Path(full_run.printed("model")) / "model.safetensors")
    trainable, aliases = parameter_names(model)
    exported = set(trained) - set(aliases)
    assert exported == trainable, (f"not exported: {sorted(trainable - exported)}; "
                                   f"not parameters: {sorted(exported - trainable)}")
    # a tied parameter's alias (lm_head.weight: SmolLM2 ties it to the embeddings) may be
    # written too, as a copy: then it holds the same values
    for alias, name in aliases.items():
        assert alias not in trained or torch.equal(trained[alias], trained[name]), alias
    unchanged = [name for name, t in trained.items() if torch.equal(t, initial[name])]
    assert not unchanged, f"weights that did not train: {unchanged}"


def parameter_names(model) -> tuple[set[str], dict[str, str]]:
    """(the trainable parameters' names, {alias: name} for parameters shared under two)."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return trainable, {alias: first for first, *rest in names.values() for alias in rest}


def test_full_fsdp2_checkpoint_holds_shards_state_and_export(full_run):
    checkpoint = Path(full_run.printed("checkpoint"))
    assert checkpoint.name == f"checkpoint_{FULL_STEPS:06d}"
    assert sorted(os.listdir(checkpoint / "dcp")) == [".metadata", "__0_0.distcp",
                                                      "__1_0.distcp"]
    assert {"trainer_state.json", "scheduler.pt", "export"} <= set(os.listdir(checkpoint))
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(
        os.listdir(checkpoint / "export"))
    # num_to_keep=2, also over the checkpoints written again after the restart
    assert sorted(p.name for p in checkpoint.parent.glob("checkpoint_0*")) == [
        "checkpoint_000025", "checkpoint_000030"]


def test_full_fsdp2_mlflow_run_has_params_metrics_artifacts_and_version(full_run, mlflow_uri):
    client = mlflow_client(mlflow_uri)
    run_id = full_run.printed("mlflow run")
    run_ = client.get_run(run_id)
    assert run_.info.status == "FINISHED"
    assert run_.data.params["method.name"] == "full"
    assert run_.data.params["scaling.num_workers"] == "2"
    assert {"loss", "lr", "tokens_per_s", "grad_norm", "val_loss", "val_perplexity",
            "base_val_perplexity"} <= set(run_.data.metrics)
    # the loss of every step, in the order logged: up to where the first worker group
    # stopped, then again from the step after the checkpoint the new group resumed from
    history = client.get_metric_history(run_id, "loss")
    steps = [m.step for m in sorted(history, key=lambda m: (m.timestamp, m.step))]
    resumed = full_run.resumed_step
    first_attempt = len(steps) - (FULL_STEPS - resumed)
    assert first_attempt >= resumed, steps
    assert steps == [*range(1, first_attempt + 1), *range(resumed + 1, FULL_STEPS + 1)], steps
    artifacts = {a.path for a in client.list_artifacts(run_id, "model")}
    assert "model/model.safetensors" in artifacts
    assert {a.path for a in client.list_artifacts(run_id, "config")} == {"config/job.yaml"}
    version = client.get_model_version("tiny-full", "1")
    assert version.run_id == run_id
    assert full_run.printed("registered") == "models:/tiny-full/1"


# --- DeepSpeed ZeRO-2 over two workers ---------------------------------------------------


def test_deepspeed_zero2_trains_and_checkpoints_per_rank(ray_cluster, tmp_path, mlflow_uri):
    config = job("sft-deepspeed-cpu.yaml", tmp_path, mlflow_uri, name="tiny-ds",
                 model=TINY_MODEL, tracking={"register_as": None}, eval={"sample_prompts": 0},
                 train={"max_steps": 6, "lr": 3e-3, "eval_every": 0, "checkpoint_every": 0,
                        **FAST})
    result = run(config)
    assert result.metrics["val_loss"] < result.metrics["base_val_loss"] - 0.05
    state = Path(result.checkpoint) / "deepspeed" / "state"
    files = set(os.listdir(state))
    assert {"mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
            "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files
    assert (Path(result.model_dir) / "model.safetensors").is_file()


# --- failures: a killed worker, a crash ----------------------------------------------------


def test_killed_worker_is_replaced_and_training_resumes(full_run, mlflow_uri):
    """The full FSDP2 run: the job succeeded (`full_run` asserts exit status 0) after one
    of its workers was killed."""
    # it was one of this job's workers: Ray's lines from it are in the run's log
    assert f"pid={full_run.killed_pid})" in full_run.ray_log()
    resumed_step = full_run.resumed_step
    assert 5 <= resumed_step < FULL_STEPS and resumed_step % 5 == 0
    final = full_run.run_dir / f"checkpoint_{FULL_STEPS:06d}"
    assert (final / "export" / "model.safetensors").is_file()
    history = mlflow_client(mlflow_uri).get_metric_history(full_run.printed("mlflow run"),
                                                           "resumed_from_step")
    assert [int(m.value) for m in history] == [resumed_step]


def test_crash_keeps_last_checkpoint_and_marks_run_failed(full_run, mlflow_uri, tmp_path):
    """Resuming the full FSDP2 run with a model shape its checkpoint cannot load: every
    attempt crashes."""
    from ray.train import TrainingFailedError

    run_dir = full_run.run_dir
    before = checkpoint_files(run_dir)
    config = job("sft-full-fsdp2-cpu.yaml", run_dir.parent.parent, mlflow_uri,
                 name=full_run.config.name, failure={"max_failures": 0},
                 model={**TINY_MODEL, "config_overrides": {**TINY_MODEL["config_overrides"],
                                                           "intermediate_size": 96}},
                 output={"storage_path": str(run_dir.parent)},
                 train={"max_steps": 40, "checkpoint_every": 5, "eval_every": 0, **FAST})
    with pytest.raises(TrainingFailedError):
        run(config)
    assert checkpoint_files(run_dir) == before
    client = mlflow_client(mlflow_uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id],
                              f"tags.`ember.job` = '{config.name}'", order_by=["start_time DESC"])
    assert runs[0].info.status == "FAILED"


def checkpoint_files(run_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in run_dir.glob("checkpoint_*/**/*") if p.is_file()}
