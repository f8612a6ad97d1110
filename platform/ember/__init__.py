"""Ember: a self-hosted LLM platform on Ray.

Importing `ember` stays light: the SDK (`ember.Client`) needs only httpx and
pydantic, so applications can talk to a cluster without Ray, torch or vLLM.
"""

from ember.client import (
    AsyncClient,
    ChatResult,
    Client,
    EmberAPIError,
    Hit,
    ModelInfo,
    RagResult,
    Usage,
)

__all__ = ["AsyncClient", "ChatResult", "Client", "EmberAPIError", "Hit", "ModelInfo", "RagResult",
           "Usage"]
__version__ = "0.1.0"
