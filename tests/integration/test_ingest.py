"""Ingestion through real Ray Data, the real embedder and real Milvus Lite."""

from __future__ import annotations

import shutil

import pytest
from ember.ingest.config import IngestConfig
from ember.ingest.pipeline import run_ingest

from .conftest import COLLECTION, SAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    shutil.copytree(SAMPLES, folder, dirs_exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def ingest(ray_cluster, milvus_uri, corpus):
    def run(paths=None, **overrides):
        # Ray Data's pipeline even for these small files (the service's sample ingest,
        # conftest's, takes the in-process path for small corpora)
        config = IngestConfig(paths=paths or [str(corpus)], collection="ingest_test",
                              milvus_uri=milvus_uri, **{"local_max_mb": 0, **overrides})
        return run_ingest(config)

    return run


@pytest.fixture(scope="module")
def store(ray_cluster, milvus_uri):
    from ember.vectorstore.lite_server import shared_uri
    from ember.vectorstore.milvus import MilvusStore

    store = MilvusStore(shared_uri(milvus_uri))
    yield store
    store.close()


def texts_of(store, source_suffix: str) -> list[str]:
    store.client.load_collection("ingest_test")
    rows = store.client.query("ingest_test", filter="position >= 0",
                              output_fields=["source", "text"], limit=1000)
    return [r["text"] for r in rows if r["source"].endswith(source_suffix)]


def test_sample_corpus_counts(sample_ingest):
    assert sample_ingest.files_found == 6 and sample_ingest.files_read == 6
    assert sample_ingest.skipped == []
    assert sample_ingest.chunks_written == sample_ingest.chunks_total >= 8


def test_rerun_adds_nothing_and_a_changed_file_replaces_its_chunks(ingest, corpus, store):
    first = ingest()
    assert first.files_read == 6 and first.chunks_total == first.chunks_written

    again = ingest()
    assert again.chunks_written == 0 and again.files_read == 0
    assert {s.reason for s in again.skipped} == {"unchanged since the last ingestion"}
    assert again.chunks_total == first.chunks_total

    timetable = corpus / "02-timetable.txt"
    timetable.write_text(timetable.read_text().replace("3 kestrels and 20 pennies",
                                                       "4 kestrels and 10 pennies"))
    changed = ingest()
    assert changed.files_read == 1 and changed.chunks_written >= 1
    texts = " ".join(texts_of(store, "02-timetable.txt"))
    assert "4 kestrels and 10 pennies" in texts and "3 kestrels and 20 pennies" not in texts
    assert changed.chunks_total == first.chunks_total  # replaced, not added


def test_the_in_process_path_writes_what_ray_data_writes(sample_ingest, ingest, store):
    ingest()  # Ray Data into ingest_test (a no-op if an earlier test left it current)
    assert sample_ingest.chunks_written == sample_ingest.chunks_total  # the in-process path

    def rows(collection):
        store.client.load_collection(collection)
        found = store.client.query(collection, filter="position >= 0", limit=1000,
                                   output_fields=["source", "position", "text", "vector"])
        return {(r["source"].rsplit("/", 1)[-1], r["position"]): r for r in found
                if "02-timetable" not in r["source"]}  # the test above edited that copy

    local, distributed = rows(COLLECTION), rows("ingest_test")
    assert local.keys() == distributed.keys()
    for key, row in local.items():
        assert row["text"] == distributed[key]["text"]
        assert sum(a * b for a, b in zip(row["vector"], distributed[key]["vector"],
                                         strict=True)) > 0.999


def test_other_chunking_settings_rewrite_every_file_and_leave_no_stale_chunk(ingest, store):
    before = ingest()  # the corpus as the test above left it, at the default 128 tokens
    assert before.files_read == 0
    smaller = ingest(chunk_tokens=48, overlap_tokens=8)
    assert smaller.files_read == 6 and smaller.chunks_written > before.chunks_total
    assert smaller.chunks_total == smaller.chunks_written  # every 128-token chunk retired
    back = ingest()
    assert back.files_read == 6 and back.chunks_total == before.chunks_total


def test_bad_files_are_skipped_and_the_rest_of_the_batch_lands(ingest, tmp_path, store):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "latin1.md").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e ".encode("latin-1") * 50)
    (tmp_path / "sheet.xlsx").write_bytes(b"PK\x03\x04 not a document")
    with (tmp_path / "huge.txt").open("wb") as f:  # 50 MB of text
        f.write(b"The lake is calm today. " * (50 * 2**20 // 24))
    (tmp_path / "good.md").write_text("# Otters\n\nThe otters of Lake Ovirre sleep at noon.")

    report = ingest(paths=[str(tmp_path)])
    reasons = {s.source.rsplit("/", 1)[-1]: s.reason for s in report.skipped}
    assert "empty" in reasons["empty.txt"]
    assert "binary" in reasons["binary.txt"]
    assert "UTF-8" in reasons["latin1.md"]
    assert "unsupported extension" in reasons["sheet.xlsx"]
    assert "max_file_mb" in reasons["huge.txt"]
    assert report.files_read == 1 and texts_of(store, "good.md")


def test_job_module_runs_as_a_ray_job_driver(ray_cluster, milvus_uri, corpus, tmp_path):
    """`python -m ember.ingest.job --config ...`, joined to the cluster as `ray job` does."""
    import os
    import subprocess
    import sys

    import yaml

    config = tmp_path / "ingest.yaml"
    config.write_text(yaml.safe_dump({"paths": [str(corpus / "05-history.md")],
                                      "collection": "job_test", "milvus_uri": milvus_uri}))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
           "RAY_AUTH_MODE": "token"}
    out = subprocess.run([sys.executable, "-m", "ember.ingest.job", "--config", str(config)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "collection 'job_test': 1 files read, 0 skipped" in out.stdout


def test_an_interrupted_run_loses_nothing_and_a_rerun_completes_it(ingest, corpus, store):
    """State of a run killed after writing part of a new version, before its ledger entry."""
    from ember.ingest.readers import file_hash

    before = ingest()
    old_chunks = len(texts_of(store, "05-history.md"))
    history = corpus / "05-history.md"
    history.write_text(history.read_text() + "\n\nIn 2026 the museum added a lantern room.")
    new_hash = file_hash(history)
    store.upsert_chunks("ingest_test", [{  # what the datasink wrote before the crash
        "source": str(history), "title": "History", "position": 0, "file_hash": new_hash,
        "text": "partial", "content_hash": "x", "vector": [0.1] * 384}])
    store.finish("ingest_test")
    assert any("rebuilt it in eleven weeks" in t for t in texts_of(store, "05-history.md"))

    after = ingest()
    assert after.files_read == 1
    texts = texts_of(store, "05-history.md")
    assert "partial" not in texts and any("lantern room" in t for t in texts)
    assert len(texts) == after.chunks_written  # the old version's chunks are gone
    assert after.chunks_total == before.chunks_total - old_chunks + len(texts)
