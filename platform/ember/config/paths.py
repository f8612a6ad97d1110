"""Where Ember keeps its files: one home folder, overridable with EMBER_HOME.

Default `~/.cache/ember`, so a fresh clone, CI and a user's laptop all work
without configuration; a cluster points EMBER_HOME at shared storage.
"""

from __future__ import annotations

import os
from pathlib import Path


def ember_home() -> Path:
    return Path(os.environ.get("EMBER_HOME", Path.home() / ".cache" / "ember")).expanduser()


def models_dir() -> Path:
    return ember_home() / "models"


def data_dir() -> Path:
    return ember_home() / "data"


def default_tracking_uri() -> str:
    """MLflow's store when a job names none: SQLite in Ember's home (artefacts beside it)."""
    folder = ember_home() / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def cluster_state_dir() -> Path:
    """What `ember up` keeps about the local cluster it started (cluster.json, the Serve
    config it deployed with `--port`)."""
    return ember_home() / "run"


def run_logs_dir() -> Path:
    """One folder per run of a job (an ingestion, a batch): its logs."""
    return ember_home() / "runs"


def new_run_log_folder(name: str) -> Path:
    """`run_logs_dir()/<name>-<time>-<pid>`, for one run's logs (created by whoever writes)."""
    import os
    import time

    return run_logs_dir() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
