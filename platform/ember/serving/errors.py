"""OpenAI-style error bodies for Ember's HTTP API.

Ray Serve LLM reports engine errors with a message like
"Message: <what> (Request ID: <id>), Internal exception: <class> ..., original
exception: ...". Clients (the `openai` package, curl users) should read just
<what>, so Ember unwraps it into OpenAI's shape:
`{"error": {"message", "type", "param", "code"}}`, `code` being the HTTP status.
"""

from __future__ import annotations

import re

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


def clean_message(message: str) -> str:
    """The user-facing part of a Ray-wrapped error message."""
    match = _RAY_WRAPPED.match(message)
    return match.group("what").strip() if match else message


def error_param(message: str) -> str | None:
    """The request field an engine error names, e.g. `max_tokens`."""
    match = _PARAM.search(message)
    return match.group("param") if match else None


def openai_error(status_code: int, message: str, param: str | None = None) -> JSONResponse:
    message = clean_message(message)
    body = {
        "error": {
            "message": message,
            "type": _TYPES.get(status_code, "server_error" if status_code >= 500 else "api_error"),
            "param": param or error_param(message),
            "code": status_code,
        }
    }
    return JSONResponse(status_code=status_code, content=body)
