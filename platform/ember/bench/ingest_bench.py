"""`ember bench ingest`: Ray Data pipeline throughput vs bare sentence-transformers,
and search latency on the resulting collection.

Design choices:
- A synthetic corpus is generated deterministically (seeded), so runs compare.
- The baseline encodes the very strings the pipeline embedded (the same files
  chunked by the same stage, each chunk under its headings) in this one process:
  the ratio of the two rates is what Ray Data, the actor pool and the Milvus
  writes cost on top of the model.
- Search latency is measured after the pipeline's flush and load, with
  queries embedded beforehand, so it is Milvus' time only.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

WORDS = ("lake ferry lantern pier harbour timetable fare ticket pilot assembly boat glass "
         "heron storm timber forest museum bakery tea perch bell fog jacket locker goat "
         "goose bicycle season pass window office school fair cooperative member vote "
         "winter summer evening crossing battery prize engine rope anchor deck cabin").split()


def make_corpus(folder: Path, files: int, paragraphs: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        paras = []
        for _ in range(paragraphs):
            sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize()
                         + "." for _ in range(rng.randint(4, 7))]
            paras.append(" ".join(sentences))
        (folder / f"doc-{i:05d}.md").write_text(f"# Document {i}\n\n" + "\n\n".join(paras))


def embedded_texts(files: list[Path], config, limit: int) -> list[str]:
    """What the pipeline embedded for the first `limit` chunks of `files`."""
    from ember.ingest.stages import embed_text, read_and_chunk
    from ember.models.catalogue import resolve_model

    tokenizer = resolve_model(config.embedder)
    texts: list[str] = []
    for path in files:
        for row in read_and_chunk({"path": str(path), "file_hash": ""}, tokenizer,
                                  config.chunk_tokens, config.overlap_tokens,
                                  config.jsonl_field, config.max_file_mb):
            if not row["skip_reason"]:
                texts.append(embed_text(row["section"], row["text"]))
        if len(texts) >= limit:
            break
    return texts[:limit]


def bare_encode_rate(texts: list[str], embedder: str, batch_size: int) -> float:
    """sentence-transformers' `encode`, model loaded and warm, this process's cores."""
    from ember.models.embedder import embed, load_embedder

    model = load_embedder(embedder)
    return _rate(lambda batch: embed(model, batch, batch_size), texts)


def bare_pipeline_encoder_rate(texts: list[str], embedder: str, batch_size: int,
                               backend: str) -> tuple[str, float]:
    """The encoder the pipeline's actor uses, alone in this process: (backend, rate).
    Against the pipeline's rate it shows what Ray Data and the writes cost."""
    import os

    from ember.ingest.stages import EmbedBatch

    actor = EmbedBatch(embedder, batch_size, threads=os.cpu_count() or 1, backend=backend)
    return actor.backend, _rate(lambda batch: actor.encoder.encode(batch, batch_size), texts)


def _rate(encode, texts: list[str]) -> float:
    encode(texts[:64])  # warm-up
    start = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - start)


def pad_collection(store, collection: str, target: int, seed: int = 7) -> int:
    """Copy ingested rows, vectors slightly perturbed, until `target` rows; flush."""
    import numpy as np

    rows = store.client.query(collection, filter="position >= 0", limit=4096,
                              output_fields=["source", "title", "position", "text",
                                             "content_hash", "file_hash", "vector"])
    rng = np.random.default_rng(seed)
    have = store.count(collection)
    copy = 0
    while have < target:
        batch = []
        for row in rows[: min(len(rows), target - have)]:
            vector = np.asarray(row["vector"]) + rng.normal(0, 0.02, len(row["vector"]))
            batch.append({**{k: row[k] for k in row if k not in ("id", "vector")},
                          "source": f"{row['source']}#copy{copy}",
                          "vector": (vector / np.linalg.norm(vector)).tolist()})
        store.upsert_chunks(collection, batch)
        have += len(batch)
        copy += 1
    store.finish(collection)
    return store.count(collection)


def search_latencies(store, collection: str, vectors, top_k: int) -> list[float]:
    store.search(collection, vectors[0], top_k)  # warm-up
    times = []
    for vector in vectors:
        start = time.perf_counter()
        store.search(collection, vector, top_k)
        times.append(time.perf_counter() - start)
    return times


def summarize(pipeline_rate: float, bare_rate: float, own: tuple[str, float],
              latencies: list[float], chunks: int) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return "\n".join([
        "| measure | value |", "|---|---|",
        f"| chunks in the collection | {chunks} |",
        f"| Ray Data pipeline (read, chunk, embed, write) | {pipeline_rate:.1f} chunks/s |",
        f"| bare sentence-transformers encode, one process | {bare_rate:.1f} chunks/s |",
        f"| pipeline / bare | {pipeline_rate / bare_rate:.2f} |",
        f"| the pipeline's encoder ({own[0]}) alone, one process | {own[1]:.1f} chunks/s |",
        f"| pipeline / its encoder alone | {pipeline_rate / own[1]:.2f} |",
        f"| search p50 ({len(latencies)} queries) | {statistics.median(ordered) * 1000:.1f} ms |",
        f"| search p99 | {p99 * 1000:.1f} ms |",
    ])
