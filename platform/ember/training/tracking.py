"""MLflow for fine-tuning jobs: one run per job, metrics from rank 0, a registered model.

The driver (`train_jobs.sft`) owns the run: it creates it with the flattened job
config as params, hands its id to the workers, logs the exported model as
artefacts, registers a model version, and marks the run FAILED when training
raises, so a crashed job never reads as finished. Rank 0 logs per-step metrics
straight to the same run (`WorkerTracker`).

Default store: SQLite plus an artefact folder in Ember's home, so MLflow works
with nothing to start; `tracking.uri` points at an MLflow server on a cluster
(a SQLite file only works where every node sees the same disk).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ember.config.paths import default_tracking_uri

RUN_STATUS_FAILED = "FAILED"


def artifact_root_for(uri: str) -> str | None:
    """Artefacts beside a local SQLite store; an MLflow server picks its own (None)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}}` -> `{"a.b": "1"}`: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


class JobTracker:
    """The driver's side: the run's lifecycle, params, artefacts and registry."""

    def __init__(self, uri: str | None, experiment: str) -> None:
        from mlflow import MlflowClient

        self.uri = uri or default_tracking_uri()
        self.client = MlflowClient(self.uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=artifact_root_for(self.uri)))
        self.run_id: str | None = None

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(k, v[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 per batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])
        return self.run_id

    def worker_settings(self) -> dict[str, str]:
        return {"uri": self.uri, "run_id": self.run_id}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        WorkerTracker(self.uri, self.run_id).log_metrics(metrics, step)

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def register(self, name: str, artifact_path: str) -> int:
        """A new version of registered model `name` pointing at this run's artefacts."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{artifact_path}"
        version = self.client.create_model_version(name, source=source, run_id=self.run_id)
        return int(version.version)

    def describe(self, name: str, version: int, text: str) -> None:
        """The registered version's description (MLflow's model page shows it)."""
        self.client.update_model_version(name, str(version), description=text)

    def finish(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, RUN_STATUS_FAILED if failed else "FINISHED")


class WorkerTracker:
    """Rank 0's side: metrics into an existing run."""

    def __init__(self, uri: str, run_id: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, int | float)]
        if items:
            self.client.log_batch(self.run_id, metrics=items)
