"""OpenAI-style error bodies for Ember's HTTP API, the Batch API's results and the proxy.

One shape everywhere: `{"error": {"message", "type", "param", "code"}}`. The
gate, the OpenAI and RAG routes and the Batch API answer with `openai_error`
(`code` being the HTTP status); batch result lines and the proxy's stream guard
build the same body with `error_body` (their `code` is their own).

Ray Serve LLM reports engine errors with a message like
"Message: <what> (Request ID: <id>), Internal exception: <class> ..., original
exception: ...". Clients (the `openai` package, curl users) should read just
<what>, so Ember unwraps it.

A bottom module: no Ember imports, and starlette only when a response is built
(the batch job and the Serve proxy import it too).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

_RAY_WRAPPED = re.compile(
    r"^Message: (?P<what>.*?)(?: \(Request ID: (?P<rid>[^)]*)\))?, "
    r"Internal exception:",
    re.DOTALL,
)
_PARAM = re.compile(r"\(parameter=(?P<param>[\w.]+)")
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


# "vllm.exceptions.VLLMValidationError: <what>": an exception's class path before its text
_CLASS_PATH = re.compile(r"^(?:[A-Za-z_]\w*\.)+[A-Z]\w*(?:Error|Exception): ")


def clean_message(message: str) -> str:
    """The user-facing part of a Ray-wrapped error message, without a class path."""
    match = _RAY_WRAPPED.match(message)
    what = match.group("what").strip() if match else message
    return _CLASS_PATH.sub("", what, count=1)


def error_param(message: str) -> str | None:
    """The request field an engine error names, e.g. `max_tokens`."""
    match = _PARAM.search(message)
    return match.group("param") if match else None


def error_type(status_code: int) -> str:
    """OpenAI's error `type` for an HTTP status."""
    return _TYPES.get(status_code, "server_error" if status_code >= 500 else "api_error")


def error_body(message: str, type_: str, param: str | None = None,
               code: int | str | None = None) -> dict:
    """The OpenAI error object, as a dict."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def openai_error(status_code: int, message: str, param: str | None = None) -> JSONResponse:
    from starlette.responses import JSONResponse

    message = clean_message(message)
    body = error_body(message, error_type(status_code), param or error_param(message),
                      status_code)
    return JSONResponse(status_code=status_code, content=body)
