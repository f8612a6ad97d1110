"""Retrieval inside the ingress: embed the query (embeddings deployment), search Milvus.

Errors carry the HTTP status a client should see: 400 for a bad query or
top_k, 404 for an unknown collection, 409 for a collection made with another
embedder.
"""

from __future__ import annotations

import asyncio
import time

from ember.serving.metrics import RETRIEVAL_SECONDS
from ember.serving.prompt import Source


class RetrievalError(Exception):
    def __init__(self, status_code: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code, self.message, self.param = status_code, message, param


class Retriever:
    def __init__(self, embedder_handle, milvus_uri: str | None, max_top_k: int,
                 score_threshold: float | None) -> None:
        self.embedder = embedder_handle
        self.milvus_uri = milvus_uri
        self.max_top_k = max_top_k
        self.score_threshold = score_threshold
        self._store = None
        self._info: dict | None = None

    async def embedder_info(self) -> dict:
        if self._info is None:
            self._info = await self.embedder.info.remote()
        return self._info

    def store(self):
        """Connect on first use (a Lite file is shared through its Ray actor)."""
        if self._store is None:
            from ember.vectorstore.lite_server import shared_uri
            from ember.vectorstore.milvus import MilvusStore, default_uri

            self._store = MilvusStore(shared_uri(self.milvus_uri or default_uri()))
        return self._store

    def collections(self) -> list[str]:
        return self.store().collections()

    async def retrieve(self, query: str, collection: str, top_k: int) -> list[Source]:
        self.check(query, top_k)
        start = time.perf_counter()
        info = await self.embedder_info()
        await asyncio.to_thread(self._check_collection, collection, info)
        [vector] = await self.embedder.embed.remote([query])
        hits = await asyncio.to_thread(self.store().search, collection, vector, top_k)
        RETRIEVAL_SECONDS.labels(collection).observe(time.perf_counter() - start)
        if self.score_threshold is not None:
            hits = [h for h in hits if h.score >= self.score_threshold]
        return [Source(i, h.text, h.source, h.title, h.score) for i, h in enumerate(hits, 1)]

    def check(self, query: str, top_k: int) -> None:
        if not isinstance(query, str) or not query.strip():
            raise RetrievalError(400, "'query' must be a non-empty string", "query")
        if not 1 <= top_k <= self.max_top_k:
            raise RetrievalError(400, f"'top_k' must be between 1 and {self.max_top_k}, "
                                      f"got {top_k}", "top_k")

    def _check_collection(self, collection: str, info: dict) -> None:
        from ember.vectorstore.milvus import CollectionNotFound, EmbedderMismatch

        try:
            self.store().check_embedder(collection, info["embedder"], info["dim"])
        except CollectionNotFound as exc:
            raise RetrievalError(404, str(exc), "collection") from None
        except EmbedderMismatch as exc:
            raise RetrievalError(409, str(exc), "collection") from None
