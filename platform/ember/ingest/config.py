"""`IngestConfig`: what an ingestion run reads, how it chunks, embeds and writes."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ember.models.catalogue import DEFAULT_EMBEDDER


class IngestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(min_length=1, description="files, folders (recursive) or globs")
    collection: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$",
                            description="Milvus collection: letters, digits, underscores")
    embedder: str = Field(DEFAULT_EMBEDDER, description="catalogue name, folder or HF id")
    milvus_uri: str | None = Field(None, description="a Lite file or a server URI; "
                                                     "default: Ember's data dir")
    milvus_token: str | None = Field(None, description="token of a Milvus server")
    # all-MiniLM-L6-v2 was trained on 128-token inputs; its chunks rank best near that.
    chunk_tokens: int = Field(128, ge=16, le=8192, description="chunk size, in the "
                                                               "embedder's tokens")
    overlap_tokens: int = Field(24, ge=0, description="tokens neighbouring chunks share; "
                                                      "below chunk_tokens")
    jsonl_field: str = Field("text", description="the text field of .jsonl lines")
    max_file_mb: float = Field(20.0, gt=0, description="larger files are skipped, with why")
    # 128-token chunks on 2 cores: 32 a batch embedded ~1.1x faster than 64 (both
    # backends), and 32 is sentence-transformers' own default.
    embed_batch_size: int = Field(32, ge=1, description="chunks per embedding batch")
    embed_backend: Literal["auto", "onnx", "encode"] = Field(
        "auto", description="how CPU actors embed: auto (ONNX Runtime where it matches "
                            "sentence-transformers), onnx, or encode (sentence-transformers)")
    # One single-threaded actor per core beat one actor with a thread per core on 2
    # cores (52 vs 47-50 chunks/s alone; in the pipeline a 2-thread actor stalls at
    # every op whenever Ray's own processes take a core).
    embed_concurrency: int | None = Field(
        None, ge=1, description="embedding actors; default: one per core of this node, "
                                "up to 4 (1 with GPUs)")
    embed_num_cpus: float = Field(1, ge=0, description="logical CPUs Ray reserves per actor")
    # Ray starts an actor with one torch thread per reserved CPU (OMP_NUM_THREADS), so a
    # 1-CPU actor used one core of two: 0.22x of the bare model. Ingestion is a batch job
    # that should use the machine: by default each actor gets its share of the cores.
    embed_threads: int | None = Field(
        None, ge=1, description="threads per embedding actor; default: the node's "
                                "cores / embedding actors")
    embed_num_gpus: float = Field(0, ge=0, description="GPUs per embedding actor; 1 to embed "
                                                       "on GPUs")
    write_batch_size: int = Field(512, ge=1, description="rows per Milvus upsert")
    # Ray Data's start-up (workers, an actor loading the embedder) took ~20 s of the
    # 24 s the six sample files took; a corpus this small is done in the driver itself.
    local_max_mb: float = Field(
        2.0, ge=0, description="corpora up to this many MB (of files to ingest) are read, "
                               "embedded and written in this process; 0: always Ray Data")

    def embed_actors(self) -> int:
        """How many embedding actors the pipeline runs."""
        if self.embed_concurrency:
            return self.embed_concurrency
        return 1 if self.embed_num_gpus else max(1, min(4, os.cpu_count() or 1))

    @model_validator(mode="after")
    def _overlap_below_size(self) -> IngestConfig:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be below "
                             f"chunk_tokens ({self.chunk_tokens})")
        return self
