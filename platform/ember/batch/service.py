"""The OpenAI Batch API on the service: files, batches, and the job that runs them.

- `POST /v1/files` (purpose `batch`) stores an upload under `files_dir` and a row
  in the access database (`batch_files`); `GET /v1/files/{id}` and
  `/v1/files/{id}/content` give it back to the key that made it.
- `POST /v1/batches` checks the file (its lines, its one model, the endpoint)
  and starts a `BatchRunner`: a detached Ray actor, named after the batch, that
  runs `ember.batch.job.run_batch` (Ray Data LLM, a separate vLLM engine) on the
  same cluster and keeps the batch's row up to date. At most `max_running`
  batches run at once; later ones wait in `validating`.
- The row is the state of record: a service restart, or a runner that died,
  finds an unfinished batch without its actor on the next look and starts a new
  runner, which resumes from the results file (no finished line runs again).
- `POST /v1/batches/{id}/cancel` stops the runner; the results it wrote stay
  and become the batch's output and error files, as for a completed batch.
- A watchdog in the runner fails a batch that gets no result for `stall_timeout_s`
  (`start_timeout_s` before the first: the engine's start): an engine that died or
  hangs. Its finished lines become its output and error files, as for a cancel.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from ember.access.schema import BATCH_FILES, BATCHES

NAMESPACE = "ember"
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")
COMPLETION_WINDOW = "24h"


class BatchApiError(Exception):
    def __init__(self, status_code: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code, self.message, self.param = status_code, message, param


def runner_name(batch_id: str) -> str:
    return f"ember-batch-{batch_id}"


class BatchStore:
    """Rows of `batch_files` and `batches`, and the files' bytes on disk."""

    def __init__(self, database_url: str, files_dir: str | None) -> None:
        from ember.access.store import engine_for
        from ember.config.paths import ember_home

        self.database_url = database_url
        self.engine = engine_for(database_url)
        self.files_dir = Path(files_dir) if files_dir else ember_home() / "batches"

    # --- files ----------------------------------------------------------------
    def add_file(self, key_id: int | None, filename: str, purpose: str, content: bytes,
                 lines: int) -> dict:
        file_id = f"file-{uuid.uuid4().hex}"
        path = self.files_dir / f"{file_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(".part")
        scratch.write_bytes(content)
        os.replace(scratch, path)
        row = {"id": file_id, "key_id": key_id, "filename": filename[:256], "purpose": purpose,
               "bytes": len(content), "lines": lines, "path": str(path),
               "created_at": time.time()}
        with self.engine.begin() as db:
            db.execute(BATCH_FILES.insert().values(**row))
        return row

    def file(self, file_id: str, key_id: int | None) -> dict:
        with self.engine.connect() as db:
            row = db.execute(BATCH_FILES.select().where(BATCH_FILES.c.id == file_id)).first()
        if row is None or (key_id is not None and row.key_id != key_id):
            raise BatchApiError(404, f"no file '{file_id}'", "file_id")
        return dict(row._mapping)

    # --- batches --------------------------------------------------------------
    def add_batch(self, row: dict) -> None:
        with self.engine.begin() as db:
            db.execute(BATCHES.insert().values(**row))

    def batch(self, batch_id: str, key_id: int | None = None) -> dict:
        with self.engine.connect() as db:
            row = db.execute(BATCHES.select().where(BATCHES.c.id == batch_id)).first()
        if row is None or (key_id is not None and row.key_id != key_id):
            raise BatchApiError(404, f"no batch '{batch_id}'", "batch_id")
        return dict(row._mapping)

    def batches(self, key_id: int | None, limit: int) -> list[dict]:
        query = BATCHES.select().order_by(BATCHES.c.created_at.desc()).limit(limit)
        if key_id is not None:
            query = query.where(BATCHES.c.key_id == key_id)
        with self.engine.connect() as db:
            return [dict(r._mapping) for r in db.execute(query)]

    def update(self, batch_id: str, **values) -> None:
        with self.engine.begin() as db:
            db.execute(BATCHES.update().where(BATCHES.c.id == batch_id).values(**values))

    def update_counts(self, batch_id: str, completed: int, failed: int) -> None:
        """A running batch's counts (never over a cancelled or finished batch's final ones)."""
        with self.engine.begin() as db:
            db.execute(BATCHES.update().where(BATCHES.c.id == batch_id,
                                              BATCHES.c.status == "in_progress")
                       .values(completed=completed, failed=failed))

    def claim(self, batch_id: str, max_running: int) -> bool:
        """validating -> in_progress if fewer than `max_running` batches run."""
        with self.engine.begin() as db:
            running = db.execute(sa.select(sa.func.count()).select_from(BATCHES).where(
                BATCHES.c.status == "in_progress", BATCHES.c.id != batch_id)).scalar()
            if running >= max_running:
                return False
            done = db.execute(BATCHES.update().where(
                BATCHES.c.id == batch_id, BATCHES.c.status.in_(("validating", "in_progress"))
            ).values(status="in_progress", in_progress_at=time.time()))
            return done.rowcount == 1


def results_path(store: BatchStore, batch_id: str) -> Path:
    return store.files_dir / f"{batch_id}.results.jsonl"


def finalize(store: BatchStore, batch: dict, status: str) -> None:
    """Split the results into an output file (successes) and an error file, in input order."""
    from ember.batch.job import read_done
    from ember.batch.requests import is_ok

    source = Path(store.file(batch["input_file_id"], None)["path"])
    results = results_path(store, batch["id"])
    done = read_done(results)
    malformed = [] if status == "cancelled" else _malformed(results)
    ordered = [done[cid] for cid in _custom_ids(source) if cid in done] + malformed
    ok = [r for r in ordered if is_ok(r)]
    bad = [r for r in ordered if not is_ok(r)]
    values = {"status": status, "finished_at": time.time(), "completed": len(ok),
              "failed": len(bad)}
    for purpose_key, records in (("output_file_id", ok), ("error_file_id", bad)):
        if records:
            content = "".join(json.dumps(r) + "\n" for r in records).encode()
            row = store.add_file(batch["key_id"], f"{batch['id']}_{purpose_key[:-8]}.jsonl",
                                 "batch_output", content, len(records))
            values[purpose_key] = row["id"]
    store.update(batch["id"], **values)


def _custom_ids(source: Path) -> list[str]:
    ids = []
    for text in source.read_text().splitlines():
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("custom_id"), str):
            ids.append(data["custom_id"])
    return ids


def _malformed(results: Path) -> list[dict]:
    """Lines the job could not read at all (no custom_id): in the rewritten results."""
    if not results.is_file():
        return []
    records = [json.loads(t) for t in results.read_text().splitlines() if t.strip()]
    return [r for r in records if r.get("custom_id") is None]


def batch_object(row: dict) -> dict:
    """The OpenAI `batch` object of a row."""
    def stamp(key):
        return int(row[key]) if row.get(key) else None

    status = row["status"]
    return {
        "id": row["id"], "object": "batch", "endpoint": row["endpoint"],
        "errors": ({"object": "list", "data": [{"code": "batch_failed",
                                                "message": row["error"]}]}
                   if row.get("error") else None),
        "input_file_id": row["input_file_id"], "completion_window": COMPLETION_WINDOW,
        "status": status, "output_file_id": row.get("output_file_id"),
        "error_file_id": row.get("error_file_id"), "created_at": stamp("created_at"),
        "in_progress_at": stamp("in_progress_at"),
        "expires_at": int(row["created_at"]) + 86400,
        "completed_at": stamp("finished_at") if status == "completed" else None,
        "failed_at": stamp("finished_at") if status == "failed" else None,
        "cancelled_at": stamp("cancelled_at") if status == "cancelled" else None,
        "cancelling_at": stamp("cancelled_at"),
        "finalizing_at": None, "expired_at": None,
        "request_counts": {"total": row["total"], "completed": row["completed"],
                           "failed": row["failed"]},
        "metadata": row.get("metadata"), "model": row["model"],
    }


def file_object(row: dict) -> dict:
    return {"id": row["id"], "object": "file", "bytes": row["bytes"],
            "created_at": int(row["created_at"]), "filename": row["filename"],
            "purpose": row["purpose"], "status": "processed", "expires_at": None,
            "status_details": None}


# --- the runner -----------------------------------------------------------------------
class BatchRunner:
    """Runs one batch as a detached actor and keeps its row current."""

    def __init__(self, batch_id: str, database_url: str, files_dir: str, job: dict,
                 max_running: int, start_timeout_s: float = 1800,
                 stall_timeout_s: float = 600) -> None:
        self.store = BatchStore(database_url, files_dir)
        self.batch_id, self.job, self.max_running = batch_id, job, max_running
        self.timeouts = (start_timeout_s, stall_timeout_s)

    def run(self) -> str:
        """Run the batch, then end this detached actor (it would otherwise live on idle)."""
        import ray

        try:
            return self._run()
        finally:
            ray.actor.exit_actor()

    def _run(self) -> str:
        from ember.batch.job import BatchConfig, run_batch

        while not self.store.claim(self.batch_id, self.max_running):
            if self.store.batch(self.batch_id)["status"] not in ("validating", "in_progress"):
                return "not run"  # cancelled while waiting
            time.sleep(2)
        batch = self.store.batch(self.batch_id)
        watchdog = _Watchdog(*self.timeouts, on_expiry=lambda why: self._stalled(batch, why))
        try:
            with _CountsToRow(self.store, self.batch_id) as counter:
                run_batch(BatchConfig(**self.job), progress=lambda _line: None,
                          on_result=counter, on_engine_result=watchdog.progressed)
        except Exception as exc:  # noqa: BLE001 - the batch fails with the reason kept
            self._fail(batch, f"{type(exc).__name__}: {exc}")
            return "failed"
        finally:
            watchdog.stop()
        if self.store.batch(self.batch_id)["status"] == "in_progress":
            self.store.update(self.batch_id, status="finalizing")
            finalize(self.store, batch, "completed")
        return "done"

    def _fail(self, batch: dict, reason: str) -> None:
        """Failed, with the lines that finished in its output and error files."""
        if self.store.batch(self.batch_id)["status"] != "in_progress":
            return  # cancelled meanwhile: the cancel kept the results
        finalize(self.store, batch, "failed")
        self.store.update(self.batch_id, error=reason[:2000])

    def _stalled(self, batch: dict, why: str) -> None:
        """The watchdog's verdict: fail the batch, then end this actor's process, and with
        it the Ray Data run it drives (the engine actors are this process's, so they go
        too). Ray Data would otherwise wait on a dead or hung engine for ever."""
        self._fail(batch, why)
        os._exit(1)


class _Watchdog:
    """Calls `on_expiry(reason)` once when the engine gave no result for too long:
    `start_s` for its first (its start), `stall_s` between results. Lines refused before
    the engine do not count: they are written before it starts."""

    def __init__(self, start_s: float, stall_s: float, on_expiry) -> None:
        self.start_s, self.stall_s, self.on_expiry = start_s, stall_s, on_expiry
        self.last = time.monotonic()
        self.results = 0
        self.done = threading.Event()
        threading.Thread(target=self._watch, name="batch-watchdog", daemon=True).start()

    def progressed(self) -> None:
        self.last = time.monotonic()
        self.results += 1

    def stop(self) -> None:
        self.done.set()

    def _watch(self) -> None:
        while not self.done.wait(min(5.0, self.stall_s / 10)):
            waited = time.monotonic() - self.last
            if self.results == 0 and waited > self.start_s:
                why = (f"no result {waited:.0f} s after the batch started "
                       f"(batch.start_timeout_s {self.start_s:g}): its engine did not start")
            elif self.results and waited > self.stall_s:
                why = (f"no new result for {waited:.0f} s (batch.stall_timeout_s "
                       f"{self.stall_s:g}) after {self.results} results: the batch engine "
                       f"died or hangs. The finished lines are in the output and error files; "
                       f"a new batch of the rest runs them")
            else:
                continue
            self.on_expiry(why)
            return


class _CountsToRow:
    """run_batch's per-result hook: the row's counts, written every second.

    Results arrive in bursts (a Ray Data block at a time), so the counts are written by a
    timer, not on arrival: a burst's last count would otherwise wait for the next burst.
    """

    def __init__(self, store: BatchStore, batch_id: str, every_s: float = 1.0) -> None:
        self.store, self.batch_id, self.every_s = store, batch_id, every_s
        self.latest: tuple[int, int] | None = None
        self.written: tuple[int, int] | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="batch-counts", daemon=True)
        self.thread.start()

    def __call__(self, completed: int, failed: int) -> None:
        self.latest = (completed, failed)

    def __enter__(self) -> _CountsToRow:
        return self

    def __exit__(self, *_exc) -> None:
        """Stop the timer and write the last counts (before the row's status changes)."""
        self.done.set()
        self.thread.join()
        self._write()

    def _loop(self) -> None:
        while not self.done.wait(self.every_s):
            self._write()

    def _write(self) -> None:
        latest = self.latest
        if latest is not None and latest != self.written:
            self.store.update_counts(self.batch_id, *latest)
            self.written = latest
