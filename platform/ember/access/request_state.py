"""What the gate, the engine replica's hot path and the routes tell each other about a request.

They share it in the ASGI scope's `state` (the dict Starlette's `request.state`
reads and writes), and only through these functions:
- the API key the gate found (None with auth off): the routes check the key's
  models with it, the Batch API files a file or batch under it;
- the LLM that served the request (for a RAG chat, the answering model): the
  usage row names it, the proxy's stream guard learns it from the usage header;
  for a LoRA adapter also its base, whose replicas' cost its tokens share;
- whether the engine's usage event is to be dropped: Ember asked the engine for
  it (to meter a stream) and the client did not;
- which version of a rolled-out name answers (`ember.models.rollouts`): chosen
  once per request, so a RAG answer and its route agree.

`scope` is an ASGI scope; a route passes `request.scope`. Light: no imports, so
the gate and the serving layer above it can both use it.
"""

from __future__ import annotations

_KEY = "ember_key"
_SERVED_MODEL = "ember_served_model"
_STRIP_USAGE = "ember_strip_usage"
_ADAPTER_BASE = "ember_adapter_base"
_VERSION = "ember_version"


def state_of(scope: dict) -> dict:
    """The request's state (created empty if the scope has none yet)."""
    return scope.setdefault("state", {})


def set_key(scope: dict, key) -> None:
    state_of(scope)[_KEY] = key


def key_of(scope: dict):
    """The ApiKey the gate found for this request (None with auth off)."""
    return state_of(scope).get(_KEY)


def set_served_model(scope: dict, model: str) -> None:
    state_of(scope)[_SERVED_MODEL] = model


def served_model_of(scope: dict) -> str | None:
    return state_of(scope).get(_SERVED_MODEL)


def set_adapter_base(scope: dict, base: str) -> None:
    state_of(scope)[_ADAPTER_BASE] = base


def adapter_base_of(scope: dict) -> str | None:
    """The base model of the LoRA adapter that served the request, or None."""
    return state_of(scope).get(_ADAPTER_BASE)


def set_strip_usage(scope: dict) -> None:
    """The engine will send a usage event the client did not ask for: the gate drops it."""
    state_of(scope)[_STRIP_USAGE] = True


def strips_usage(scope: dict) -> bool:
    return bool(state_of(scope).get(_STRIP_USAGE))


def set_version(scope: dict, asked: str, adapter: str) -> None:
    """The rolled-out name `asked` answers from `adapter` for this request."""
    state_of(scope)[_VERSION] = (asked, adapter)


def version_of(scope: dict, asked: str) -> str | None:
    """The version already chosen for `asked` in this request, or None."""
    chosen = state_of(scope).get(_VERSION)
    return chosen[1] if chosen and chosen[0] == asked else None
