"""The gate in front of every route: API key, limits, usage record.

`AccessMiddleware` is a pure ASGI middleware (streams pass through untouched,
no per-chunk buffering) in front of the engine replica's app; the `AccessGate`
it is given is built by the replica's routes from the app's `access:` config.
Per request, in order:
1. body size from Content-Length (413; a chunked body is counted as it
   arrives and cut off at the limit);
2. `Authorization: Bearer <key>`: missing, malformed, unknown or revoked
   -> 401 (a replica caches lookups for `key_cache_s`); a client address with
   `failed_auth_per_minute` such 401s in a minute gets 429 until the minute ends
   (`auth_throttle`);
3. the key's requests/min, tokens/min and budget, through the shared
   `QuotaKeeper` (429 with Retry-After; 402 for a spent budget) - only for
   keys that have such limits; while the keeper is away, from this replica's
   own view (`accounting.KeeperLink`), 503 only if a budget cannot be read;
4. the route runs; the routes check the parsed body's model (403) and the
   per-request ceilings (`n`, `max_tokens`, embeddings inputs: 400);
5. afterwards one usage row (key, model, the LLM that served it, route,
   status, tokens, latency, time to first byte) goes to the replica's outbox,
   which delivers it to the keeper until acknowledged. A key with a budget
   is refused (402) once the keeper has charged it that much (`metering.py`:
   measured replica cost split by tokens).
`/health` is open (load balancers and Serve health checks carry no key).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid

from starlette.responses import JSONResponse

from ember.access.auth_throttle import build_throttle
from ember.access.config import AccessConfig
from ember.access.keys import KEY_PREFIX, ApiKey, KeyLookup
from ember.access.request_state import (
    adapter_base_of,
    served_model_of,
    set_key,
    state_of,
    strips_usage,
)
from ember.access.telemetry import observe
from ember.openai_errors import openai_error

logger = logging.getLogger("ember.access")
OPEN_PATHS = frozenset({"/health"})
# On every response: "<keeper> <row id> <key id or -> <served model or ->", for the
# Serve proxy's stream guard, which writes the row itself if this replica dies before
# it could (`proxy_guard.record_broken`), and strips the header from the response.
USAGE_HEADER = b"x-ember-usage"


def behind_stream_guard() -> bool:
    """Whether Serve's proxy runs Ember's stream guard in front of this replica (the
    `proxy` ingress), the only reader of USAGE_HEADER. Behind HAProxy nothing would strip
    the header, so it is not sent (ember.cluster.environment sets these variables)."""
    return ("ember.serving.proxy_guard" in
            os.environ.get("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "")
            and os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1")

# Generation routes get an open usage row when admitted (status 0, no tokens), replaced
# by the finished row of the same id: a request whose replica dies while it runs keeps a
# row. Behind HAProxy no other process sees its stream to write one (docs/operations.md).
OPEN_ROW_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses",
                            "/generate", "/rag-generate"})


class AccessGate:
    def __init__(self, config: AccessConfig, prices: dict[str, float] | None = None) -> None:
        from ember.access.accounting import KeeperLink
        from ember.access.store import check_ready, migrate

        self.config, self.limits = config, config.limits
        self.url = config.url()
        self.max_body = int(config.limits.max_body_mb * 1024 * 1024)
        # routes with their own ceiling (uploads: /v1/files), path -> (bytes, setting)
        self.path_limits: dict[str, tuple[int, str]] = {}
        if config.auth:
            check_ready(self.url)  # no keys database: no service (never an open door)
            self.keys = KeyLookup(self.url, config.key_cache_s)
        else:
            migrate(self.url)  # usage is still recorded
            self.keys = None
            logger.warning("API keys are OFF (access.auth: false): anyone who reaches this "
                           "service can use every route")
        self.throttle = build_throttle(config)
        self.prices = prices or {}
        self.keeper = KeeperLink(self.url, config.cost_sample_s, self.prices,
                                 config.usage_buffer_rows, config.keeper_replace_after_s)

    # --- before the route ----------------------------------------------------
    def body_limit(self, path: str) -> tuple[int, str]:
        return self.path_limits.get(path, (self.max_body, "access.limits.max_body_mb"))

    def authenticate(self, headers: dict[bytes, bytes]) -> ApiKey | JSONResponse | None:
        if self.keys is None:
            return None
        raw = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, key = raw.partition(" ")
        if not raw:
            return _unauthorized("Missing API key: send 'Authorization: Bearer <key>' "
                                 "(`ember keys create NAME` makes one).")
        key = key.strip()
        if scheme.lower() != "bearer" or not key.startswith(KEY_PREFIX):
            return _unauthorized(f"Malformed Authorization header: expected 'Bearer "
                                 f"{KEY_PREFIX}...'.")
        found = self.keys.find(key)
        if found is None:
            return _unauthorized(f"Invalid or revoked API key '{key[:10]}...'.")
        return found

    def throttled(self, scope, headers: dict) -> JSONResponse | None:
        """429 for a client address refused after too many bad keys (`auth_throttle`)."""
        if self.throttle is None or not self.throttle.blocked:  # nearly always: no cost
            return None
        wait = self.throttle.retry_after(self.throttle.address(scope, headers),
                                         time.monotonic())
        if wait is None:
            return None
        response = openai_error(429, f"Too many requests with an invalid API key from this "
                                     f"address ({self.throttle.limit} within a minute): "
                                     f"refused for {wait} s more. Check the key you send "
                                     f"(`ember keys list` shows the valid ones).")
        response.headers["Retry-After"] = str(wait)
        return response

    def auth_failed(self, scope, headers: dict) -> None:
        if self.throttle is not None:
            self.throttle.failed(self.throttle.address(scope, headers), time.monotonic())

    async def admit(self, key: ApiKey | None) -> JSONResponse | None:
        if key is None or (key.rpm is None and key.tpm is None and key.budget_usd is None):
            return None
        verdict = await self.keeper.admit(key)
        if verdict["reason"] is None:
            return None
        if verdict["reason"] == "unavailable":
            response = openai_error(503, f"Accounting is unavailable: the usage keeper cannot "
                                         f"be reached ({verdict['why']}) and key "
                                         f"'{key.name}''s budget cannot be read. Retry in 5 s.")
            response.headers["Retry-After"] = "5"
            return response
        if verdict["reason"] == "budget":
            return openai_error(402, f"Key '{key.name}' has spent its budget: "
                                     f"${verdict['spent']:.6f} of ${key.budget_usd:g}. Use "
                                     f"another key, or ask the operator for one with a "
                                     f"larger --budget-usd.")
        wait = verdict["retry_after"]
        which = (f"{key.rpm} requests" if key.rpm is not None else "") + \
                (" / " if key.rpm is not None and key.tpm is not None else "") + \
                (f"{key.tpm} tokens" if key.tpm is not None else "")
        response = openai_error(429, f"Rate limit reached for key '{key.name}' ({which} per "
                                     f"minute). Retry after {wait:.1f}s.")
        response.headers["Retry-After"] = str(max(1, round(wait + 0.5)))
        return response

    # --- inside the route (parsed body) --------------------------------------
    def check_model(self, key: ApiKey | None, *models: str | None) -> JSONResponse | None:
        for model in models:
            if key is not None and model and not key.allows(model):
                return openai_error(403, f"Key '{key.name}' may not use model '{model}' "
                                         f"(allowed: {', '.join(key.models)}).", "model")
        return None

    def check_generation(self, body) -> JSONResponse | None:
        n = getattr(body, "n", None) or 1
        if isinstance(n, int) and n > self.limits.max_n:
            return _over("n", n, self.limits.max_n)
        for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            value = getattr(body, field, None)
            if isinstance(value, int) and value > self.limits.max_tokens:
                return _over(field, value, self.limits.max_tokens)
        return None

    def check_embedding_inputs(self, count: int) -> JSONResponse | None:
        if count > self.limits.max_embedding_inputs:
            return _over("input", count, self.limits.max_embedding_inputs, what="inputs")
        return None

    def open_row(self, key: ApiKey | None, route: str, meter: UsageMeter) -> None:
        """The admitted request's row, before it runs (see OPEN_ROW_PATHS)."""
        self.keeper.record({"row_id": meter.row_id, "ts": time.time(),
                            "key_id": key.id if key else None, "model": None,
                            "served_model": None, "route": route, "status": 0,
                            "prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0,
                            "ttft_s": None, "open": True})

    # --- after the route -----------------------------------------------------
    def record(self, key: ApiKey | None, route: str, meter: UsageMeter, started: float) -> None:
        served = served_model_of(meter.scope) if meter.scope is not None else None
        row = {"row_id": meter.row_id, "ts": time.time(), "key_id": key.id if key else None,
               "model": meter.model,
               "served_model": served or meter.model, "route": route, "status": meter.status or 500,
               "prompt_tokens": meter.prompt_tokens, "completion_tokens": meter.completion_tokens,
               "latency_s": time.perf_counter() - started,
               "ttft_s": meter.first_byte - started if meter.first_byte else None}
        if meter.scope is not None and (base := adapter_base_of(meter.scope)):
            row["engine"] = base  # an adapter's tokens share its base's replica cost
        self.keeper.record(row)
        observe(row, key.name if key else "-")

    def health(self) -> dict:
        """Accounting's state for /health: `degraded` with the reason while the keeper is away."""
        return self.keeper.status()


def _unauthorized(message: str) -> JSONResponse:
    response = openai_error(401, message)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _over(param: str, value: int, limit: int, what: str = "") -> JSONResponse:
    return openai_error(400, f"'{param}' is {value}{' ' + what if what else ''}; this service "
                             f"allows at most {limit} (access.limits).", param)


class UsageMeter:
    """Watches a response go out: status, time to first byte, model and token usage.

    JSON bodies are parsed once at their end; in an SSE stream only events that
    mention "usage" are parsed. With `strip_usage` (the routes asked the engine
    for a usage event the client did not ask for) that event is not sent on.
    """

    def __init__(self, tag: str | None = None) -> None:
        self.row_id = uuid.uuid4().hex
        self.tag = tag  # the usage header but its last field (see USAGE_HEADER)
        self.status = 0
        self.first_byte: float | None = None
        self.model: str | None = None
        self.prompt_tokens = self.completion_tokens = 0
        self.strip_usage = False
        self.scope: dict | None = None  # the request's scope (its state: `request_state`)
        self._sse = False
        self._json = bytearray()

    def wrap(self, send, scope, refuse_start=None):
        """`send` watched. `refuse_start()` true when the response starts: that response is
        dropped (the gate answers instead). One wrapper, no copy of a message it passes
        unchanged: it runs for every event of every stream (docs/architecture.md)."""
        self.scope = scope
        state_of(scope)  # one state dict, shared by the copies of the scope the app makes
        dropped = False

        async def metered(message) -> None:
            nonlocal dropped
            if message["type"] == "http.response.body":
                if dropped:
                    return
                body = message.get("body", b"")
                if body and self.first_byte is None:
                    self.first_byte = time.perf_counter()
                if self._sse:
                    if body:
                        seen = self._see_events(body)
                        if seen is not body:
                            message = {**message, "body": seen}
                elif len(self._json) < 4_000_000:
                    self._json += body
                    if not message.get("more_body"):
                        self._see_json(bytes(self._json))
            elif message["type"] == "http.response.start":
                if refuse_start is not None and refuse_start():
                    dropped = True
                    return
                self.status = message["status"]
                headers = dict(message.get("headers") or [])
                self._sse = headers.get(b"content-type", b"").startswith(b"text/event-stream")
                self.strip_usage = strips_usage(self.scope)  # set before the response starts
                if self.tag:
                    served = served_model_of(self.scope) or "-"
                    message = {**message, "headers": [*(message.get("headers") or []), (
                        USAGE_HEADER, f"{self.tag} {served}".encode())]}
            await send(message)
        return metered

    def _see_json(self, body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            return
        if isinstance(data, dict):
            self._take(data)

    def _see_events(self, body: bytes) -> bytes:
        if b'"usage"' not in body and (self.model or b'"model"' not in body):
            return body
        kept = []
        for event in body.split(b"\n\n"):
            payload = event.strip()
            if payload.startswith(b"event:"):  # Responses events: `event: <type>\ndata: ...`
                payload = payload.partition(b"\n")[2].lstrip()
            if payload.startswith(b"data:") and payload[5:].strip() != b"[DONE]":
                try:
                    data = json.loads(payload[5:])
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    self._take(data)
                    if self.strip_usage and data.get("usage") and not data.get("choices"):
                        continue
            kept.append(event)
        return b"\n\n".join(kept)

    def _take(self, data: dict) -> None:
        if isinstance(data.get("response"), dict):  # a Responses stream event
            data = data["response"]
        self.model = self.model or data.get("model")
        usage = data.get("usage")
        if isinstance(usage, dict):  # Responses name the counts input/output tokens
            self.prompt_tokens = usage.get("prompt_tokens") or usage.get("input_tokens") or 0
            self.completion_tokens = (usage.get("completion_tokens")
                                      or usage.get("output_tokens") or 0)


class AccessMiddleware:
    """`gate` in front of `app`: every route but /health (see the module doc)."""

    def __init__(self, app, gate: AccessGate) -> None:
        self.app, self.gate = app, gate
        self.tag_usage = behind_stream_guard()

    async def __call__(self, scope, receive, send) -> None:
        gate = self.gate
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        limit = gate.body_limit(scope["path"])
        key, rejection = None, _too_large(headers, limit)
        if rejection is None:
            rejection = gate.throttled(scope, headers)
        if rejection is None:
            found = gate.authenticate(headers)
            key, rejection = (None, found) if isinstance(found, JSONResponse) else (found, None)
            if key is None and rejection is not None:
                gate.auth_failed(scope, headers)
        if rejection is None:
            rejection = await gate.admit(key)
        meter = UsageMeter()
        if self.tag_usage:
            meter.tag = f"{gate.keeper.name} {meter.row_id} {key.id if key else '-'}"
        try:
            if rejection is not None:
                await rejection(scope, receive, meter.wrap(send, scope))
            else:
                set_key(scope, key)
                if scope["path"] in OPEN_ROW_PATHS:
                    gate.open_row(key, scope["path"], meter)
                await self._run(scope, receive, send, limit, meter)
        finally:  # a stream the client abandoned is recorded too (status as sent)
            gate.record(key, scope["path"], meter, started)

    async def _run(self, scope, receive, send, limit: tuple[int, str],
                   meter: UsageMeter) -> None:
        received = 0
        over = False

        async def bounded_receive():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit[0]:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        try:
            await self.app(scope, bounded_receive, meter.wrap(send, scope, lambda: over))
        except Exception:
            if not over:
                raise
        if over and not meter.status:  # the app's own answer was dropped: the 413 instead
            await _body_error(limit)(scope, receive, meter.wrap(send, scope))


def _too_large(headers: dict[bytes, bytes], limit: tuple[int, str]) -> JSONResponse | None:
    try:
        length = int(headers.get(b"content-length", b"0"))
    except ValueError:
        return openai_error(400, "Content-Length is not a number.")
    return _body_error(limit) if length > limit[0] else None


def _body_error(limit: tuple[int, str]) -> JSONResponse:
    size, setting = limit
    return openai_error(413, f"Request body larger than {size / 1024 / 1024:g} MB "
                             f"({setting}).")
