"""The RAG application: `import_path: serve_apps.rag:build_app`.

Every OpenAI route of serve_apps.llm, plus retrieval (`rag:<collection>`
models, /v1/retrieve, /generate, /rag-generate, /v1/embeddings, /health).

    serve deploy cluster/serve/local.yaml    # args: validated as RAGAppConfig
"""

from __future__ import annotations

from typing import Any

from ember.config.loading import validate
from ember.serving.rag.app import build_rag_app
from ember.serving.rag.config import RAGAppConfig


def build_app(args: dict[str, Any] | None = None):
    config = validate(RAGAppConfig, dict(args or {}), source="serve_apps.rag args")
    return build_rag_app(config)
