"""Retrieval inside the engine replica: embed the query, search the collection, rerank.

The query path does its work in the replica's own process: the query is
embedded by a local copy of the embedder (the Embedder deployment stays for
/v1/embeddings' bulk requests), and the collection is searched in an exact
in-memory snapshot (`search_index`) read from Milvus and kept in step with it:
every `refresh_s` a query triggers a background check of the collection's
version, and a changed collection is reloaded while the old snapshot serves.
Collections above `memory_index_max_chunks` are searched in Milvus itself
(dense only: keyword and hybrid requests fall back, with a notice).

Modes: `dense` (vector similarity), `keyword` (BM25), `hybrid` (both, fused by
reciprocal rank); `rerank` rescores the best `rerank_candidates` with a
cross-encoder. A mode or reranker that cannot run for a collection falls back
to dense search and says so in `notices`, never an error.

Errors carry the HTTP status a client should see: 400 for a bad query, top_k
or mode, 404 for an unknown collection, 409 for a collection made with another
embedder.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from ember.access.telemetry import observe_retrieval
from ember.serving.rag.prompt import Source

logger = logging.getLogger("ember.retrieval")
MODES = ("dense", "keyword", "hybrid")
URI_CHECK_S = 10.0
RECONNECT_WAIT_S = 3.0  # a restarted server refuses calls for ~1 s while clients reconnect


class RetrievalError(Exception):
    def __init__(self, status_code: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code, self.message, self.param = status_code, message, param


@dataclass
class Retrieved:
    sources: list[Source]
    mode: str
    reranked: bool
    notices: list[str] = field(default_factory=list)


@dataclass
class SearchSettings:
    mode: str = "hybrid"  # as RetrievalConfig.mode
    rerank: bool = False
    rerank_candidates: int = 20
    reranker: str | None = None
    refresh_s: float = 5.0
    memory_index_max_chunks: int = 500_000
    query_threads: int = 1
    query_encoder: str = "auto"


class Retriever:
    def __init__(self, embedder_name: str, milvus_uri: str | None, max_top_k: int,
                 score_threshold: float | None, settings: SearchSettings | None = None,
                 embedder_handle=None) -> None:
        self.embedder_name = embedder_name
        self.embedder = embedder_handle  # the Embedder deployment (health, bulk embeddings)
        self.milvus_uri = milvus_uri
        self.max_top_k = max_top_k
        self.score_threshold = score_threshold
        self.settings = settings or SearchSettings()
        self._store = None
        self._uri_checked = 0.0
        self._model = None
        self._reranker = None
        self._reranker_error: str | None = None
        self._snapshots: dict = {}  # collection -> Snapshot, or None when it is too large
        self._checked: dict[str, float] = {}
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    # --- connections and models (loaded on first use, in worker threads) ------------
    def store(self):
        """Connect on first use (a Lite file is shared through its Ray actor).

        A restarted Milvus Lite server comes back on its port, but if that port was
        taken it listens on another: every `URI_CHECK_S` the server's URI is asked
        again, and a changed one gets a new client.
        """
        from ember.vectorstore.lite_server import shared_uri
        from ember.vectorstore.milvus import MilvusStore, default_uri

        now = time.monotonic()
        if self._store is None or now - self._uri_checked > URI_CHECK_S:
            self._uri_checked = now
            uri = shared_uri(self.milvus_uri or default_uri())
            if self._store is None or self._store.uri != uri:
                if self._store is not None:
                    logger.warning("the vector store moved to %s: reconnecting", uri)
                self._store = MilvusStore(uri)
        return self._store

    def on_store(self, call):
        """`call(store)`, retried for `RECONNECT_WAIT_S` while the server refuses
        connections: a Milvus Lite server that just came back (killed, restarted by Ray)
        refuses the first calls while this replica's client reconnects."""
        from ember.vectorstore.milvus import is_unreachable

        deadline = time.monotonic() + RECONNECT_WAIT_S
        while True:
            try:
                return call(self.store())
            except Exception as exc:
                if not is_unreachable(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.25)

    def model(self):
        if self._model is None:
            from ember.models.fast_encoder import FastEncoder

            self._model = FastEncoder(self.embedder_name, self.settings.query_threads,
                                       self.settings.query_encoder)
        return self._model

    def query_encoder_backend(self) -> str | None:
        """How this replica embeds queries (onnx, torchscript, encode); None before the first."""
        return self._model.backend if self._model is not None else None

    def reranker(self):
        """The cross-encoder, or None with the reason kept for the notice."""
        if self._reranker is None and self._reranker_error is None:
            from ember.models.reranker import RerankerUnavailable, load_reranker

            try:
                self._reranker = load_reranker(self.settings.reranker)
            except RerankerUnavailable as exc:
                self._reranker_error = str(exc)
                logger.warning("reranking is off: %s", exc)
        return self._reranker

    async def embedder_info(self) -> dict:
        from ember.models.embedder import embedder_dim_of

        return {"embedder": self.embedder_name,
                "dim": await asyncio.to_thread(embedder_dim_of, self.embedder_name)}

    def collections(self) -> list[str]:
        return self.on_store(lambda store: store.collections())

    def warm(self, collection: str) -> None:
        """Load the embedder and one collection's snapshot in the background (start-up)."""
        def run() -> None:
            try:
                self.model()
                self._snapshot(collection)
            except Exception as exc:  # noqa: BLE001 - a missing collection is fine here
                logger.info("no warm index for '%s': %s", collection, exc)

        threading.Thread(target=run, name=f"warm-{collection}", daemon=True).start()

    # --- the query path -------------------------------------------------------------
    async def retrieve(self, query: str, collection: str, top_k: int,
                       mode: str | None = None, rerank: bool | None = None) -> Retrieved:
        mode = mode or self.settings.mode
        rerank = self.settings.rerank if rerank is None else rerank
        self.check(query, top_k, mode)
        start = time.perf_counter()
        result = await asyncio.to_thread(self._retrieve, query, collection, top_k, mode, rerank)
        observe_retrieval(collection, time.perf_counter() - start)
        if self.score_threshold is not None and result.mode == "dense" and not result.reranked:
            result.sources = [s for s in result.sources if s.score >= self.score_threshold]
        return result

    def _retrieve(self, query: str, collection: str, top_k: int, mode: str,
                  rerank: bool) -> Retrieved:
        snapshot = self._snapshot(collection)
        self._maybe_refresh(collection)
        notices: list[str] = []
        vector = None if mode == "keyword" else self._embed(query)
        want = max(top_k, self.settings.rerank_candidates) if rerank else top_k
        if snapshot is None:  # too large for memory: Milvus searches it, by vector only
            if mode != "dense":
                notices.append(f"'{mode}' search needs the in-memory index, and collection "
                               f"'{collection}' is above memory_index_max_chunks "
                               f"({self.settings.memory_index_max_chunks}): dense search used")
                mode, vector = "dense", vector if vector is not None else self._embed(query)
            hits = self.on_store(lambda store: store.search(collection, vector, want))
            found = [(h.text, h.source, h.title, h.score) for h in hits]
        else:
            ranked = (snapshot.dense(vector, want) if mode == "dense"
                      else snapshot.keyword(query, want) if mode == "keyword"
                      else snapshot.hybrid(query, vector, want))
            found = [(snapshot.chunks[i].text, snapshot.chunks[i].source,
                      snapshot.chunks[i].title, score) for i, score in ranked]
        reranked = False
        if rerank and found:
            model = self.reranker()
            if model is None:
                notices.append(f"reranking is unavailable ({self._reranker_error}): "
                               f"results are in '{mode}' order")
            else:
                scores = model.scores(query, [f"{title}\n{text}" for text, _, title, _ in found])
                order = sorted(range(len(found)), key=lambda i: -scores[i])
                found = [(*found[i][:3], float(scores[i])) for i in order]
                reranked = True
        sources = [Source(i, text, source, title, score)
                   for i, (text, source, title, score) in enumerate(found[:top_k], 1)]
        return Retrieved(sources, mode, reranked, notices)

    def _embed(self, query: str):
        return self.model()(query)

    # --- snapshots ------------------------------------------------------------------
    def _snapshot(self, collection: str):
        with self._guard:
            lock = self._locks[collection]
        with lock:
            if collection not in self._snapshots:
                self._snapshots[collection] = self._load(collection)
                self._checked[collection] = time.monotonic()
            return self._snapshots[collection]

    def _load(self, collection: str):
        from ember.serving.rag.search_index import Chunk, Snapshot

        store = self.store()
        self._check_collection(collection)
        version = store.version(collection)
        if store.count(collection) > self.settings.memory_index_max_chunks:
            return None
        import numpy as np

        start = time.perf_counter()
        rows = store.read_all(collection)
        chunks = [Chunk(r["text"], r["source"], r["title"], r["position"]) for r in rows]
        vectors = np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(
            len(rows), -1)
        snapshot = Snapshot(version, chunks, vectors)
        logger.info("index of '%s' loaded: %d chunks in %.1fs", collection, len(rows),
                    time.perf_counter() - start)
        return snapshot

    def _maybe_refresh(self, collection: str) -> None:
        now = time.monotonic()
        if now - self._checked.get(collection, now) < self.settings.refresh_s:
            return
        self._checked[collection] = now
        threading.Thread(target=self._refresh, args=(collection,), daemon=True).start()

    def _refresh(self, collection: str) -> None:
        """Reload a collection whose version changed; forget one that is gone."""
        from ember.vectorstore.milvus import CollectionNotFound

        try:
            current = self._snapshots.get(collection)
            version = self.on_store(lambda store: store.version(collection))
            if current is not None and current.version == version:
                return
            fresh = self._load(collection)
        except (CollectionNotFound, RetrievalError):
            with self._guard:
                self._snapshots.pop(collection, None)
            return
        except Exception:  # noqa: BLE001 - keep serving the old snapshot
            logger.exception("refreshing the index of '%s' failed", collection)
            return
        self._snapshots[collection] = fresh

    # --- checks ---------------------------------------------------------------------
    def check(self, query: str, top_k: int, mode: str = "dense") -> None:
        if not isinstance(query, str) or not query.strip():
            raise RetrievalError(400, "'query' must be a non-empty string", "query")
        if not 1 <= top_k <= self.max_top_k:
            raise RetrievalError(400, f"'top_k' must be between 1 and {self.max_top_k}, "
                                      f"got {top_k}", "top_k")
        if mode not in MODES:
            raise RetrievalError(400, f"'mode' must be one of {', '.join(MODES)}, got "
                                      f"'{mode}'", "mode")

    def _check_collection(self, collection: str) -> None:
        from ember.models.embedder import embedder_dim_of
        from ember.vectorstore.milvus import CollectionNotFound, EmbedderMismatch

        try:
            self.store().check_embedder(collection, self.embedder_name,
                                        embedder_dim_of(self.embedder_name))
        except CollectionNotFound as exc:
            raise RetrievalError(404, str(exc), "collection") from None
        except EmbedderMismatch as exc:
            raise RetrievalError(409, str(exc), "collection") from None
