"""The fast encoder gives the vectors sentence-transformers gives (so queries match the
corpus) on the embedded model, with each backend: one query (the RAG path) and batches
(ingestion). The reference is `SentenceTransformer.encode` on a model loaded here, apart
from Ember's loader and its `embed` wrapper, so no case compares a backend with itself."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from ember.models.catalogue import DEFAULT_EMBEDDER, resolve_model
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
def reference():
    """`SentenceTransformer.encode` itself: unit vectors, one row per text."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model(DEFAULT_EMBEDDER), device="cpu")

    def encode(texts: list[str], batch_size: int = 32) -> np.ndarray:
        return model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)
    return encode


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
def test_vectors_equal_sentence_transformers(encoders, reference, backend, query):
    encoder = encoders[backend]
    assert encoder.backend == backend
    expected = reference([query])[0]
    got = encoder(query)
    assert got.shape == expected.shape
    assert np.allclose(got, expected, atol=1e-5)
    assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5


def test_other_layouts_keep_encode(reference, monkeypatch):
    monkeypatch.setattr(FastEncoder, "_layout_ok", lambda self: False)
    plain = FastEncoder(DEFAULT_EMBEDDER, threads=1)
    assert not plain.fast and plain.backend == "encode"
    assert np.allclose(plain("functools cache"), reference(["functools cache"])[0], atol=1e-5)


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
def test_batches_equal_sentence_transformers_in_the_callers_order(encoders, reference,
                                                                  batch_size):
    """Ingestion's path: sorted by length and padded per batch inside, rows back in order."""
    encoder = encoders["onnx"]
    expected = reference(BATCH, batch_size=batch_size)
    got = encoder.encode(BATCH, batch_size)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.allclose(got, expected, atol=1e-5)


def test_backends_without_a_batch_graph_encode_batches_with_sentence_transformers(encoders,
                                                                                  reference):
    for name in ("torchscript", "encode"):
        got = encoders[name].encode(BATCH[:4], 2)
        assert got.shape == (4, 384)
        assert np.allclose(got, reference(BATCH[:4]), atol=1e-5)
    assert encoders["onnx"].encode([], 8).shape[0] == 0


def test_the_ingestion_actor_embeds_on_onnx_runtime_and_skips_marker_rows(reference):
    from ember.ingest.stages import EmbedBatch, embed_text

    actor = EmbedBatch(DEFAULT_EMBEDDER, batch_size=8, threads=1)
    assert actor.backend == "onnx"
    batch = {"section": np.array(["Ferries", "", ""], dtype=object),
             "text": np.array(["The ferry leaves at nine.", "", "Tickets on board."],
                              dtype=object),
             "skip_reason": np.array(["", "empty file", ""], dtype=object)}
    vectors = actor(batch)["vector"]
    expected = reference([embed_text("Ferries", "The ferry leaves at nine."),
                          "Tickets on board."])
    assert np.allclose(vectors[[0, 2]], expected, atol=1e-5)
    assert not vectors[1].any()  # a skipped file's marker row carries no vector


def test_a_checked_export_loads_without_torch(encoders):
    """In a fresh interpreter (this one imported torch long ago): the light loader finds
    the export `FastEncoder` checked (the `encoders` fixture) and imports no torch."""
    code = ("import json, sys; from ember.models.catalogue import DEFAULT_EMBEDDER; "
            "from ember.models.fast_encoder import OnnxEncoder; "
            "light = OnnxEncoder.verified(DEFAULT_EMBEDDER, threads=1); "
            "heavy = ('torch', 'sentence_transformers', 'transformers'); "
            "print(json.dumps({'backend': light and light.backend, "
            "'heavy': [m for m in heavy if m in sys.modules]}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"backend": "onnx", "heavy": []}, \
        out.stderr


def test_the_light_encoder_gives_the_checked_vectors(encoders, reference):
    from ember.models.fast_encoder import OnnxEncoder

    light = OnnxEncoder.verified(DEFAULT_EMBEDDER, threads=1)
    assert light is not None and light.backend == "onnx" and light.dim == 384
    got = light.encode(BATCH, 4)
    assert np.allclose(got, reference(BATCH, 4), atol=1e-5)
    assert np.allclose(got, encoders["onnx"].encode(BATCH, 4), atol=1e-6)  # the same export


def refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ember.fast_encoder"]


def test_a_changed_probe_refuses_the_export_saying_so(encoders, caplog):
    """`FastEncoder` saved `encode`'s probe vectors beside the export it matched; the
    light loader checks against them and gives up when they disagree."""
    from ember.config.paths import models_dir
    from ember.models.fast_encoder import OnnxEncoder, probe_path

    probe = probe_path(next((models_dir() / "onnx").glob("*.onnx")))
    saved = np.load(probe)
    caplog.set_level(logging.INFO, logger="ember.fast_encoder")
    try:
        np.save(probe, saved + 0.01)
        assert OnnxEncoder.verified(DEFAULT_EMBEDDER, threads=1) is None
    finally:
        np.save(probe, saved)
    assert any("no longer matches its probe vectors (max difference 0.01)" in m
               for m in refusals(caplog)), refusals(caplog)


@pytest.mark.parametrize("damaged, error", [("probe", "EOFError"),
                                            ("export", "InvalidProtobuf")])
def test_a_damaged_cache_file_refuses_the_export_saying_so(encoders, tmp_path, monkeypatch,
                                                           caplog, damaged, error):
    """A copy of the cache with one file cut short or overwritten: None, naming the error."""
    import shutil

    import ember.models.fast_encoder as fe
    from ember.config.paths import models_dir

    export = next((models_dir() / "onnx").glob("*.onnx"))
    copy = tmp_path / export.name
    if damaged == "export":
        copy.write_bytes(b"not an ONNX graph" * 64)
        shutil.copy(fe.probe_path(export), fe.probe_path(copy))
    else:
        shutil.copy(export, copy)
        fe.probe_path(copy).write_bytes(b"")
    monkeypatch.setattr(fe, "onnx_path", lambda folder: copy)
    caplog.set_level(logging.INFO, logger="ember.fast_encoder")
    assert fe.OnnxEncoder.verified(DEFAULT_EMBEDDER, threads=1) is None
    assert any("cannot be read" in m and error in m for m in refusals(caplog)), \
        refusals(caplog)


def test_a_bug_in_the_light_loader_raises(encoders, monkeypatch):
    """Only the failures it means give None: anything else is not swallowed."""
    from ember.models.fast_encoder import OnnxEncoder

    def broken(self, texts, batch_size=32):
        raise TypeError("a planted bug")

    monkeypatch.setattr(OnnxEncoder, "encode", broken)
    with pytest.raises(TypeError, match="a planted bug"):
        OnnxEncoder.verified(DEFAULT_EMBEDDER, threads=1)


def test_no_export_no_light_encoder(tmp_path, monkeypatch, caplog):
    from ember.models.fast_encoder import OnnxEncoder

    monkeypatch.setenv("EMBER_HOME", str(tmp_path))
    caplog.set_level(logging.INFO, logger="ember.fast_encoder")
    assert OnnxEncoder.verified(DEFAULT_EMBEDDER, threads=1) is None
    [message] = refusals(caplog)
    assert "no checked ONNX export of all-minilm-l6-v2: missing" in message
    assert str(tmp_path / "models" / "onnx") in message
