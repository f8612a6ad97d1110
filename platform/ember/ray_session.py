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
import re
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

LIBRARY_LOGGERS = ("ray", "ray.data", "ray.serve", "ray.train", "ray.tune", "pymilvus")
# how Ray's driver marks a line a worker printed: "(RayTrainWorker pid=123, ip=...) ",
# coloured on a terminal
RAY_PREFIX = re.compile(r"^(\x1b\[[0-9;]*m)?\([^)]*pid=[^)]*\)(\x1b\[[0-9;]*m)?\s*")


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
def ray_logs_to(path: Path, keep: str | None = None):
    """Send Ray's, Ray Data's and pymilvus' logs to `path` for the block's duration.

    `keep`: worker output lines holding this tag (`[ember.train]`) still reach the
    terminal, without Ray's "(Actor pid=N)" prefix: Ember's own lines from its workers.

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
    # A StreamHandler over a file we own, not a FileHandler: a library that calls
    # logging.config.dictConfig while the block runs (pymilvus does on import) closes
    # every handler, and a FileHandler's close() would close the file under our feet.
    log_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in `finally`)
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = {}
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate)
        logger.handlers = [handler]
        logger.propagate = False
    sys.stderr.flush()
    real_stderr = os.dup(2)
    os.dup2(log_file.fileno(), 2)
    real_stdout, sys.stdout = sys.stdout, _RayThreadsTo(log_file, sys.stdout, keep)
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
        log_file.close()


def quiet_ray_data() -> None:
    """No Ray Data progress bars on the terminal: Ember draws its own line."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False


class _RayThreadsTo:
    """sys.stdout stand-in: Ray's driver threads (named `ray_*`) write to `file`, but for
    whole lines holding `keep`, which go to the terminal without Ray's actor prefix."""

    def __init__(self, file, terminal, keep: str | None = None) -> None:
        self._file, self._terminal, self._keep = file, terminal, keep
        self._partial = threading.local()  # a Ray thread's line so far (print writes in pieces)

    def write(self, text: str) -> int:
        if not threading.current_thread().name.startswith("ray_"):
            return self._terminal.write(text)
        if self._keep is None:
            return self._file.write(text)
        written = len(text)
        text = getattr(self._partial, "text", "") + text
        *lines, self._partial.text = text.split("\n")
        for line in lines:
            if self._keep in line:
                self._terminal.write(RAY_PREFIX.sub("", line) + "\n")
                self._terminal.flush()
            else:
                self._file.write(line + "\n")
        return written

    def flush(self) -> None:
        self._file.flush()
        self._terminal.flush()

    def __getattr__(self, name: str):
        return getattr(self._terminal, name)
