"""An exact in-memory search index of one collection: dense, BM25 keyword, and both fused.

Why in memory: on the 2-core machine a Milvus Lite search of 20k chunks took
~32 ms p50 over its gRPC server, and the query path paid several such round
trips (describe, load, search). An exact dot product over 30k x 384 float32
vectors is ~2 ms of numpy, and exact is what Milvus Lite does anyway (FLAT).
Milvus stays the store of record: the snapshot is read from it, tagged with
the collection's version, and replaced when ingestion changes the collection.

Keyword search is Okapi BM25 (k1 1.2, b 0.75, Lucene's idf) over lower-cased
word tokens, as a sparse matrix of per-term document weights, so a query is
a sum of a few columns. Hybrid retrieval fuses the dense and keyword rankings
by reciprocal rank (RRF, k 60: Cormack et al. 2009, as Elasticsearch and
Milvus' RRFRanker do), which needs no score calibration between the two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

TOKEN = re.compile(r"[a-z0-9_]+")
# Short function words carry no topic; dropping them keeps BM25's sums to content words.
STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its "
    "me my of on or so such that the their then there these this to was we what when where "
    "which who why will with you your".split())
RRF_K = 60
BM25_K1, BM25_B = 1.2, 0.75


def tokenize(text: str) -> list[str]:
    return [t for t in TOKEN.findall(text.lower()) if t not in STOPWORDS]


@dataclass
class Chunk:
    text: str
    source: str
    title: str
    position: int


class BM25:
    """Okapi BM25 over a fixed set of documents (rebuilt with the snapshot)."""

    def __init__(self, texts: list[str]) -> None:
        from scipy.sparse import csc_matrix

        vocabulary: dict[str, int] = {}
        rows, cols, counts, lengths = [], [], [], np.zeros(len(texts), dtype=np.float32)
        for doc, text in enumerate(texts):
            terms = tokenize(text)
            lengths[doc] = len(terms)
            unique, tf = np.unique([vocabulary.setdefault(t, len(vocabulary)) for t in terms],
                                   return_counts=True) if terms else ([], [])
            rows += [doc] * len(unique)
            cols += list(unique)
            counts += list(tf)
        self.vocabulary = vocabulary
        tf = np.asarray(counts, dtype=np.float32)
        docs = np.asarray(rows, dtype=np.int64)
        terms = np.asarray(cols, dtype=np.int64)
        n = max(len(texts), 1)
        df = np.bincount(terms, minlength=len(vocabulary)).astype(np.float32)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        average = float(lengths.mean()) if len(texts) else 1.0
        norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths[docs] / max(average, 1e-9))
        weights = idf[terms] * tf * (BM25_K1 + 1) / (tf + norm)
        self.matrix = csc_matrix((weights, (docs, terms)), shape=(len(texts), len(vocabulary)))

    def scores(self, query: str) -> np.ndarray:
        ids = [self.vocabulary[t] for t in set(tokenize(query)) if t in self.vocabulary]
        if not ids:
            return np.zeros(self.matrix.shape[0], dtype=np.float32)
        return np.asarray(self.matrix[:, ids].sum(axis=1)).ravel()


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first (ties: lower index first)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


def rrf(rankings: list[np.ndarray], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion: sum over rankings of 1 / (k + rank), rank from 1."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking.tolist(), 1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return fused


class Snapshot:
    """One collection's chunks and vectors, searchable by meaning, by keywords, or both."""

    def __init__(self, version: str, chunks: list[Chunk], vectors: np.ndarray) -> None:
        self.version = version
        self.chunks = chunks
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.bm25 = BM25([f"{c.title}\n{c.text}" for c in chunks])

    def __len__(self) -> int:
        return len(self.chunks)

    def dense(self, vector, k: int) -> list[tuple[int, float]]:
        """Cosine similarity (vectors are unit length): exact top k."""
        scores = self.vectors @ np.asarray(vector, dtype=np.float32)
        return [(int(i), float(scores[i])) for i in top(scores, k)]

    def keyword(self, query: str, k: int) -> list[tuple[int, float]]:
        scores = self.bm25.scores(query)
        return [(int(i), float(scores[i])) for i in top(scores, k) if scores[i] > 0]

    def hybrid(self, query: str, vector, k: int, candidates: int = 50) -> list[tuple[int, float]]:
        dense = np.array([i for i, _ in self.dense(vector, candidates)], dtype=np.int64)
        keyword = np.array([i for i, _ in self.keyword(query, candidates)], dtype=np.int64)
        fused = rrf([dense, keyword])
        return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
