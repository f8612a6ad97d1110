"""The proxy's stream guard, as an ASGI middleware around small apps.

The real failure (a replica SIGKILLed mid-stream, behind Serve's real proxy)
is tested in tests/integration/test_serving_faults.py; these pin down each
case the guard distinguishes.
"""

from __future__ import annotations

import asyncio
import json

from ember.serving.proxy_guard import StreamGuard, proxy_middlewares
from starlette.middleware import Middleware

SSE = [(b"content-type", b"text/event-stream")]
CHUNK = b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n'


def call(app, disconnect: bool = False) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        if disconnect:
            return {"type": "http.disconnect"}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}
    asyncio.run(StreamGuard(app)(scope, receive, send))
    return sent


def body(sent: list[dict]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def stream_app(*chunks: bytes, end: bool = True, fail: bool = False, read: bool = False):
    async def app(scope, receive, send):
        if read:
            await receive()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if fail:
            raise RuntimeError("replica died")
        if end:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    return app


def test_a_finished_stream_passes_untouched():
    sent = call(stream_app(CHUNK, b"data: [DONE]\n\n"))
    assert body(sent) == CHUNK + b"data: [DONE]\n\n"


def test_a_stream_cut_off_ends_with_an_error_event_and_done():
    for app in (stream_app(CHUNK), stream_app(CHUNK, end=False), stream_app(CHUNK, fail=True)):
        sent = call(app)
        events = body(sent).split(b"\n\n")
        assert events[0] == CHUNK.strip()
        error = json.loads(events[1][len(b"data: "):])["error"]
        assert error["code"] == 503 and "incomplete" in error["message"]
        assert events[2] == b"data: [DONE]"
        assert sent[-1]["more_body"] is False


def test_a_request_that_fails_before_answering_gets_503_with_retry_after():
    async def app(scope, receive, send):
        raise RuntimeError("no replica")

    sent = call(app)
    start = sent[0]
    assert start["status"] == 503 and (b"retry-after", b"5") in start["headers"]
    assert json.loads(body(sent))["error"]["type"] == "server_error"


def test_a_503_gets_retry_after():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"busy", "more_body": False})

    assert (b"retry-after", b"5") in call(app)[0]["headers"]


def test_a_client_that_left_is_not_written_to():
    sent = call(stream_app(CHUNK, end=False, read=True), disconnect=True)
    assert body(sent) == CHUNK


def test_serve_loads_it_as_a_starlette_middleware():
    (middleware,) = proxy_middlewares()
    assert isinstance(middleware, Middleware) and middleware.cls is StreamGuard
