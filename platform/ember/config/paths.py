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


def run_dir() -> Path:
    """State of the local cluster started by `ember up` (ports, logs)."""
    return ember_home() / "run"


def runs_dir() -> Path:
    """One folder per run of a job (ingestion, ...): its logs."""
    return ember_home() / "runs"


def new_run_folder(name: str) -> Path:
    """`runs_dir()/<name>-<time>-<pid>`, for one run's logs (created by whoever writes)."""
    import os
    import time

    return runs_dir() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
