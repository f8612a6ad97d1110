"""Ingestion: files -> chunks -> embeddings -> Milvus, on Ray Data.

    read_and_chunk (tasks) -> EmbedBatch (actor pool) -> MilvusDatasink (write tasks)

Design choices:
- Change detection happens on the driver before Ray Data starts: a file
  whose SHA-256 is in the collection's ledger is skipped as unchanged.
- Only after the datasink has written every chunk of a file are the chunks
  of its older version deleted and the ledger updated. A run that dies
  midway loses nothing: the old chunks are still there, the file is not in
  the ledger, and the re-run rewrites it (chunk ids are deterministic, so the
  rewrite upserts rather than duplicates).
- The collection is flushed and loaded at the end (docs/architecture.md: searches on
  unflushed data are ~50x slower here).
- The terminal shows Ember's lines and one live progress line
  (`ember.ingest.progress`); Ray's own logs go to `ray.log` in the run's folder
  under `$EMBER_HOME/runs/`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ember.errors import EmberError
from ember.ingest.config import IngestConfig
from ember.ingest.files import expand_paths, file_size
from ember.ingest.readers import Skipped, file_hash


@dataclass
class IngestReport:
    collection: str
    files_found: int = 0
    files_read: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    chunks_written: int = 0
    chunks_total: int = 0
    seconds: float = 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks_written / self.seconds if self.seconds else 0.0

    def format(self) -> str:
        lines = [f"collection '{self.collection}': {self.files_read} files read, "
                 f"{len(self.skipped)} skipped, {self.chunks_written} chunks written "
                 f"in {self.seconds:.1f}s ({self.chunks_per_s:.1f} chunks/s); "
                 f"{self.chunks_total} chunks in the collection"]
        lines += [f"  skipped {s.source}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


# Reading and chunking is light, mostly I/O and tokenizing: a quarter CPU each keeps
# the read tasks from taking every logical CPU while the embedding actor waits.
READ_TASK_CPUS = 0.25
# ... and no more read tasks at once than this machine has cores: each is a Python
# worker that imports the tokenizer, and starting more than the cores can run only
# queues start-ups (Ray warns "N PYTHON worker processes have been started").
READ_CONCURRENCY = max(2, os.cpu_count() or 1)


# Rows handed to one embedding call: sentence-transformers sorts a call's texts by length
# before cutting its batches, so a larger call pads less than one batch per call.
ROWS_PER_EMBED_CALL = 512


def run_ingest(config: IngestConfig, progress=print) -> IngestReport:
    from ember.ray_session import ray_logs_to

    log = run_folder(config.collection) / "ray.log"
    progress(f"Ray's logs for this run: {log}")
    with ray_logs_to(log):
        try:
            return _ingest(config, progress)
        except Exception as exc:
            if not _store_unreachable(exc):
                raise
            raise VectorStoreLost(
                f"the vector store ({config.milvus_uri or 'the default Milvus Lite file'}) "
                f"did not answer during the ingestion into '{config.collection}': "
                f"{_first_line(exc)}. A file counts as ingested only once all its chunks "
                f"are written, so nothing partial does. Run the same `ember ingest` again "
                f"once the store is back: it skips the files already recorded and rewrites "
                f"the others' chunks in place (the same ids: no duplicates).") from exc


def run_folder(collection: str) -> Path:
    from ember.config.paths import new_run_log_folder

    return new_run_log_folder(f"ingest-{collection}")


def _ingest(config: IngestConfig, progress) -> IngestReport:
    from ember.models.catalogue import resolve_model
    from ember.models.embedder import embedder_dim_of
    from ember.ray_session import connect_ray
    from ember.vectorstore.lite_server import shared_uri
    from ember.vectorstore.milvus import MilvusStore, default_uri

    start = time.monotonic()
    connect_ray(log_to_driver=False)
    report = IngestReport(config.collection)
    files, report.skipped = expand_paths(config.paths)
    report.files_found = len(files)
    embedder_path = resolve_model(config.embedder)
    dim = embedder_dim_of(config.embedder)  # from its files: no model load on the driver
    uri = shared_uri(config.milvus_uri or default_uri())
    store = MilvusStore(uri, config.milvus_token)
    try:
        store.ensure_collection(config.collection, config.embedder, dim)
        todo = _plan(files, store.ingested_files(config.collection), report, config)
        progress(f"{len(files)} files found: {len(todo)} to ingest, "
                 f"{len(files) - len(todo)} unchanged")
        if todo:
            megabytes = sum(file_size(path) for path in todo) / 2**20
            run = _run_local if megabytes <= config.local_max_mb else _run_pipeline
            result = run(todo, config, embedder_path, uri, progress)
            _commit(store, config.collection, todo, result, report)
            store.mark_changed(config.collection)  # serving replicas reload their index
        progress("flushing and loading the collection ...")
        store.finish(config.collection)
        report.chunks_total = store.count(config.collection)
    finally:
        store.close()
    report.seconds = time.monotonic() - start
    return report


class VectorStoreLost(EmberError):
    """The Milvus server (or Milvus Lite's server actor) went away mid-ingestion."""


def _store_unreachable(exc: BaseException) -> bool:
    """A Milvus client error of a server that is gone (also inside a Ray task's error)."""
    text = f"{type(exc).__name__}: {exc}"
    return any(sign in text for sign in ("MilvusException", "StatusCode.UNAVAILABLE",
                                         "Fail connecting to server", "failed to connect"))


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return (f"{type(exc).__name__}: {lines[-1] if lines else ''}")[:300]


# Bumped when chunking changes in a way the settings below do not show.
CHUNKER_VERSION = "2"


def _run_local(todo: dict[str, str], config: IngestConfig, embedder_path: str, uri: str,
               progress) -> dict:
    """A small corpus in this process: the same stages as the pipeline, without Ray Data."""
    from collections import Counter

    from ember.ingest.milvus_sink import milvus_row
    from ember.ingest.stages import EmbedBatch, read_and_chunk
    from ember.vectorstore.milvus import MilvusStore

    progress(f"reading, chunking and embedding {len(todo)} files in this process "
             f"(under local_max_mb={config.local_max_mb:g}) ...")
    rows = [row for path, digest in todo.items() for row in read_and_chunk(
        {"path": path, "file_hash": digest}, embedder_path, config.chunk_tokens,
        config.overlap_tokens, config.jsonl_field, config.max_file_mb)]
    result: dict = {"written": {}, "skipped": {}}
    real = [r for r in rows if not r["skip_reason"]]
    result["skipped"] = {r["file"]: r["skip_reason"] for r in rows if r["skip_reason"]}
    if real:
        import numpy as np

        batch = {key: np.array([r[key] for r in real], dtype=object) for key in real[0]}
        embedder = EmbedBatch(config.embedder, config.embed_batch_size,
                              threads=config.embed_threads, backend=config.embed_backend)
        vectors = embedder(batch)["vector"]
        store = MilvusStore(uri, config.milvus_token)
        try:
            for start in range(0, len(real), config.write_batch_size):
                store.upsert_chunks(config.collection, [
                    milvus_row({**row, "vector": vector}) for row, vector in zip(
                        real[start:start + config.write_batch_size],
                        vectors[start:start + config.write_batch_size], strict=True)])
        finally:
            store.close()
        result["written"] = dict(Counter(row["file"] for row in real))
    progress(f"  {len(real)} chunks written")
    return result


def version_hash(path, config: IngestConfig) -> str:
    """A file's version: its bytes and the settings that cut it into chunks.

    Re-ingesting with other chunking settings is then a new version of every
    file: its chunks are rewritten and the old ones retired, none left stale.
    """
    import hashlib

    settings = (f"{CHUNKER_VERSION}/{config.chunk_tokens}/{config.overlap_tokens}/"
                f"{config.jsonl_field}/{config.embedder}")
    return hashlib.sha256(f"{file_hash(path)}\0{settings}".encode()).hexdigest()


def _plan(files, ingested: dict[str, str], report: IngestReport,
          config: IngestConfig) -> dict[str, str]:
    """{file: version hash} of the files to (re-)ingest; unchanged ones go to `skipped`."""
    todo = {}
    for path in files:
        digest = version_hash(path, config)
        if ingested.get(str(path)) == digest:
            report.skipped.append(Skipped(str(path), "unchanged since the last ingestion"))
        else:
            todo[str(path)] = digest
    return todo


def _run_pipeline(todo: dict[str, str], config: IngestConfig, embedder_path: str, uri: str,
                  progress) -> dict:
    import ray

    from ember.ingest.milvus_sink import MilvusDatasink
    from ember.ingest.progress import IngestProgress, Totals, run_with_progress
    from ember.ingest.stages import EmbedBatch, read_and_chunk
    from ember.ray_session import quiet_ray_data

    quiet_ray_data()
    actors = config.embed_actors()
    tracker = IngestProgress.remote()
    items = [{"path": path, "file_hash": digest} for path, digest in todo.items()]
    progress(f"reading, chunking and embedding {len(items)} files on Ray Data ...")
    blocks = min(len(items), 32)
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    dataset = dataset.flat_map(read_and_chunk, fn_kwargs={
        "tokenizer_path": embedder_path, "chunk_tokens": config.chunk_tokens,
        "overlap_tokens": config.overlap_tokens, "jsonl_field": config.jsonl_field,
        "max_file_mb": config.max_file_mb, "progress": tracker},
        num_cpus=READ_TASK_CPUS,
        compute=ray.data.TaskPoolStrategy(size=min(blocks, READ_CONCURRENCY)))
    dataset = dataset.map_batches(
        EmbedBatch, fn_constructor_kwargs={
            "embedder": config.embedder, "batch_size": config.embed_batch_size,
            "device": "cuda" if config.embed_num_gpus else "cpu",
            "threads": config.embed_threads, "actors": actors,
            "backend": config.embed_backend},
        batch_size=max(config.embed_batch_size, ROWS_PER_EMBED_CALL),
        # Work starts with the first actor up; the others join as the cluster has room
        # (a busy `ember up` node may not fit them all at once).
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
        num_cpus=config.embed_num_cpus, num_gpus=config.embed_num_gpus, batch_format="numpy")
    sink = MilvusDatasink(uri, config.milvus_token, config.collection, config.write_batch_size,
                          progress=tracker)
    totals = Totals(files=len(items), bytes=sum(file_size(path) for path in todo))
    try:
        run_with_progress(lambda: dataset.write_datasink(sink), tracker, totals)
    finally:
        ray.kill(tracker)
    return sink.result


def _commit(store, collection: str, todo: dict[str, str], result: dict,
            report: IngestReport) -> None:
    """Retire older versions of the files written, then record them in the ledger."""
    written = result["written"]
    store.delete_stale(collection, {path: todo[path] for path in written})
    store.mark_ingested(collection, {path: (todo[path], n) for path, n in written.items()})
    report.files_read = len(written)
    report.chunks_written = sum(written.values())
    report.skipped += [Skipped(path, reason) for path, reason in result["skipped"].items()]
