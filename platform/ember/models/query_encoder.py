"""Embed one short query at a time, as fast as this CPU allows: the RAG query path.

`SentenceTransformer.encode` is built for batches: per call it sorts, pads and
wraps feature dicts and runs the model op by op in eager mode. For one query on
the RAG path that overhead is most of the time. For the usual embedder layout
(a transformer, mean pooling, normalisation) the whole of it, pooling included,
runs as one graph; backends in order of speed (one query, one thread, 2-core
machine, MiniLM-L6; README "Retrieval"):

1. `onnx`: the graph exported once to ONNX (cached beside the models, keyed by
   the model's files) and run by ONNX Runtime;
2. `torchscript`: the same graph traced and frozen with TorchScript;
3. `encode`: sentence-transformers itself (any other layout).

Each backend is checked against `encode` at load (max abs difference 1e-4 on a
probe query, so queries always match the corpus's vectors); one that fails to
build or to match gives way to the next, with a log line saying why.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

from ember.models.embedder import embed, load_embedder

logger = logging.getLogger("ember.query_encoder")
FAST_BACKENDS = ("onnx", "torchscript")  # in order of speed; `encode` serves otherwise
BACKENDS = (*FAST_BACKENDS, "encode")
PROBE = "how do I read a file line by line"
TOLERANCE = 1e-4


class QueryEncoder:
    def __init__(self, ref: str, threads: int = 1, backend: str = "auto") -> None:
        import torch

        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"query encoder backend must be auto or one of "
                             f"{', '.join(BACKENDS)}, got '{backend}'")
        torch.set_num_threads(threads)
        self.threads = threads
        self.model = load_embedder(ref)
        self.backend, self._run = "encode", self._encode
        candidates = {"auto": FAST_BACKENDS, "encode": ()}.get(backend, (backend,))
        for name in candidates:
            try:
                run = self._build(name)
                diff = float(abs(run(PROBE) - self._encode(PROBE)).max())
            except Exception as exc:  # noqa: BLE001 - the next backend serves
                logger.info("query encoder: %s unavailable for %s (%s)", name, ref, exc)
                continue
            if diff < TOLERANCE:
                self.backend, self._run = name, run
                break
            logger.info("query encoder: %s differs from encode by %.2g for %s", name, diff, ref)

    @property
    def fast(self) -> bool:
        return self.backend != "encode"

    def __call__(self, query: str):
        return self._run(query)

    def _encode(self, query: str):
        return embed(self.model, [query])[0]

    def _build(self, name: str):
        if not self._layout_ok():
            raise ValueError("not a transformer + mean pooling + normalize layout")
        return self._onnx() if name == "onnx" else self._torchscript()

    def _layout_ok(self) -> bool:
        names = [type(m).__name__ for m in self.model]
        pooling = self.model[1] if len(names) > 1 else None
        return (names[:3] == ["Transformer", "Pooling", "Normalize"] and len(names) == 3
                and getattr(pooling, "pooling_mode", "mean") == "mean"
                and hasattr(self.model[0], "auto_model"))

    def _tokens(self, text: str, tensors: str):
        return self.model.tokenizer([text], return_tensors=tensors, truncation=True,
                                    max_length=self.model.max_seq_length)

    # --- ONNX Runtime ------------------------------------------------------------
    def _onnx(self):
        import onnxruntime as ort

        path = self._exported()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No spinning worker threads: the engine shares these cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(query: str):
            tokens = self._tokens(query, "np")
            return session.run(None, {"ids": tokens["input_ids"].astype("int64"),
                                      "mask": tokens["attention_mask"].astype("int64")})[0][0]
        return run

    def _exported(self) -> Path:
        """The model's ONNX file, exported on first use (once per model version)."""
        import torch

        from ember.config.paths import models_dir

        folder = Path(self.model[0].auto_model.name_or_path or "model")
        path = models_dir() / "onnx" / f"{folder.name}-{_files_digest(folder)}.onnx"
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
    the exporter's (torch's version)."""
    import torch

    digest = hashlib.sha256(f"{folder.resolve()}|torch {torch.__version__}".encode())
    for file in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
