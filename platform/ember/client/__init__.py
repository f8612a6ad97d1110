"""Ember's Python SDK: httpx + pydantic only (no Ray, torch or vLLM)."""

from ember.client.async_client import AsyncClient
from ember.client.sync_client import Client
from ember.client.types import (
    ChatResult,
    ChatStream,
    EmberAPIError,
    Hit,
    ModelInfo,
    RagResult,
    RagStream,
    Usage,
)

__all__ = ["AsyncClient", "ChatResult", "ChatStream", "Client", "EmberAPIError", "Hit",
           "ModelInfo", "RagResult", "RagStream", "Usage"]
