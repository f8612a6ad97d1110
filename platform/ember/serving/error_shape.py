"""Every non-2xx answer of Ember's routes as an OpenAI error object, written for the client.

Ember's routes answer their own errors with `openai_error`; what else can answer
comes from the frameworks underneath, in their own shapes:
- FastAPI: `{"detail": ...}` for a body it cannot parse, an unknown path (404), a
  wrong method (405); its validation errors went through Ray's handler, which put the
  whole offending input in `param` and pydantic's error kind in `type`;
- Ray's ingress: an exception escaping a route (an unknown embeddings model, say)
  becomes "Message: ..., Internal exception: <class path> ..., original exception: ..."
  with the exception's class name as `type`.
`install_error_handlers` gives the routes' FastAPI app handlers that answer
`openai_error` for the first two; `ErrorShape` wraps the app and rewrites any other
non-2xx body that is not already a clean OpenAI error (the last line: no class path,
no stack text reaches a client). It holds only error responses; a 2xx response and
every streamed event pass untouched.
"""

from __future__ import annotations

import json

from ember.openai_errors import clean_message, error_body, error_type, openai_error

_OPENAI_TYPES = frozenset({"invalid_request_error", "authentication_error",
                           "insufficient_quota", "permission_error", "not_found_error",
                           "timeout_error", "rate_limit_error", "server_error", "api_error",
                           "invalid_model", "adapter_load_failed"})
_GENERIC = {404: "No such route. The OpenAI routes are under /v1 (GET /v1/models lists "
                 "the models).",
            405: "This route does not answer that HTTP method.",
            500: "The service failed while answering; the error is in its logs. Retry, "
                 "and report it if it persists."}


def install_error_handlers(app) -> None:
    """Handlers on the routes' FastAPI app for FastAPI's own refusals (they replace Ray's
    validation handler, which echoed the whole offending input)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def http_error(_request, exc: HTTPException):
        message = (str(exc.detail) if exc.status_code not in _GENERIC
                   or exc.detail not in ("Not Found", "Method Not Allowed")
                   else _GENERIC[exc.status_code])
        if message == "There was an error parsing the body":
            message = "The request body could not be parsed as JSON."
        return openai_error(exc.status_code, message)

    async def invalid_request(_request, exc: RequestValidationError):
        return openai_error(400, *validation_message(exc.errors()))

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)


def validation_message(errors) -> tuple[str, str | None]:
    """A client-facing message for pydantic's errors (the first, and how many more) and
    the field it names (dotted, without FastAPI's leading "body")."""
    if not errors:
        return "The request body is not a valid request.", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    where = ".".join(loc)
    if first.get("type") == "json_invalid":
        return f"The request body is not valid JSON ({first.get('msg', '')}).", None
    if not where:
        message = f"The request body must be a JSON object: {first.get('msg', 'invalid')}."
    else:
        message = f"Invalid '{where}': {first.get('msg', 'invalid value')}."
    if len(errors) > 1:
        message += f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return message, where or None


def clean_error_body(status: int, body: bytes) -> bytes | None:
    """`body` as a clean OpenAI error object, or None where it already is one."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message = clean_message(error["message"])
        param = error.get("param")
        clean = (message == error["message"] and error.get("type") in _OPENAI_TYPES
                 and (param is None or isinstance(param, str)) and "code" in error)
        if clean:
            return None
        type_ = error.get("type") if error.get("type") in _OPENAI_TYPES else error_type(status)
        return _dumps(error_body(message, type_, param if isinstance(param, str) else None,
                                 error.get("code", status)))
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, list):
        message, param = validation_message(detail)
    elif isinstance(detail, str) and status != 500:
        message, param = clean_message(detail), None
    else:
        message, param = _GENERIC.get(status, f"The request failed (HTTP {status})."), None
    return _dumps(error_body(message, error_type(status), param, status))


def _dumps(body: dict) -> bytes:
    return json.dumps(body).encode()


class ErrorShape:
    """`app` whose non-2xx bodies are clean OpenAI error objects (see the module doc)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict | None = None
        chunks: list[bytes] = []

        async def shaped(message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if (clean := clean_error_body(held["status"], body)) is not None:
                body = clean
                headers = [(k, v) for k, v in held.get("headers", [])
                           if k.lower() not in (b"content-length", b"content-type")]
                held = {**held, "headers": [*headers, (b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]}
            await send(held)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, shaped)
