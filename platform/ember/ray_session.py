"""Joining the Ray cluster from a driver, and where Ray's own logs go while it runs.

Shared by every driver Ember starts (ingestion, fine-tuning, sweeps, batch jobs):
a bottom module, so none of them imports `ember up`'s code (`ember.cluster`) to
reach Ray. Design choices:
- `connect_ray` joins the running cluster (`ember up`, RAY_ADDRESS) and starts a
  local one only where there is none.
- Ray's and Ray Data's own log lines (cluster start, execution plans, worker
  warnings) and progress bars go to a file in the run's folder, named once;
  the terminal keeps Ember's own progress line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

LIBRARY_LOGGERS = ("ray", "ray.data", "ray.serve", "pymilvus")


def connect_ray(log_to_driver: bool = True) -> None:
    """Join the running cluster (`ember up`, RAY_ADDRESS), or start a local one.

    A local one gets at least 4 logical CPUs: an ingestion's read tasks,
    embedding actor and writes, or a training job's workers and driver tasks,
    must be schedulable at once on a 2-core machine.
    """
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address="auto", log_to_driver=log_to_driver)
    except ConnectionError:
        ray.init(log_to_driver=log_to_driver, num_cpus=max(4, os.cpu_count() or 1))


@contextmanager
def ray_logs_to(path: Path):
    """Send Ray's, Ray Data's and pymilvus' logs to `path` for the block's duration.

    Python loggers get a file handler in place of theirs. Ray's C++ core also
    writes warnings straight to the process's stderr (file descriptor 2), so
    that descriptor points at the file too until the block ends; an exception
    raised inside is re-raised after, onto the real stderr. And the driver's
    error listener thread prints raylet warnings ("N PYTHON worker processes
    have been started ...") to sys.stdout: writes from Ray's threads go to the
    file, everyone else's to the terminal.
    """
    import ray.data  # noqa: F401  (it configures its loggers on import: do that first)

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = {}
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate)
        logger.handlers = [handler]
        logger.propagate = False
    sys.stderr.flush()
    real_stderr = os.dup(2)
    os.dup2(handler.stream.fileno(), 2)
    real_stdout, sys.stdout = sys.stdout, _RayThreadsTo(handler.stream, sys.stdout)
    try:
        yield path
    finally:
        sys.stdout = real_stdout
        sys.stderr.flush()
        os.dup2(real_stderr, 2)
        os.close(real_stderr)
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        handler.close()


def quiet_ray_data() -> None:
    """No Ray Data progress bars on the terminal: Ember draws its own line."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False


class _RayThreadsTo:
    """sys.stdout stand-in: Ray's driver threads (named `ray_*`) write to `file`."""

    def __init__(self, file, terminal) -> None:
        self._file, self._terminal = file, terminal

    def _target(self):
        ray_thread = threading.current_thread().name.startswith("ray_")
        return self._file if ray_thread else self._terminal

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str):
        return getattr(self._terminal, name)
