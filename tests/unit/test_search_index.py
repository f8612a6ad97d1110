"""The in-memory index: exact dense top k, BM25, reciprocal rank fusion."""

from __future__ import annotations

import numpy as np
import pytest
from ember.serving.rag.search_index import BM25, Chunk, Snapshot, rrf, tokenize, top

TEXTS = ["functools.lru_cache memoizes a function: results of earlier calls are kept",
         "The sched module runs events at a given time",
         "argparse parses command line options and sub-commands",
         "A cache of results, kept by the function, is called memoization"]


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def snapshot():
    vectors = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.9, 0.1, 0]])
    return Snapshot("v1", [Chunk(t, f"doc{i}.html", "", 0) for i, t in enumerate(TEXTS)],
                    vectors)


def test_tokenize_lowercases_and_drops_function_words():
    assert tokenize("How do I parse the Command-Line?") == ["parse", "command", "line"]


def test_top_is_exact_best_first_with_stable_ties():
    scores = np.array([0.1, 0.9, 0.5, 0.9, -1.0])
    assert top(scores, 3).tolist() == [1, 3, 2]
    assert top(scores, 10).tolist() == [1, 3, 2, 0, 4]
    assert top(np.array([]), 3).tolist() == []


def test_bm25_ranks_documents_with_rarer_matching_terms_first():
    bm25 = BM25(TEXTS)
    scores = bm25.scores("argparse sub-commands")
    assert int(np.argmax(scores)) == 2 and scores[0] == 0
    assert bm25.scores("zebra").sum() == 0  # unknown words score nothing
    # a term in 2 documents is worth less than one in 1 document
    assert bm25.scores("results")[0] < bm25.scores("memoizes")[0]


def test_rrf_sums_reciprocal_ranks():
    fused = rrf([np.array([5, 7]), np.array([7, 9])], k=60)
    assert fused[7] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[5] == pytest.approx(1 / 61) and fused[9] == pytest.approx(1 / 62)


def test_snapshot_modes():
    snap = snapshot()
    assert [i for i, _ in snap.dense([1, 0, 0], 2)] == [0, 3]
    assert snap.dense([1, 0, 0], 1)[0][1] == pytest.approx(1.0)
    assert [i for i, _ in snap.keyword("memoization cache", 2)][0] == 3
    assert snap.keyword("nothing matches", 3) == []
    # doc 3 is second by vector and first by keywords: fused it comes first
    assert snap.hybrid("memoization", [1, 0, 0], 2)[0][0] == 3
