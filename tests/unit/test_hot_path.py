"""The engine replica's request split (`engine_replica.HotPath`), around small ASGI apps.

The real thing (vLLM's app on a real engine, Ember's routes, Serve's proxy) is
exercised by every integration test; these pin down which request goes where
and what reaches the engine's app.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ember.models.adapters import Adapter
from ember.openai_errors import openai_error
from ember.serving.engine_replica import HotPath
from ember.serving.model_names import ModelNames

MODEL = "m"


class Recorder:
    """An ASGI app that records what it was given and answers 200."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, []

    async def __call__(self, scope, receive, send):
        message = await receive() if scope["type"] == "http" else {}
        self.calls.append((scope, message.get("body", b"")))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": self.name.encode()})


class Checks:
    """Stands in for OpenAIRoutes's checks: refuses n > 1 and a key's unknown names; an
    adapter `lora-a` on MODEL, `broken` that failed to load, `keeper` rolled out to
    `keeper.v2` (the real lookups: tests/unit/test_rollouts.py and the integration tests)."""

    lora_bases = {MODEL}
    names = ModelNames({MODEL: ["m-alias"]})
    adapters = {"lora-a": Adapter("lora-a", MODEL, 8, Path("/a")),
                "keeper.v2": Adapter("keeper.v2", MODEL, 8, Path("/k")),
                "broken": Adapter("broken", MODEL, 8, Path("/b"), load_error="bad weights")}

    def hot_path_refusal(self, path, data, key, asked=None):
        if (asked or data["model"]) == "forbidden":
            return openai_error(403, "not for this key")
        return openai_error(400, "n too big", "n") if data.get("n", 1) > 1 else None

    def hot_path_adapter(self, model, base, scope):
        adapter = self.adapters.get("keeper.v2" if model in ("keeper", "forbidden") else model)
        return adapter if adapter and adapter.base == base and not adapter.load_error else None


def call(path: str, body: dict | bytes, method: str = "POST"):
    engine, ember = Recorder("engine"), Recorder("ember")
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    scope = {"type": "http", "method": method, "path": path,
             "headers": [(b"content-length", str(len(raw)).encode())]}
    sent = []

    async def receive():
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(HotPath(MODEL, Checks(), engine, ember)(scope, receive, send))
    return engine, ember, sent, scope


def test_generation_for_the_replicas_model_goes_to_the_engine_app_unchanged():
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    engine, ember, _, scope = call("/v1/chat/completions", body)
    assert not ember.calls and json.loads(engine.calls[0][1]) == body
    assert scope["state"]["ember_served_model"] == MODEL
    engine, ember, _, _ = call("/v1/completions", {"model": MODEL, "prompt": "hi"})
    assert engine.calls and not ember.calls


def test_an_alias_or_another_case_reaches_the_engine_as_the_served_name():
    for sent in ("M", "m-ALIAS"):
        body = {"model": sent, "messages": [{"role": "user", "content": "hi"}]}
        engine, ember, _, _ = call("/v1/chat/completions", body)
        assert not ember.calls and json.loads(engine.calls[0][1]) == {**body, "model": MODEL}


def test_a_model_that_is_not_a_string_goes_to_embers_routes_to_be_refused():
    engine, ember, _, _ = call("/v1/chat/completions", {"model": ["m"], "messages": []})
    assert ember.calls and not engine.calls


def test_everything_else_goes_to_embers_routes_with_the_body_intact():
    for path, body in [("/v1/chat/completions", {"model": "rag:docs", "messages": []}),
                       ("/v1/chat/completions", {"model": "other", "messages": []}),
                       ("/v1/chat/completions", b"not json"),
                       ("/v1/retrieve", {"query": "q"})]:
        engine, ember, _, _ = call(path, body)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        assert not engine.calls and ember.calls[0][1] == raw
    engine, ember, _, _ = call("/v1/models", b"", method="GET")
    assert ember.calls and not engine.calls


def test_a_refused_request_never_reaches_the_engine():
    engine, ember, sent, _ = call("/v1/chat/completions", {"model": MODEL, "n": 5})
    assert not engine.calls and not ember.calls
    assert sent[0]["status"] == 400


def test_a_stream_asks_the_engine_for_usage_and_the_gate_strips_it():
    body = {"model": MODEL, "prompt": "hi", "stream": True}
    engine, _, _, scope = call("/v1/completions", body)
    (engine_scope, raw), = engine.calls
    assert json.loads(raw)["stream_options"] == {"include_usage": True}
    assert (b"content-length", str(len(raw)).encode()) in engine_scope["headers"]
    assert scope["state"]["ember_strip_usage"] is True
    # a client that asked for usage keeps it, and its body is passed as sent
    body["stream_options"] = {"include_usage": True}
    engine, _, _, scope = call("/v1/completions", body)
    assert json.loads(engine.calls[0][1]) == body and "ember_strip_usage" not in scope["state"]


def test_an_adapter_on_the_replicas_model_goes_to_the_engine_app_too():
    body = {"model": "lora-a", "messages": [{"role": "user", "content": "hi"}]}
    engine, ember, _, scope = call("/v1/chat/completions", body)
    assert not ember.calls and json.loads(engine.calls[0][1]) == body  # passed as sent
    assert scope["state"]["ember_served_model"] == "lora-a"
    assert scope["state"]["ember_adapter_base"] == MODEL  # its tokens: the base's cost
    # one that failed to load stays with Ember's routes (they answer its recorded reason)
    engine, ember, _, _ = call("/v1/chat/completions", {**body, "model": "broken"})
    assert ember.calls and not engine.calls


def test_a_rolled_out_name_reaches_the_engine_as_its_version_checked_by_the_name_asked():
    body = {"model": "keeper", "messages": [{"role": "user", "content": "hi"}]}
    engine, _, _, scope = call("/v1/chat/completions", body)
    (engine_scope, raw), = engine.calls
    assert json.loads(raw) == {**body, "model": "keeper.v2"}
    assert (b"content-length", str(len(raw)).encode()) in engine_scope["headers"]
    assert scope["state"]["ember_served_model"] == "keeper.v2"
    engine, _, sent, _ = call("/v1/chat/completions", {**body, "model": "forbidden"})
    assert not engine.calls and sent[0]["status"] == 403


def test_responses_for_the_replicas_model_go_to_the_engine_app_as_sent():
    body = {"model": MODEL, "input": "hi", "stream": True}
    engine, ember, _, scope = call("/v1/responses", body)
    assert not ember.calls and json.loads(engine.calls[0][1]) == body  # no stream_options
    assert "ember_strip_usage" not in scope["state"]  # a Responses stream ends with usage
    engine, ember, _, _ = call("/v1/responses", {"model": "lora-a", "input": "hi"})
    assert engine.calls and not ember.calls
    engine, ember, _, _ = call("/v1/responses", {"model": "rag:docs", "input": "hi"})
    assert ember.calls and not engine.calls  # Ember's route says what to do instead
