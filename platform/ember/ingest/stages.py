"""The per-row and per-batch functions the Ray Data pipeline runs on workers.

Rows carry `skip_reason` so a file that cannot be read travels through the
pipeline as one marker row and reaches the report, instead of an exception
that would fail the whole dataset.
"""

from __future__ import annotations

import os

import numpy as np

from ember.ingest.chunking import chunk_text
from ember.ingest.files import file_size
from ember.ingest.readers import Skipped, read_file
from ember.ingest.tokens import load_counter
from ember.vectorstore.milvus import SOURCE_MAX


def skip_row(path: str, reason: str) -> dict:
    return {"file": path, "source": path, "title": "", "section": "", "position": -1, "text": "",
            "content_hash": "", "file_hash": "", "skip_reason": reason}


def section_title(title: str, section: str) -> str:
    """The document's title and the headings a chunk sits under, without repeating one."""
    if not section or section == title:
        return title
    first, _, rest = section.partition(" > ")
    if first and first in title:  # an HTML page's <h1> is usually its title too
        section = rest
    return f"{title} > {section}" if section else title


def embed_text(section: str, text: str) -> str:
    """What is embedded: the chunk with its headings, so a mid-section chunk says what it
    is about (the stored text stays the chunk alone)."""
    return f"{section}\n\n{text}" if section else text


def read_and_chunk(row: dict, tokenizer_path: str, chunk_tokens: int, overlap_tokens: int,
                   jsonl_field: str, max_file_mb: float, progress=None) -> list[dict]:
    """One file -> its chunk rows (or one skip row); tells `progress` (an actor) if given."""
    rows = _chunk_rows(row, tokenizer_path, chunk_tokens, overlap_tokens, jsonl_field,
                       max_file_mb)
    if progress is not None:
        real = sum(1 for r in rows if not r["skip_reason"])
        progress.file_read.remote(file_size(row["path"]), real)
    return rows



def _chunk_rows(row: dict, tokenizer_path: str, chunk_tokens: int, overlap_tokens: int,
                jsonl_field: str, max_file_mb: float) -> list[dict]:
    path = row["path"]
    if len(path.encode()) > SOURCE_MAX - 16:
        return [skip_row(path, f"path longer than {SOURCE_MAX - 16} bytes")]
    result = read_file(path, jsonl_field=jsonl_field, max_file_mb=max_file_mb)
    if isinstance(result, Skipped):
        return [skip_row(path, result.reason)]
    counter = load_counter(tokenizer_path)
    rows = []
    for doc in result:
        for chunk in chunk_text(doc.text, counter.count, chunk_tokens, overlap_tokens,
                                split_long=counter.split):
            rows.append({"file": path, "source": doc.source,
                         "title": section_title(doc.title, chunk.section),
                         "section": chunk.section,
                         "position": chunk.position, "text": chunk.text,
                         "content_hash": chunk.content_hash, "file_hash": row["file_hash"],
                         "skip_reason": ""})
    return rows or [skip_row(path, "no chunks after splitting")]


def embed_threads(threads: int | None, actors: int) -> int:
    """Torch threads for one embedding actor: as configured, or its share of this node's
    cores (Ray would give it one per reserved CPU: one core of two on this machine)."""
    return threads or max(1, (os.cpu_count() or 1) // actors)


class EmbedBatch:
    """A stateful Ray Data worker (actor pool): loads the embedder once.

    On CPU it embeds through ONNX Runtime when the model's layout allows and its
    vectors match sentence-transformers' (`models.fast_encoder`): an export
    already checked loads without importing torch and sentence-transformers (~7 s
    here, on cores the read tasks need too). Otherwise, and on GPUs, through
    sentence-transformers itself.
    """

    def __init__(self, embedder: str, batch_size: int, device: str = "cpu",
                 threads: int | None = None, actors: int = 1, backend: str = "auto") -> None:
        from ember.models.embedder import embedder_dim, load_embedder

        threads = embed_threads(threads, actors)
        self.batch_size = batch_size
        self.model = self.encoder = None
        if device == "cpu" and backend in ("auto", "onnx"):
            from ember.models.fast_encoder import OnnxEncoder

            self.encoder = OnnxEncoder.verified(embedder, threads, spin=True)
        if self.encoder is None:
            import torch

            torch.set_num_threads(threads)
            if device == "cpu":
                from ember.models.fast_encoder import FastEncoder

                self.encoder = FastEncoder(embedder, threads, backend, spin=True)
            else:
                self.model = load_embedder(embedder, device)
        self.dim = self.encoder.dim if self.encoder else embedder_dim(self.model)

    @property
    def backend(self) -> str:
        return self.encoder.backend if self.encoder else "encode"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        real = batch["skip_reason"] == ""
        vectors = np.zeros((len(real), self.dim), dtype=np.float32)
        if real.any():
            texts = [embed_text(section, text) for section, text
                     in zip(batch["section"][real], batch["text"][real], strict=True)]
            if self.encoder is not None:
                vectors[real] = self.encoder.encode(texts, self.batch_size)
            else:
                from ember.models.embedder import embed

                vectors[real] = embed(self.model, texts, self.batch_size)
        batch["vector"] = vectors
        return batch
