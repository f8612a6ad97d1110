"""The Serve proxy's guard: a stream that breaks says so.

The engine replica writes the HTTP response itself (`engine_server`), so when
it dies (SIGKILL, OOM, node loss) the only process still holding the client's
connection is Serve's HTTP proxy. Serve's proxy then stops forwarding and
ends the response as if it had finished: a client sees a clean end of an SSE
stream with no `[DONE]` and no error, and cannot tell a cut-off answer from a
finished one (issue 11). This pure-ASGI middleware runs in the proxy
(installed through Serve's `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`, which
`ember up`, the test cluster and the cluster files set) and:

- ends an event stream that stopped before `data: [DONE]` with an
  OpenAI-style error event and `[DONE]`;
- answers 503 with a JSON error and `Retry-After` when a request failed
  before any response started;
- adds `Retry-After` to any 503 that lacks one (Serve's back-pressure).

It never buffers a stream: each message is passed on as it comes; only the
last bytes are kept to see `[DONE]`. Imports nothing heavy: it loads in the
proxy actor at start.
"""

from __future__ import annotations

import json
import logging

from starlette.middleware import Middleware

logger = logging.getLogger("ember.stream_guard")
RETRY_AFTER_S = 5
DONE = b"data: [DONE]"


def proxy_middlewares() -> list[Middleware]:
    """Serve's proxy callback (`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`)."""
    return [Middleware(StreamGuard)]


def error_event(message: str, code: int = 503) -> bytes:
    error = {"message": message, "type": "server_error", "param": None, "code": code}
    return f"data: {json.dumps({'error': error})}\n\n".encode() + DONE + b"\n\n"


class StreamGuard:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = _Watch(send)
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


class _Watch:
    """Passes messages on and remembers what a client has been sent."""

    def __init__(self, send) -> None:
        self._send = send
        self.started = self.sse = self.complete = self.client_gone = False
        self.tail = b""

    async def send(self, message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = list(message.get("headers") or [])
            names = {k.lower() for k, _ in headers}
            self.sse = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                           for k, v in headers)
            if message["status"] == 503 and b"retry-after" not in names:
                message = {**message,
                           "headers": [*headers, (b"retry-after", str(RETRY_AFTER_S).encode())]}
        elif message["type"] == "http.response.body":
            self.tail = (self.tail + message.get("body", b""))[-64:]
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
        body = json.dumps({"error": {
            "message": "The model replica failed before answering; the service is "
                       f"restarting it. Retry in {RETRY_AFTER_S} s.",
            "type": "server_error", "param": None, "code": 503}}).encode()
        await self._send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode())]})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})
