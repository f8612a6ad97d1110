"""Load a sentence-transformers embedder from a model reference.

Used by the ingestion actors and the embeddings service alike, so a corpus
and its queries are always embedded the same way (normalised vectors,
cosine similarity).
"""

from __future__ import annotations

from functools import lru_cache

from ember.models.catalogue import resolve_model


@lru_cache(maxsize=2)
def load_embedder(ref: str, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a "Loading weights" bar per load otherwise
    return SentenceTransformer(resolve_model(ref), device=device)


def embed(model, texts: list[str], batch_size: int = 64):
    """Unit-length float32 vectors, one row per text."""
    return model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)


def embedder_dim(model) -> int:
    return int(model.get_embedding_dimension())


def embedder_dim_of(ref: str) -> int:
    """The vector size from the model's files (its pooling config), loading it only if absent."""
    import json
    from pathlib import Path

    pooling = Path(resolve_model(ref)) / "1_Pooling" / "config.json"
    if pooling.is_file():
        return int(json.loads(pooling.read_text())["word_embedding_dimension"])
    return embedder_dim(load_embedder(ref))
