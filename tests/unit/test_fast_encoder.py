"""The fast encoder gives the vectors `embed` gives (so queries match the corpus) on the
embedded model, with each backend: one query (the RAG path) and batches (ingestion)."""

import numpy as np
import pytest
from ember.models.catalogue import DEFAULT_EMBEDDER
from ember.models.embedder import embed
from ember.models.fast_encoder import FastEncoder

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
    return {name: FastEncoder(DEFAULT_EMBEDDER, threads=1, backend=name)
            for name in ("onnx", "torchscript", "encode")}


def test_auto_picks_onnx_runtime_for_the_embedded_model():
    assert FastEncoder(DEFAULT_EMBEDDER, threads=1).backend == "onnx"


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
    monkeypatch.setattr(FastEncoder, "_layout_ok", lambda self: False)
    plain = FastEncoder(DEFAULT_EMBEDDER, threads=1)
    assert not plain.fast and plain.backend == "encode"
    assert np.allclose(plain("functools cache"), encoders["onnx"]("functools cache"), atol=1e-5)


def test_a_backend_that_does_not_match_gives_way(monkeypatch):
    import ember.models.fast_encoder as fe

    monkeypatch.setattr(fe, "TOLERANCE", -1.0)  # nothing matches: encode serves
    assert FastEncoder(DEFAULT_EMBEDDER, threads=1).backend == "encode"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="encoder backend must be auto or one of"):
        FastEncoder(DEFAULT_EMBEDDER, backend="tensorrt")


BATCH = ["functools cache", "word " * 400, "Reading and writing files.",
         "The ferry leaves the pier at nine; tickets are sold on board.", "a", "b c"] * 3


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_batches_equal_sentence_transformers_in_the_callers_order(encoders, batch_size):
    """Ingestion's path: sorted by length and padded per batch inside, rows back in order."""
    encoder = encoders["onnx"]
    expected = embed(encoder.model, BATCH, batch_size=batch_size)
    got = encoder.encode(BATCH, batch_size)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.allclose(got, expected, atol=1e-5)


def test_backends_without_a_batch_graph_encode_batches_with_sentence_transformers(encoders):
    for name in ("torchscript", "encode"):
        got = encoders[name].encode(BATCH[:4], 2)
        assert np.allclose(got, embed(encoders[name].model, BATCH[:4]), atol=1e-5)
    assert encoders["onnx"].encode([], 8).shape[0] == 0


def test_the_ingestion_actor_embeds_on_onnx_runtime_and_skips_marker_rows():
    from ember.data.stages import EmbedBatch, embed_text

    actor = EmbedBatch(DEFAULT_EMBEDDER, batch_size=8, threads=1)
    assert actor.backend == "onnx"
    batch = {"section": np.array(["Ferries", "", ""], dtype=object),
             "text": np.array(["The ferry leaves at nine.", "", "Tickets on board."],
                              dtype=object),
             "skip_reason": np.array(["", "empty file", ""], dtype=object)}
    vectors = actor(batch)["vector"]
    from ember.models.embedder import load_embedder

    expected = embed(load_embedder(DEFAULT_EMBEDDER),
                     [embed_text("Ferries", "The ferry leaves at nine."), "Tickets on board."])
    assert np.allclose(vectors[[0, 2]], expected, atol=1e-5)
    assert not vectors[1].any()  # a skipped file's marker row carries no vector


def test_a_checked_export_loads_without_torch_and_a_changed_probe_refuses_it(encoders):
    """`FastEncoder` saved `encode`'s probe vectors beside the export it matched; the
    light loader checks against them and gives up (None) when they disagree."""
    from ember.config.paths import models_dir
    from ember.models.fast_encoder import OnnxEncoder, probe_path

    light = OnnxEncoder.verified(DEFAULT_EMBEDDER, threads=1)
    assert light is not None and light.backend == "onnx" and light.dim == 384
    assert np.allclose(light.encode(BATCH, 4), encoders["onnx"].encode(BATCH, 4), atol=1e-6)
    probe = probe_path(next((models_dir() / "onnx").glob("*.onnx")))
    saved = np.load(probe)
    try:
        np.save(probe, saved + 0.01)
        assert OnnxEncoder.verified(DEFAULT_EMBEDDER, threads=1) is None
    finally:
        np.save(probe, saved)


def test_no_export_no_light_encoder(tmp_path, monkeypatch):
    from ember.models.fast_encoder import OnnxEncoder

    monkeypatch.setenv("EMBER_HOME", str(tmp_path))
    assert OnnxEncoder.verified(DEFAULT_EMBEDDER, threads=1) is None
