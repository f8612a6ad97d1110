"""The replica's query encoder gives the vectors `embed` gives (so queries match the
corpus) on the embedded model, with each backend."""

import numpy as np
import pytest
from ember.models.catalogue import DEFAULT_EMBEDDER
from ember.models.embedder import embed
from ember.models.query_encoder import QueryEncoder

QUERIES = ["functools cache", "How do I read a file line by line?",
           "word " * 400]  # longer than the model's window: truncated the same way


@pytest.fixture(scope="module", autouse=True)
def own_model_cache(tmp_path_factory):
    """A fresh EMBER_HOME: the ONNX export happens here, not in the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBER_HOME", str(tmp_path_factory.mktemp("ember-home")))
        yield


@pytest.fixture(scope="module")
def encoders():
    return {name: QueryEncoder(DEFAULT_EMBEDDER, threads=1, backend=name)
            for name in ("onnx", "torchscript", "encode")}


def test_auto_picks_onnx_runtime_for_the_embedded_model():
    assert QueryEncoder(DEFAULT_EMBEDDER, threads=1).backend == "onnx"


def test_the_onnx_export_is_cached(encoders, tmp_path_factory):
    from ember.config.paths import models_dir

    exported = list((models_dir() / "onnx").glob("*.onnx"))
    assert len(exported) == 1 and exported[0].stat().st_size > 10_000_000
    assert not list((models_dir() / "onnx").glob("*.partial"))


@pytest.mark.parametrize("backend", ["onnx", "torchscript", "encode"])
@pytest.mark.parametrize("query", QUERIES)
def test_vectors_equal_sentence_transformers(encoders, backend, query):
    encoder = encoders[backend]
    assert encoder.backend == backend
    expected = embed(encoder.model, [query])[0]
    got = encoder(query)
    assert got.shape == expected.shape
    assert np.allclose(got, expected, atol=1e-5)
    assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5


def test_other_layouts_keep_encode(encoders, monkeypatch):
    monkeypatch.setattr(QueryEncoder, "_layout_ok", lambda self: False)
    plain = QueryEncoder(DEFAULT_EMBEDDER, threads=1)
    assert not plain.fast and plain.backend == "encode"
    assert np.allclose(plain("functools cache"), encoders["onnx"]("functools cache"), atol=1e-5)


def test_a_backend_that_does_not_match_gives_way(monkeypatch):
    import ember.models.query_encoder as qe

    monkeypatch.setattr(qe, "TOLERANCE", -1.0)  # nothing matches: encode serves
    assert QueryEncoder(DEFAULT_EMBEDDER, threads=1).backend == "encode"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be auto or one of"):
        QueryEncoder(DEFAULT_EMBEDDER, backend="tensorrt")
