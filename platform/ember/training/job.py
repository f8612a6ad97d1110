"""The driver of a fine-tuning job: data, MLflow run, Ray Train, export, evaluation.

`run_sft(config)` is what `python -m train_jobs.sft` and `ember train` call.
Order matters for what a failure leaves behind:
1. config and dataset are checked before Ray is touched (bad input costs nothing);
2. the MLflow run exists before any worker starts, and is marked FAILED if
   training raises (worker crash beyond `max_failures`, OOM), never FINISHED;
3. checkpoints live in Ray Train's storage (`output.storage_path/<name>`);
   rerunning the same job name resumes from the latest one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ember.config.loading import apply_env_overrides, deep_merge, load_yaml, validate
from ember.config.paths import ember_home
from ember.training.config import SFTJobConfig


@dataclass
class SFTResult:
    checkpoint: str
    model_dir: str
    metrics: dict
    run_id: str | None = None
    registered: str | None = None  # models:/NAME/VERSION
    samples: list[dict] = field(default_factory=list)

    def format(self) -> str:
        m = self.metrics
        lines = [f"checkpoint : {self.checkpoint}", f"model      : {self.model_dir}"]
        if "base_val_perplexity" in m and "val_perplexity" in m:
            lines.append(f"perplexity : base {m['base_val_perplexity']:.2f} -> tuned "
                         f"{m['val_perplexity']:.2f} (validation loss "
                         f"{m['base_val_loss']:.4f} -> {m['val_loss']:.4f})")
        if self.run_id:
            lines.append(f"mlflow run : {self.run_id}")
        if self.registered:
            lines.append(f"registered : {self.registered}  (serve it: ember serve-model "
                         f"{self.registered} --name NAME)")
        return "\n".join(lines)


def load_job_config(path: str, overrides: dict | None = None) -> SFTJobConfig:
    data = apply_env_overrides(deep_merge(load_yaml(path), overrides or {}), prefix="EMBER_SFT_")
    return validate(SFTJobConfig, data, source=path)


def storage_path(config: SFTJobConfig) -> Path:
    return Path(config.output.storage_path or ember_home() / "train").expanduser().resolve()


def run_sft_logged(config: SFTJobConfig) -> SFTResult:
    """`run_sft` as `ember train` and `python -m train_jobs.sft` run it: the terminal shows
    Ember's `[ember.train]` lines (the driver's and the workers'), and Ray's, Ray Train's
    and the libraries' own output (result dumps, loading bars, warnings) goes to the run's
    log file, named once."""
    from ember.config.paths import new_run_log_folder
    from ember.ray_session import ray_logs_to

    log = new_run_log_folder(f"train-{config.name}") / "ray.log"
    print(f"[ember.train] Ray's and the libraries' output for this run: {log}", flush=True)
    with ray_logs_to(log, keep="[ember."):
        return run_sft(config)


def run_sft(config: SFTJobConfig, callbacks: list | None = None,
            run_tags: dict[str, str] | None = None) -> SFTResult:
    """Run one job. `callbacks` are Ray Train callbacks (a Tune sweep passes its
    reporter); `run_tags` are added to the MLflow run (a sweep's parent run id)."""
    from ember.training.modeling import load_tokenizer

    prepared = None
    if config.data.synthetic is None:
        from ember.training.prepared_data import prepare_data

        prepared = prepare_data(config, load_tokenizer(config))
        print(f"[ember.train] dataset {config.data.path}: {len(prepared.train)} train, "
              f"{len(prepared.val)} validation examples\n{prepared.report_text}", flush=True)
    from ember.ray_session import connect_ray

    connect_ray()
    tracker = _start_tracking(config, prepared, run_tags or {})
    try:
        started = time.monotonic()
        result = _fit(config, prepared, tracker, callbacks or [])
        outcome = _after_training(config, result, prepared, tracker, time.monotonic() - started)
    except BaseException:
        if tracker is not None:
            tracker.finish(failed=True)
        raise
    if tracker is not None:
        tracker.finish()
    return outcome


def _start_tracking(config: SFTJobConfig, prepared, extra_tags: dict[str, str]):
    if not config.tracking.enabled:
        return None
    from ember.training.tracking import JobTracker

    tracker = JobTracker(config.tracking.uri, config.tracking.experiment)
    tags = {"ember.method": config.method.name, "ember.model": config.model.source,
            "ember.job": config.name, **extra_tags}
    tracker.start(config.name, config.model_dump(mode="json"), tags)
    tracker.log_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False),
                     "config/job.yaml")
    if prepared is not None:
        tracker.log_text(prepared.report_text, "data/validation_report.txt")
    print(f"[ember.train] MLflow run {tracker.run_id} at {tracker.uri}", flush=True)
    return tracker


def _fit(config: SFTJobConfig, prepared, tracker, callbacks: list):
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ember.training.loop import train_loop_per_worker

    loop_config = {"job": config.model_dump(mode="json"),
                   "mlflow": tracker.worker_settings() if tracker else None}
    if prepared is not None:
        loop_config.update(train_ref=ray.put(prepared.train), val_ref=ray.put(prepared.val))
    scaling = config.scaling
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker=scaling.resources_per_worker or None),
        run_config=RunConfig(
            name=config.name, storage_path=str(storage_path(config)),
            failure_config=FailureConfig(max_failures=config.failure.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks),
    )
    return trainer.fit()


def _after_training(config: SFTJobConfig, result, prepared, tracker,
                    seconds: float) -> SFTResult:
    import ray

    from ember.training.export import build_servable, format_samples, sample_answers

    if not config.train.checkpoint_at_end:  # a benchmark: metrics, nothing to export
        return SFTResult(result.checkpoint.path if result.checkpoint else "", "",
                         dict(result.metrics or {}))
    checkpoint = Path(result.checkpoint.path)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    metrics = {**{k.removeprefix("last_"): v for k, v in state.items()}, **result.metrics}
    target = storage_path(config) / config.name / "model"
    resources = {"num_cpus": 1, "num_gpus": 1 if config.scaling.use_gpu else 0}
    servable = ray.remote(**resources)(build_servable)
    model_dir = ray.get(servable.remote(config, checkpoint / "export", target))
    outcome = SFTResult(str(checkpoint), str(model_dir), metrics)
    held_out = _held_out_samples(config, prepared)
    if held_out:
        answers = ray.remote(**resources)(sample_answers)
        outcome.samples = ray.get(answers.remote(config, model_dir, [p for p, _ in held_out]))
        for row, (_, reference) in zip(outcome.samples, held_out, strict=True):
            row["reference"] = reference
        print("[ember.train] sample answers, base vs tuned:\n"
              + format_samples(outcome.samples), flush=True)
    if tracker is not None:
        _record(config, tracker, outcome, prepared, seconds)
    return outcome


def _held_out_samples(config: SFTJobConfig, prepared) -> list[tuple[list[dict], str | None]]:
    """(prompt, reference) of the first validation conversations: each up to its first user
    turn, and the assistant reply that follows it (None where none does)."""
    if prepared is None or config.eval.sample_prompts == 0:
        return []
    samples = []
    for row in prepared.val_examples[: config.eval.sample_prompts]:
        messages = row["messages"]
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        after = messages[first_user + 1: first_user + 2]
        reference = after[0]["content"] if after and after[0]["role"] == "assistant" else None
        samples.append((messages[: first_user + 1], reference))
    return samples


def _record(config: SFTJobConfig, tracker, outcome: SFTResult, prepared,
            seconds: float) -> None:
    """Metrics, the model, the sample answers and the model card into the MLflow run; the
    registered version (if any) carries the card as its description."""
    from ember.training.model_card import render_model_card, score_samples

    summary = {k: v for k, v in outcome.metrics.items() if isinstance(v, int | float)}
    tracker.log_metrics({f"final_{k}": v for k, v in summary.items()})
    scores = score_samples(outcome.samples)
    tracker.log_metrics({f"eval_{who}_{metric}": value for who, means in scores.items()
                         for metric, value in means.items()})
    tracker.log_artifacts(Path(outcome.model_dir), "model")
    if outcome.samples:
        tracker.log_text(json.dumps(outcome.samples, indent=1), "eval/sample_answers.json")
    outcome.run_id = tracker.run_id
    version = None
    if config.tracking.register_as:
        version = tracker.register(config.tracking.register_as, "model")
        outcome.registered = f"models:/{config.tracking.register_as}/{version}"
    card = render_model_card(config, outcome.metrics, outcome.samples,
                             prepared.report_text if prepared else "", seconds,
                             outcome.registered)
    tracker.log_text(card, "model_card.md")
    if version is not None:
        tracker.describe(config.tracking.register_as, version, card)
