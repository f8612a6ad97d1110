"""A Ray Tune sweep over Ember's SFT job: Optuna TPE proposes, ASHA stops, MLflow records.

The pattern Ray 2.60 documents for tuning Ray Train V2 trainers: each Tune
trial runs a small driver function that starts its own `TorchTrainer` (here:
`run_sft`, the same code as `python -m train_jobs.sft`) with a
`TuneReportCallback` that forwards the workers' reports to Tune. Only reports
that carry the metric (the evaluations) are forwarded, so ASHA's time unit is
"evaluations": `grace_period: 1` can stop a trial after its first one.

Trials keep no weights (their job is to rank configs); the best one comes
back as a ready-to-run SFT config. Interrupted sweeps resume with
`Tuner.restore`: finished trials are not run again.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ember.config.loading import ConfigError, deep_merge, load_yaml, validate
from ember.config.paths import ember_home
from ember.training.config import SFTJobConfig
from ember.tuning.config import Param, SweepConfig

STATE_FILE = "ember-sweep.json"  # the parent MLflow run id, for a restored sweep
# A trial's own function only waits on its TorchTrainer, whose workers hold the
# real resources; a small CPU share keeps Tune from counting it as a whole core.
TRIAL_DRIVER_CPU = 0.1


@dataclass
class TrialRow:
    trial_id: str
    status: str  # finished | stopped early | failed
    params: dict[str, Any]
    evaluations: int
    metric: float | None
    run_id: str | None = None


@dataclass
class SweepResult:
    rows: list[TrialRow]
    best: TrialRow | None
    best_config_path: str | None
    parent_run_id: str | None

    def summary(self, metric: str) -> str:
        """The trial table, then the best trial and how to run its config."""
        if not self.best_config_path:
            return self.table(metric) + "\nno trial finished; no best config written"
        return (f"{self.table(metric)}\nbest trial {self.best.trial_id}: {metric} "
                f"{self.best.metric:.4f}; its job config: {self.best_config_path}\n"
                f"run it: python -m train_jobs.sft --config {self.best_config_path}")

    def table(self, metric: str) -> str:
        names = sorted({k for r in self.rows for k in r.params})
        header = ["trial", "status", *names, "evals", metric]
        lines = [" | ".join(header), " | ".join("---" for _ in header)]
        for r in self.rows:
            best = " *" if self.best and r.trial_id == self.best.trial_id else ""
            values = [_short(r.params.get(n)) for n in names]
            score = "-" if r.metric is None else f"{r.metric:.4f}"
            lines.append(" | ".join([r.trial_id + best, r.status, *values, str(r.evaluations),
                                     score]))
        return "\n".join(lines)


def load_sweep_config(path: str, overrides: dict | None = None) -> SweepConfig:
    config = validate(SweepConfig, deep_merge(load_yaml(path), overrides or {}), source=path)
    if config.storage_path:  # trials run in Tune's folders: pin it to this directory
        config.storage_path = str(Path(config.storage_path).expanduser().resolve())
    trial_job(config, {})  # the base job with the overrides must itself be valid
    return config


def storage_dir(config: SweepConfig) -> Path:
    return Path(config.storage_path or ember_home() / "tune").expanduser().resolve()


# --- the job each trial runs -------------------------------------------------------------------


def job_dict(config: SweepConfig, params: dict[str, Any], root: str | None = None) -> dict:
    """The base SFT job + the sweep's overrides + one trial's parameters.

    Relative paths (the base job, its dataset) are relative to `root`, the sweep
    driver's working directory: trials run in Tune's own folders.
    """
    base = Path(root or ".") / config.base_job
    data = deep_merge(deep_merge(load_yaml(base), config.overrides), unflatten(params))
    path = (data.get("data") or {}).get("path")
    if root and path and not Path(path).is_absolute():
        data["data"]["path"] = str(Path(root) / path)
    return data


def trial_job(config: SweepConfig, params: dict[str, Any], name: str | None = None,
              root: str | None = None) -> SFTJobConfig:
    """What a trial trains: no weights kept, no registration, evaluations reported."""
    data = job_dict(config, params, root)
    train = data.setdefault("train", {})
    if not train.get("eval_every"):
        raise ConfigError(f"{config.base_job}: a sweep needs train.eval_every > 0 (ASHA "
                         f"compares trials at evaluations)")
    train.update(checkpoint_at_end=False, checkpoint_every=0)
    data["tracking"] = {**data.get("tracking", {}), "register_as": None,
                        "experiment": config.tracking.experiment,
                        "enabled": config.tracking.enabled, "uri": config.tracking.uri}
    data["eval"] = {**data.get("eval", {}), "sample_prompts": 0}
    data["name"] = name or data.get("name", config.name)
    return validate(SFTJobConfig, data, source=f"sweep {config.name} trial {params}")


def evaluations(job: SFTJobConfig, batches_per_epoch: int | None = None) -> int:
    steps = job.train.max_steps or math.ceil((job.train.epochs or 1) * (batches_per_epoch or 1))
    return math.ceil(steps / job.train.eval_every)


def unflatten(params: dict[str, Any]) -> dict:
    nested: dict = {}
    for key, value in params.items():
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


def run_trial(params: dict[str, Any], sweep: dict, parent_run_id: str | None,
              root: str) -> None:
    """A Tune trial: one SFT job through Ray Train, its evaluations reported to Tune."""
    from ray import tune

    from ember.training.job import run_sft

    config = SweepConfig.model_validate(sweep)
    trial_id = tune.get_context().get_trial_id()
    job = trial_job(config, params, name=f"{config.name}-{trial_id}", root=root)
    job = job.model_copy(update={"output": job.output.model_copy(
        update={"storage_path": str(storage_dir(config) / config.name / "train")})})
    tags = {"ember.sweep": config.name, "ember.trial": trial_id}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run_sft(job, callbacks=[_evaluation_reporter(config.search.metric)], run_tags=tags)


def _evaluation_reporter(metric: str):
    from ray.tune.integration.ray_train import TuneReportCallback

    class EvaluationReporter(TuneReportCallback):
        """Forward only the reports that hold `metric`: one Tune iteration per evaluation."""

        def after_report(self, run_context, metrics, checkpoint):
            if metrics and metric in metrics[0]:
                super().after_report(run_context, metrics, None)

    return EvaluationReporter()


# --- the sweep -------------------------------------------------------------------------------


def tune_space(space: dict[str, Param]) -> dict:
    from ray import tune

    build = {"loguniform": lambda p: tune.loguniform(p.low, p.high),
             "uniform": lambda p: tune.uniform(p.low, p.high),
             "randint": lambda p: tune.randint(int(p.low), int(p.high)),
             "choice": lambda p: tune.choice(p.values)}
    return {name: build[p.type](p) for name, p in space.items()}


def concurrency(config: SweepConfig, job: SFTJobConfig) -> int:
    """Trials at once: what the cluster's free CPUs (or GPUs) fit, unless the config says.

    Free, not total: on a cluster that also serves, the Serve replicas keep theirs.
    """
    if config.search.max_concurrent_trials:
        return config.search.max_concurrent_trials
    import ray

    return trials_that_fit(ray.available_resources(), job)


def trials_that_fit(free: dict[str, float], job: SFTJobConfig) -> int:
    key = "GPU" if job.scaling.use_gpu else "CPU"
    per_trial = job.scaling.resources_per_worker.get(key, 1) * job.scaling.num_workers
    if key == "CPU":
        per_trial += TRIAL_DRIVER_CPU
    return max(1, int(free.get(key, 1) // per_trial))


def build_tuner(config: SweepConfig, parent_run_id: str | None):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    job = trial_job(config, {})
    trainable = _trainable(config, parent_run_id)
    path = storage_dir(config) / config.name
    if tune.Tuner.can_restore(str(path)):
        print(f"[ember.tune] restoring sweep {config.name} from {path}", flush=True)
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=False)
    search = OptunaSearch(metric=config.search.metric, mode=config.search.mode,
                          seed=config.search.seed,
                          points_to_evaluate=config.search.points_to_evaluate or None)
    scheduler = None
    if config.asha.enabled:
        scheduler = ASHAScheduler(metric=config.search.metric, mode=config.search.mode,
                                  grace_period=config.asha.grace_period,
                                  reduction_factor=config.asha.reduction_factor,
                                  max_t=config.asha.max_t or evaluations(job))
    tune_config = tune.TuneConfig(
        search_alg=search, scheduler=scheduler, num_samples=config.search.num_samples,
        max_concurrent_trials=concurrency(config, job), time_budget_s=config.time_budget_s)
    return tune.Tuner(trainable, param_space=tune_space(config.search_space),
                      tune_config=tune_config,
                      run_config=tune.RunConfig(name=config.name,
                                                storage_path=str(storage_dir(config)),
                                                verbose=1))


def _trainable(config: SweepConfig, parent_run_id: str | None):
    from ray import tune

    with_params = tune.with_parameters(run_trial, sweep=config.model_dump(mode="json"),
                                       parent_run_id=parent_run_id, root=os.getcwd())
    return tune.with_resources(with_params, {"CPU": TRIAL_DRIVER_CPU})


def run_sweep(config: SweepConfig) -> SweepResult:
    from ember.ray_session import connect_ray

    connect_ray()
    folder = storage_dir(config) / config.name
    parent = _parent_run(config, folder)
    results = build_tuner(config, parent.run_id if parent else None).fit()
    rows = collect_rows(config, results)
    best = _best(config, rows)
    best_path = write_best_config(config, best) if best else None
    if parent is not None:
        _record_sweep(config, parent, rows, best, best_path)
    return SweepResult(rows, best, str(best_path) if best_path else None,
                       parent.run_id if parent else None)


def collect_rows(config: SweepConfig, results) -> list[TrialRow]:
    max_t = config.asha.max_t or evaluations(trial_job(config, {}))
    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or _trial_id_from_path(result.path)
        evals = int(metrics.get("training_iteration", 0))
        if result.error is not None:
            status = "failed"
        elif evals < max_t:
            status = "stopped early"
        else:
            status = "finished"
        params = dict(result.config or {}) or _params_file(result.path)
        rows.append(TrialRow(str(trial_id), status, params, evals,
                             metrics.get(config.search.metric)))
    return sorted(rows, key=lambda r: r.trial_id)


def _params_file(trial_dir: str | None) -> dict[str, Any]:
    """The trial's parameters as Tune saved them in its folder: a restored sweep's trial
    that failed before reporting has no `config` in its result (seen with Ray 2.60)."""
    path = Path(trial_dir or "") / "params.json"
    try:
        return json.loads(path.read_text()) if trial_dir else {}
    except (OSError, ValueError):
        return {}


def _best(config: SweepConfig, rows: list[TrialRow]) -> TrialRow | None:
    """Best among trials that ran to the end (a stopped one never saw its last steps)."""
    done = [r for r in rows if r.status == "finished" and r.metric is not None]
    if not done:
        return None
    pick = min if config.search.mode == "min" else max
    return pick(done, key=lambda r: r.metric)


def write_best_config(config: SweepConfig, best: TrialRow) -> Path:
    path = Path(config.best_config_out or storage_dir(config) / config.name / "best-job.yaml")
    data = job_dict(config, best.params)
    data["name"] = f"{config.name}-best"
    validate(SFTJobConfig, data, source=f"best trial {best.trial_id}")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Best trial {best.trial_id} of sweep {config.name}: "
              f"{config.search.metric} {best.metric:.4f}.\n"
              f"# Parameters: {json.dumps(best.params)}\n#\n"
              f"#   python -m train_jobs.sft --config {path}\n\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path


# --- MLflow: a parent run for the sweep, a child run per trial --------------------------------


def _parent_run(config: SweepConfig, folder: Path):
    if not config.tracking.enabled:
        return None
    from ember.training.tracking import JobTracker

    tracker = JobTracker(config.tracking.uri, config.tracking.experiment)
    state = folder / STATE_FILE
    if state.is_file():  # a restored sweep keeps its parent run
        tracker.run_id = json.loads(state.read_text())["parent_run_id"]
        tracker.client.update_run(tracker.run_id, status="RUNNING")
        return tracker
    tracker.start(config.name, config.model_dump(mode="json"),
                  {"ember.sweep": config.name, "ember.kind": "sweep"})
    folder.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"parent_run_id": tracker.run_id}))
    return tracker


def _record_sweep(config: SweepConfig, parent, rows: list[TrialRow], best, best_path) -> None:
    client = parent.client
    children = {r.data.tags.get("ember.trial"): r for r in client.search_runs(
        [parent.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.run_id}'")}
    for row in rows:
        child = children.get(row.trial_id)
        if child is None:
            continue
        row.run_id = child.info.run_id
        client.set_tag(row.run_id, "ember.trial_status", row.status)
        if row.status == "stopped early":
            # ASHA ended its driver mid-fit, which the job records as FAILED (or
            # leaves RUNNING); the scheduler stopped it, nothing failed.
            client.set_terminated(row.run_id, "KILLED")
    if best is not None and best.run_id:
        client.set_tag(best.run_id, "ember.best_trial", "true")
        parent.log_metrics({f"best_{config.search.metric}": best.metric})
        client.set_tag(parent.run_id, "ember.best_trial", best.trial_id)
    if best_path is not None:
        client.log_artifact(parent.run_id, str(best_path), "best")
    parent.log_text(SweepResult(rows, best, None, None).table(config.search.metric),
                    "trials.md")
    parent.finish()


def _trial_id_from_path(path: str) -> str:
    """A trial that failed before reporting has no metrics; its folder name holds its id
    (`<trainable>_<8 hex>_<5 digits>_...`)."""
    import re

    found = re.search(r"_([0-9a-f]{5,}_\d{5})", Path(path).name)
    return found.group(1) if found else Path(path).name


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
