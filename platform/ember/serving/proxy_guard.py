"""The Serve proxy's guard: a stream that breaks says so.

The engine replica writes the HTTP response itself (`engine_replica`), so when
it dies (SIGKILL, OOM, node loss) the only process still holding the client's
connection is Serve's HTTP proxy. Serve's proxy then stops forwarding and
ends the response as if it had finished: a client sees a clean end of an SSE
stream with no `[DONE]` and no error, and cannot tell a cut-off answer from a
finished one (issue 11). This pure-ASGI middleware runs in the proxy
(installed through Serve's `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`, which
`ember up --ingress proxy` sets: `ember.cluster.environment`; behind the default
HAProxy ingress there is no Python proxy, and a broken stream is a cut connection,
docs/architecture.md "Serving hot path") and:

- ends an event stream that stopped before `data: [DONE]` with an
  OpenAI-style error event and `[DONE]`;
- answers 503 with a JSON error and `Retry-After` when a request failed
  before any response started;
- adds `Retry-After` to any 503 that lacks one (Serve's back-pressure);
- writes the usage row of a request that broke this way: the replica that
  would have written it is dead. Its gate put the keeper, row id and key in
  an `x-ember-usage` header (stripped here, clients never see it), so the row
  has the same id as the replica's own (written once if both arrive); the
  completion tokens are the events the client was sent. A request that failed
  before any response has no such header: its row names the key by its hash
  and goes to every usage keeper, which keep only the keys they know.

It never buffers a stream: each message is passed on as it comes; only the
last bytes are kept to see `[DONE]`. Imports nothing heavy: it loads in the
proxy actor at start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid

from starlette.middleware import Middleware

from ember.openai_errors import error_body

logger = logging.getLogger("ember.proxy_guard")
RETRY_AFTER_S = 5
DONE = b"data: [DONE]"
USAGE_HEADER = b"x-ember-usage"  # ember.access.gate.USAGE_HEADER (not imported: light)
KEEPER_PREFIX = "ember-quota-"  # ember.access.metering.keeper_name


def proxy_middlewares() -> list[Middleware]:
    """Serve's proxy callback (`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`)."""
    return [Middleware(StreamGuard)]


def error_event(message: str, code: int = 503) -> bytes:
    body = error_body(message, "server_error", None, code)
    return f"data: {json.dumps(body)}\n\n".encode() + DONE + b"\n\n"


class StreamGuard:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = _Watch(send)
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            await self.app(scope, watch.receive(receive), watch.send)
        except Exception as exc:  # noqa: BLE001 - answered below, never swallowed silently
            failure = exc
        if watch.complete or watch.client_gone:
            return
        reason = f"{type(failure).__name__}: {failure}" if failure else \
            "the response ended before it was complete"
        logger.warning("ember: %s %s: %s; telling the client", scope.get("method"),
                       scope.get("path"), reason)
        await watch.finish_broken()
        await record_broken(scope, watch, time.perf_counter() - started)


async def record_broken(scope, watch: _Watch, latency_s: float) -> None:
    """The usage row the dead replica could not write (see the module doc)."""
    import ray

    if scope.get("path") in ("/health",) or not ray.is_initialized():
        return  # outside a Ray worker (unit tests) there is no keeper to tell
    keeper, row_id, key_id, served = watch.usage or (None, uuid.uuid4().hex, "-", "-")
    row = {"row_id": row_id, "ts": time.time(), "key_id": None if key_id == "-" else int(key_id),
           "model": None if served == "-" else served, "served_model": None if served == "-"
           else served, "route": scope.get("path", ""), "status": 503, "prompt_tokens": 0,
           "completion_tokens": watch.events, "latency_s": latency_s, "ttft_s": None}
    if watch.usage is None:
        row["key_hash"] = _bearer_hash(scope)
    try:
        names = [keeper] if keeper else await asyncio.to_thread(_keeper_names)
        for name in names:
            handle = await asyncio.to_thread(ray.get_actor, name, "ember")
            await asyncio.wait_for(handle.record_rows.remote([dict(row)]), 15)
    except Exception as exc:  # noqa: BLE001 - the client's answer matters more; say it
        logger.warning("ember: could not write the usage row of a broken request (%s): %s",
                       row_id, exc)


def _keeper_names() -> list[str]:
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "ember" and a["name"].startswith(KEEPER_PREFIX)]


def _bearer_hash(scope) -> str | None:
    for name, value in scope.get("headers") or []:
        if name.lower() == b"authorization":
            _, _, key = value.decode("latin-1").partition(" ")
            return hashlib.sha256(key.strip().encode()).hexdigest() if key.strip() else None
    return None


class _Watch:
    """Passes messages on and remembers what a client has been sent."""

    def __init__(self, send) -> None:
        self._send = send
        self.started = self.sse = self.complete = self.client_gone = False
        self.tail = b""
        self.usage: list[str] | None = None  # the replica's x-ember-usage fields
        self.events = 0  # data events sent: a stream's completion tokens, near enough

    async def send(self, message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = list(message.get("headers") or [])
            if any(k.lower() == USAGE_HEADER for k, _ in headers):
                self.usage = next(v.decode() for k, v in headers
                                  if k.lower() == USAGE_HEADER).split()[:4]
                headers = [(k, v) for k, v in headers if k.lower() != USAGE_HEADER]
                message = {**message, "headers": headers}
            names = {k.lower() for k, _ in headers}
            self.sse = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                           for k, v in headers)
            if message["status"] == 503 and b"retry-after" not in names:
                message = {**message,
                           "headers": [*headers, (b"retry-after", str(RETRY_AFTER_S).encode())]}
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            self.tail = (self.tail + body)[-64:]
            if self.sse:
                self.events += body.count(b"data: {")
            if not message.get("more_body", False):
                if self.sse and DONE not in self.tail:  # the app ended the stream early
                    await self._pass({**message, "more_body": True})
                    return await self.finish_broken()
                self.complete = True
        await self._pass(message)

    async def _pass(self, message) -> None:
        try:
            await self._send(message)
        except OSError:  # the client went away; nothing left to tell it
            self.client_gone = True

    def receive(self, receive):
        async def watched():
            message = await receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
            return message
        return watched

    async def finish_broken(self) -> None:
        self.complete = True
        try:
            if not self.started:
                await self._send_json_503()
            elif self.sse:
                await self._send({"type": "http.response.body", "more_body": False,
                                  "body": error_event("The model replica serving this stream "
                                                      "stopped before it finished; the answer "
                                                      "is incomplete. Retry the request.")})
            else:  # a JSON body cut short cannot be mended; end it (the client sees a bad body)
                await self._send({"type": "http.response.body", "body": b"",
                                  "more_body": False})
        except OSError:
            self.client_gone = True

    async def _send_json_503(self) -> None:
        body = json.dumps(error_body(
            "The model replica failed before answering; the service is "
            f"restarting it. Retry in {RETRY_AFTER_S} s.", "server_error", None, 503)).encode()
        await self._send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode())]})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})
