"""Model catalogue: embedded defaults, local paths and Hugging Face ids."""

from ember.models.catalogue import (
    CATALOGUE,
    DEFAULT_EMBEDDER,
    DEFAULT_LLM,
    ModelNotAvailableError,
    resolve_model,
)

__all__ = [
    "CATALOGUE",
    "DEFAULT_EMBEDDER",
    "DEFAULT_LLM",
    "ModelNotAvailableError",
    "resolve_model",
]
