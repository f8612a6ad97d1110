"""Embed text with the embedder's vectors, as fast as this CPU allows.

`SentenceTransformer.encode` runs the model op by op in eager PyTorch and, per
call, sorts, pads and wraps feature dicts. For the usual embedder layout (a
transformer, mean pooling, normalisation) the whole of it, pooling included,
runs as one graph instead; backends in order of speed (2-core machine,
MiniLM-L6; docs/rag.md "Retrieval", docs/benchmarks.md "Ingestion throughput"):

1. `onnx`: the graph exported once to ONNX (cached beside the models, keyed by
   the model's files) and run by ONNX Runtime with the model's own fast
   tokenizer: one query in 5.3 ms vs `encode`'s 13.9 ms;
2. `torchscript`: the same graph traced and frozen with TorchScript (one query;
   batches go to `encode`);
3. `encode`: sentence-transformers itself (any other layout).

Two callers: the RAG query path (`encoder(query)`, one thread) and ingestion
(`encoder.encode(texts, batch_size)`, the actor's cores). Each backend is
checked against `encode` at load, on one query and on a padded batch of
unequal texts (max abs difference 1e-4), so queries always match the corpus's
vectors; one that fails to build or to match gives way to the next, with a log
line saying why.

Once an export has matched, `encode`'s vectors for the batch probe are saved
beside it. `OnnxEncoder.verified` then loads that export with neither torch
nor sentence-transformers (7 s of imports here; an ingestion actor and its
read tasks would pay them at every start) and checks it against the saved
vectors instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from ember.models.embedder import embed, embedder_dim, load_embedder

logger = logging.getLogger("ember.fast_encoder")
FAST_BACKENDS = ("onnx", "torchscript")  # in order of speed; `encode` serves otherwise
BACKENDS = (*FAST_BACKENDS, "encode")
PROBE = "how do I read a file line by line"
# Unequal lengths, one over the model's window: padding and truncation are checked too.
BATCH_PROBE = ["functools cache", "Reading and writing files: open() returns a file object, "
               "most commonly used with two arguments.", "word " * 300, PROBE]
TOLERANCE = 1e-4


class OnnxEncoder:
    """The exported graph in ONNX Runtime, fed by the `tokenizers` library: no torch."""

    backend = "onnx"

    def __init__(self, path: Path, folder: Path, max_length: int, dim: int,
                 threads: int, spin: bool = False) -> None:
        import onnxruntime as ort

        self.dim = dim
        self.tokenizer = fast_tokenizer(folder, max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Threads spin between ops only when asked (a batch job's actor: without it the
        # cores idled between ops, 165% of 200% busy in the pipeline); never by default,
        # for the query path shares its cores with an engine.
        options.add_session_config_entry("session.intra_op.allow_spinning",
                                         "1" if spin else "0")
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])

    @classmethod
    def verified(cls, ref: str, threads: int, spin: bool = False) -> OnnxEncoder | None:
        """The cached export of `ref`, if `FastEncoder` checked it against
        sentence-transformers and it still gives the saved probe vectors.

        None, with a log line saying why, when a file it reads is missing or unreadable or
        the vectors no longer match: `FastEncoder` then exports and checks afresh. Anything
        else (an unknown model, a bug here) raises."""
        from ember.models.catalogue import resolve_model

        folder = Path(resolve_model(ref))
        path = onnx_path(folder)
        probe = probe_path(path)
        needed = (path, probe, folder / "tokenizer.json", folder / "sentence_bert_config.json")
        if missing := [str(file) for file in needed if not file.is_file()]:
            logger.info("encoder: no checked ONNX export of %s: missing %s", ref,
                        ", ".join(missing))
            return None
        max_length = _max_seq_length(folder)
        try:
            expected = _load_probe(probe)
            encoder = cls(path, folder, max_length, expected.shape[1], threads, spin)
            got = encoder.encode(BATCH_PROBE, 2)
        except _unreadable_errors() as exc:
            logger.info("encoder: the cached ONNX export of %s (%s) or its probe cannot be "
                        "read: %s: %s", ref, path, type(exc).__name__, exc)
            return None
        diff = float(abs(got - expected).max())
        if diff >= TOLERANCE:
            logger.info("encoder: the cached ONNX export of %s no longer matches its probe "
                        "vectors (max difference %.2g)", ref, diff)
            return None
        return encoder

    def __call__(self, query: str) -> np.ndarray:
        return self.vectors([query])[0]

    def vectors(self, texts: list[str]) -> np.ndarray:
        """One padded run: a unit vector per text."""
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return self.session.run(None, {"ids": ids, "mask": mask})[0]

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        # Longest first, as `encode` sorts them: each batch pads to similar lengths.
        order = np.argsort([-len(text) for text in texts], kind="stable")
        out = np.empty((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = self.vectors([texts[i] for i in rows])
        return out


def fast_tokenizer(folder: Path, max_length: int):
    """The model's `tokenizer.json`, set to cut and pad as sentence-transformers does
    (to `max_length`, padded to the batch's longest)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    padding = tokenizer.padding or {}  # the file's own padding (often fixed length)
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=padding.get("pad_id", 0),
                             pad_token=padding.get("pad_token", "[PAD]"))
    return tokenizer


def _max_seq_length(folder: Path) -> int:
    import json

    return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])


def onnx_path(folder: Path) -> Path:
    from ember.config.paths import models_dir

    return models_dir() / "onnx" / f"{folder.name}-{_files_digest(folder)}.onnx"


def probe_path(path: Path) -> Path:
    return path.with_suffix(".probe.npy")


def _load_probe(probe: Path) -> np.ndarray:
    vectors = np.load(probe)
    if vectors.ndim != 2 or len(vectors) != len(BATCH_PROBE):
        raise ValueError(f"{probe} holds an array of shape {vectors.shape}, not one vector "
                         f"per text of the batch probe ({len(BATCH_PROBE)})")
    return vectors


def _unreadable_errors() -> tuple[type[Exception], ...]:
    """What a damaged or stale cache file raises: the file system; numpy's reader (and its
    broadcast, for an export whose vectors are not the probe's size); ONNX Runtime's
    loader and input checks (its exception types live in its compiled module)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    return (OSError, EOFError, ValueError, ort_errors.Fail, ort_errors.InvalidArgument,
            ort_errors.InvalidGraph, ort_errors.InvalidProtobuf, ort_errors.NoSuchFile)


class FastEncoder:
    """`threads`: intra-op threads (1 on the query path: the engine shares the cores);
    `spin`: ONNX Runtime's threads spin between ops (ingestion's actor)."""

    def __init__(self, ref: str, threads: int = 1, backend: str = "auto",
                 spin: bool = False) -> None:
        import torch

        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"encoder backend must be auto or one of "
                             f"{', '.join(BACKENDS)}, got '{backend}'")
        torch.set_num_threads(threads)
        self.threads, self.spin = threads, spin
        self.model = load_embedder(ref)
        self.backend, self._run, self._run_batch = "encode", self._encode, None
        candidates = {"auto": FAST_BACKENDS, "encode": ()}.get(backend, (backend,))
        for name in candidates:
            try:
                run, run_batch = self._build(name)
                diff = self._difference(run, run_batch)
            except Exception as exc:  # noqa: BLE001 - the next backend serves
                logger.info("encoder: %s unavailable for %s (%s)", name, ref, exc)
                continue
            if diff < TOLERANCE:
                self.backend, self._run, self._run_batch = name, run, run_batch
                if name == "onnx":
                    self._save_probe()
                break
            logger.info("encoder: %s differs from encode by %.2g for %s", name, diff, ref)

    def _difference(self, run, run_batch) -> float:
        diff = float(abs(run(PROBE) - self._encode(PROBE)).max())
        if run_batch is not None:
            expected = embed(self.model, BATCH_PROBE, batch_size=2)
            diff = max(diff, float(abs(run_batch(BATCH_PROBE, 2) - expected).max()))
        return diff

    def _save_probe(self) -> None:
        """`encode`'s vectors for the batch probe, beside the export it matched."""
        probe = probe_path(self._onnx_file())
        if not probe.is_file():
            partial = probe.with_suffix(f".{os.getpid()}.partial")
            with open(partial, "wb") as f:
                np.save(f, embed(self.model, BATCH_PROBE, batch_size=2))
            partial.replace(probe)

    @property
    def dim(self) -> int:
        return embedder_dim(self.model)

    @property
    def fast(self) -> bool:
        return self.backend != "encode"

    def __call__(self, query: str):
        """One text's unit vector (the RAG query path)."""
        return self._run(query)

    def encode(self, texts: list[str], batch_size: int = 64):
        """Unit vectors for many texts, as `embedder.embed` gives them (ingestion)."""
        if self._run_batch is None or not texts:
            return embed(self.model, texts, batch_size)
        return self._run_batch(texts, batch_size)

    def _encode(self, query: str):
        return embed(self.model, [query])[0]

    def _build(self, name: str):
        """(one-text runner, batch runner or None) for a backend."""
        if not self._layout_ok():
            raise ValueError("not a transformer + mean pooling + normalize layout")
        return self._onnx() if name == "onnx" else (self._torchscript(), None)

    def _layout_ok(self) -> bool:
        names = [type(m).__name__ for m in self.model]
        pooling = self.model[1] if len(names) > 1 else None
        return (names[:3] == ["Transformer", "Pooling", "Normalize"] and len(names) == 3
                and getattr(pooling, "pooling_mode", "mean") == "mean"
                and hasattr(self.model[0], "auto_model"))

    def _tokens(self, texts: str | list[str], tensors: str):
        return self.model.tokenizer([texts] if isinstance(texts, str) else texts,
                                    return_tensors=tensors, padding=True, truncation=True,
                                    max_length=self.model.max_seq_length)

    # --- ONNX Runtime ------------------------------------------------------------
    def _onnx(self):
        encoder = OnnxEncoder(self._exported(), self._folder(), self.model.max_seq_length,
                              self.dim, self.threads, self.spin)
        return encoder, encoder.encode

    def _folder(self) -> Path:
        return Path(self.model[0].auto_model.name_or_path or "model")

    def _onnx_file(self) -> Path:
        return onnx_path(self._folder())

    def _exported(self) -> Path:
        """The model's ONNX file, exported on first use (once per model version)."""
        import torch

        path = self._onnx_file()
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        example = self._tokens("a probe query", "pt")
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter notes on shapes: checked at load
            torch.onnx.export(_pooled(self.model[0].auto_model.eval()),
                              (example["input_ids"], example["attention_mask"]), str(partial),
                              input_names=["ids", "mask"], output_names=["vector"],
                              dynamic_axes={"ids": {0: "batch", 1: "tokens"},
                                            "mask": {0: "batch", 1: "tokens"}},
                              opset_version=17, dynamo=False)
        partial.replace(path)  # atomic: replicas exporting at once each write their own
        return path

    # --- TorchScript ---------------------------------------------------------------
    def _torchscript(self):
        import torch

        example = self._tokens("a probe query", "pt")
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about shapes: checked at load
            traced = torch.jit.freeze(torch.jit.trace(
                _pooled(self.model[0].auto_model.eval()),
                (example["input_ids"], example["attention_mask"]), strict=False))

        def run(query: str):
            tokens = self._tokens(query, "pt")
            with torch.inference_mode():
                return traced(tokens["input_ids"], tokens["attention_mask"])[0].numpy()
        return run


def _pooled(transformer):
    """The transformer, mean pooling over real tokens and normalisation: one graph."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, ids, mask):
            hidden = self.inner(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    return Pooled().eval()


def _files_digest(folder: Path) -> str:
    """A short key for the model's version (names, sizes and times of its files) and
    the exporter's (torch's version, read without importing torch)."""
    from importlib.metadata import version

    digest = hashlib.sha256(f"{folder.resolve()}|torch {version('torch')}".encode())
    for file in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
