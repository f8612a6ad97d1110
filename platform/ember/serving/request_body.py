"""One check of every request body before anything parses it: UTF-8, JSON nesting depth.

Client faults must be 4xx even where they would surface deep inside a parser: a
200 KB body of `[[[[...` raises RecursionError in `json.loads` (and deeper still in
pydantic), which a replica reported as a crash; bytes that are not UTF-8 made FastAPI
answer `{"detail": ...}`. `BodyCheck` sits behind the access gate (which bounds the
body: `access.limits.max_body_mb`) and in front of every route of the engine replica
(the hot path, Ember's OpenAI, RAG and Batch routes), so all of them refuse the same
bodies with the same OpenAI 400.

Design choices:
- MAX_JSON_DEPTH = 64: the deepest real OpenAI bodies are tool or `response_format`
  JSON schemas, a dozen or two levels; pydantic and FastAPI's error path recurse
  several frames per level, so 64 levels stay far below Python's limit of 1000 where
  a few hundred might not. serde_json stops at 128 for the same reason.
- cheap on the hot path: an ASCII body (what `json.dumps` and the `openai` client
  send) skips the UTF-8 decode; a body with no more brackets than the limit cannot
  nest deeper and skips the depth scan (two C-speed counts). Otherwise escapes are
  cut out, the text between quotes dropped (a bracket inside a string does not nest:
  byte operations: about what `json.loads` of the body costs) and the brackets
  counted until the limit is passed.
- multipart bodies (uploads to /v1/files, up to `batch.max_file_mb`) are not read
  here: they are not JSON, and the Batch API checks each line it parses.
"""

from __future__ import annotations

import re

from ember.openai_errors import openai_error

MAX_JSON_DEPTH = 64
_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # a backslash and the byte it escapes
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")


def body_problem(body: bytes) -> str | None:
    """What is wrong with `body` for a JSON route (a message for the client), or None."""
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (f"The request body is not valid UTF-8 (byte 0x{body[exc.start]:02x} at "
                    f"offset {exc.start}). Send JSON encoded as UTF-8.")
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return None
    depth = json_depth(body, stop_above=MAX_JSON_DEPTH)
    if depth > MAX_JSON_DEPTH:
        return (f"The request body nests JSON arrays/objects more than {MAX_JSON_DEPTH} "
                f"levels deep; this service accepts at most {MAX_JSON_DEPTH}. Flatten the "
                f"request.")
    return None


def json_depth(body: bytes, stop_above: int | None = None) -> int:
    """The deepest nesting of arrays and objects in `body` (brackets inside strings do not
    count); with `stop_above`, counting stops once the depth passes it."""
    # escapes out first (each backslash escapes the next byte), then every quote left opens
    # or closes a string: what lies between odd and even quotes is inside one
    unescaped = _ESCAPE.sub(b"", body) if b"\\" in body else body
    brackets = b"".join(unescaped.split(b'"')[0::2]).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


class BodyCheck:
    """Refuse (400) a body `body_problem` finds fault with, before `app` sees it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS") \
                or _is_multipart(scope):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:  # the client left, or the gate cut an over-long body (its 413)
            return
        if problem := body_problem(body):
            await openai_error(400, problem)(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)


def _is_multipart(scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value[:10].lower() == b"multipart/"
    return False


async def read_body(receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay(body: bytes, receive):
    """A `receive` that gives the already-read body, then the real messages
    (so a client disconnect still reaches the app and aborts the request)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
