"""What an ingestion shows while it runs: one live line from Ember, Ray's logs in a file.

Design choices:
- The pipeline's stages report to a small Ray actor (`IngestProgress`, no CPU):
  read tasks say "file read, N chunks", the Milvus sink says "N chunks
  written". The driver polls it and draws one line: files, chunks, chunks/s,
  ETA. Fire-and-forget calls, a few per file and per upsert batch: nothing the
  pipeline waits on.
- The ETA extrapolates the chunks still to come from the bytes not yet read
  (chunks per byte of the files read so far), at the write rate over the last
  `RATE_WINDOW_S` of writes: from a write at least that old (or the first
  one), its own chunks left out, to the latest. Writes come in bursts, one per
  embedded block from each actor, and several actors land their first blocks
  within a second of each other (embedded before any clock started), so no
  rate is shown until the window spans `RATE_SPAN_S`: a rate from the first
  two bursts read as 1,081 chunks/s.
- On a terminal the line is redrawn in place; in a log (CI, `ray job submit`)
  a line is printed every `LOG_EVERY_S` seconds instead.
- Ray's and Ray Data's own log lines (cluster start, execution plans, worker
  warnings) and progress bars go to a file in the run's folder, named once
  (`ember.ray_session.ray_logs_to`, shared with batch jobs).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import ray

LOG_EVERY_S = 10.0
RATE_WINDOW_S = 60.0
RATE_SPAN_S = 30.0
POLL_S = 0.5


class WriteLog:
    """(time, chunks written by then) of recent writes: one at least `RATE_WINDOW_S`
    older than the latest stays as the rate's base, older ones are dropped."""

    def __init__(self) -> None:
        self._writes: deque[tuple[float, int]] = deque()

    def add(self, when: float, total: int) -> None:
        self._writes.append((when, total))
        while len(self._writes) > 1 and self._writes[1][0] <= when - RATE_WINDOW_S:
            self._writes.popleft()

    def base(self) -> tuple[float | None, int]:
        return self._writes[0] if self._writes else (None, 0)


@ray.remote(num_cpus=0)
class IngestProgress:
    def __init__(self) -> None:
        self.files_read = self.bytes_read = self.chunks_read = self.chunks_written = 0
        self.last_write: float | None = None
        self._writes = WriteLog()

    def file_read(self, nbytes: int, chunks: int) -> None:
        self.files_read += 1
        self.bytes_read += nbytes
        self.chunks_read += chunks

    def written(self, chunks: int) -> None:
        self.chunks_written += chunks
        self.last_write = time.time()
        self._writes.add(self.last_write, self.chunks_written)

    def snapshot(self) -> dict:
        state = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        base_write, base_chunks = self._writes.base()
        return {**state, "base_write": base_write, "base_chunks": base_chunks}


@dataclass
class Totals:
    files: int
    bytes: int


def describe(state: dict, totals: Totals) -> str:
    """`3/6 files, 40/52 chunks, 12.1 chunks/s, ETA 1s` from a snapshot."""
    written = state["chunks_written"]
    expected = _expected_chunks(state, totals)
    line = f"{state['files_read']}/{totals.files} files read, {written}/{expected} chunks written"
    if state["last_write"] is None:
        return line + " (starting workers, loading the embedder)"
    span = state["last_write"] - state["base_write"]
    rate = (written - state["base_chunks"]) / span if span >= RATE_SPAN_S else 0.0
    if rate <= 0:
        done = isinstance(expected, int) and written >= expected
        return line if done else line + " (measuring the rate)"
    eta = max(expected - written, 0) / rate
    return line + f", {rate:.1f} chunks/s, ETA {_duration(eta)}"


def _expected_chunks(state: dict, totals: Totals) -> str | int:
    if not state["bytes_read"]:
        return "?"
    per_byte = state["chunks_read"] / state["bytes_read"]
    return state["chunks_read"] + round(max(totals.bytes - state["bytes_read"], 0) * per_byte)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_with_progress(work: Callable[[], object], actor, totals: Totals, out=None):
    """Run `work()` in a thread while drawing the progress line; return its result."""
    out = out or sys.stdout
    live = out.isatty()
    result: dict = {}

    def target():
        try:
            result["value"] = work()
        except BaseException as exc:  # re-raised on the caller's thread below
            result["error"] = exc

    thread = threading.Thread(target=target, name="ember-ingest", daemon=True)
    thread.start()
    last_print = time.monotonic()
    while thread.is_alive():
        thread.join(POLL_S)
        line = describe(ray.get(actor.snapshot.remote()), totals)
        if live:
            out.write(f"\r\033[K  {line}")
            out.flush()
        elif time.monotonic() - last_print >= LOG_EVERY_S:
            print(f"  {line}", file=out, flush=True)
            last_print = time.monotonic()
    final = describe(ray.get(actor.snapshot.remote()), totals)
    out.write(f"\r\033[K  {final}\n" if live else f"  {final}\n")
    out.flush()
    if "error" in result:
        raise result["error"]
    return result.get("value")
