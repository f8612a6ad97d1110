"""The OpenAI-compatible LLM application: `import_path: serve_apps.llm:build_app`.

serve deploy cluster/serve/local.yaml    # args: validated as LLMAppConfig
"""

from __future__ import annotations

from typing import Any

from ember.config.loading import validate
from ember.serving.config import LLMAppConfig
from ember.serving.llm_app import build_llm_app


def build_app(args: dict[str, Any] | None = None):
    """Serve builder: `args` from the Serve YAML (or Python) -> Application."""
    config = validate(LLMAppConfig, dict(args or {}), source="serve_apps.llm args")
    return build_llm_app(config)
