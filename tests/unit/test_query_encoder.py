"""The replica's query encoder gives the vectors `embed` gives (so queries match the
corpus) on the embedded model, traced or not."""

import numpy as np
import pytest
from ember.models.catalogue import DEFAULT_EMBEDDER
from ember.models.embedder import QueryEncoder, embed

QUERIES = ["functools cache", "How do I read a file line by line?",
           "word " * 400]  # longer than the model's window: truncated the same way


@pytest.fixture(scope="module")
def encoder():
    return QueryEncoder(DEFAULT_EMBEDDER, threads=1)


def test_embedded_model_is_traced(encoder):
    assert encoder.fast


@pytest.mark.parametrize("query", QUERIES)
def test_traced_vectors_equal_sentence_transformers(encoder, query):
    expected = embed(encoder.model, [query])[0]
    got = encoder(query)
    assert got.shape == expected.shape
    assert np.allclose(got, expected, atol=1e-5)
    assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5


def test_other_layouts_keep_encode(encoder, monkeypatch):
    monkeypatch.setattr(QueryEncoder, "_layout_ok", lambda self: False)
    plain = QueryEncoder(DEFAULT_EMBEDDER, threads=1)
    assert not plain.fast
    assert np.allclose(plain("functools cache"), encoder("functools cache"), atol=1e-5)
