"""Wire types of the SDK and the pure logic shared by the sync and async clients.

Design choices:
- Request bodies and response parsing live here as plain functions, so the
  sync and async clients differ only in their transport.
- Results are pydantic models; unknown fields from the server are kept
  (`extra="allow"`) so newer servers do not break older clients.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from ember.errors import EmberError

Messages = str | list[dict[str, Any]]


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    owned_by: str | None = None
    created: int | None = None


class ChatResult(BaseModel):
    """One chat completion: the text, why it stopped, and the token usage."""

    model_config = ConfigDict(extra="allow")
    id: str
    model: str
    content: str
    finish_reason: str | None = None
    usage: Usage


class Hit(BaseModel):
    """A retrieved chunk: its text, where it came from, and its similarity score."""

    model_config = ConfigDict(extra="allow")
    index: int
    text: str
    source: str
    title: str = ""
    score: float


class RagResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    answer: str
    sources: list[Hit]
    usage: Usage | None = None


class RagStream:
    """State of a streamed RAG answer: `sources` arrive first, `usage` last."""

    def __init__(self) -> None:
        self.sources: list[Hit] = []
        self.usage: Usage | None = None
        self.text = ""

    def consume(self, event: dict[str, Any]) -> str:
        if "sources" in event:
            self.sources = [Hit(**s) for s in event["sources"]]
        if event.get("usage"):
            self.usage = Usage(**event["usage"])
        delta = event.get("delta") or ""
        self.text += delta
        return delta


def rag_body(question: str, collection: str | None, top_k: int | None, stream: bool,
             sampling: dict) -> dict:
    body = {"question": question, "stream": stream, **sampling}
    if collection:
        body["collection"] = collection
    if top_k is not None:
        body["top_k"] = top_k
    return body


def embedding_vectors(payload: dict[str, Any]) -> list[list[float]]:
    return [row["embedding"] for row in sorted(payload["data"], key=lambda r: r["index"])]


class EmberAPIError(EmberError):
    """The server answered with an error; carries the OpenAI-style error object."""

    def __init__(self, status_code: int, message: str, type_: str | None = None, param=None):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.type = type_
        self.param = param


class ChatStream:
    """State of a streamed chat: filled in as chunks arrive, complete at the end.

    Iterating the stream yields text deltas; once exhausted, `usage` and
    `finish_reason` hold what the final chunks reported.
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.text = ""

    def consume(self, chunk: dict[str, Any]) -> str:
        """Record one parsed SSE chunk and return its text delta ('' if none)."""
        self.model = chunk.get("model", self.model)
        if chunk.get("usage"):
            self.usage = Usage(**chunk["usage"])
        delta = ""
        for choice in chunk.get("choices") or []:
            delta += (choice.get("delta") or {}).get("content") or ""
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        self.text += delta
        return delta


def normalize_base_url(base_url: str) -> str:
    """Accept both the service root and an OpenAI-style `.../v1` URL."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def auth_headers(api_key: str | None) -> dict[str, str]:
    api_key = api_key or default_api_key()
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def default_api_key() -> str | None:
    """EMBER_API_KEY, else the local admin key `ember up` wrote, else None."""
    from ember.config.paths import ember_home

    if os.environ.get("EMBER_API_KEY"):
        return os.environ["EMBER_API_KEY"]
    try:
        return (ember_home() / "access" / "admin-key").read_text().strip() or None
    except OSError:
        return None


def as_messages(messages: Messages) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return list(messages)


def chat_body(messages: Messages, model: str, stream: bool, sampling: dict) -> dict:
    body = {"model": model, "messages": as_messages(messages), "stream": stream, **sampling}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def parse_chat(payload: dict[str, Any]) -> ChatResult:
    choice = payload["choices"][0]
    return ChatResult(
        id=payload.get("id", ""),
        model=payload.get("model", ""),
        content=(choice.get("message") or {}).get("content") or "",
        finish_reason=choice.get("finish_reason"),
        usage=Usage(**(payload.get("usage") or {})),
    )


def parse_models(payload: dict[str, Any]) -> list[ModelInfo]:
    return [ModelInfo(**m) for m in payload.get("data", [])]


def sse_events(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    """Parse Server-Sent Events lines into JSON payloads, stopping at [DONE].

    An error event raises `EmberAPIError`; so does a stream that ends without
    [DONE] (its answer is incomplete, whatever cut it)."""
    for line in lines:
        event = parse_sse_line(line)
        if event is SSE_DONE:
            return
        if event is not None:
            yield event
    raise stream_cut()


def stream_cut(cause: Exception | None = None) -> EmberAPIError:
    """A stream that ended before [DONE]: cleanly (a proxy that closed it) or with its
    connection cut (`cause`: what the HTTP client raised, e.g. an incomplete chunked body)."""
    how = f" (the connection was cut: {cause})" if cause is not None else ""
    return EmberAPIError(502, f"The stream ended before [DONE]{how}: the answer is "
                              f"incomplete.", "server_error")


SSE_DONE = object()  # sentinel: the stream said [DONE]


def parse_sse_line(line: str):
    """One SSE line -> a dict, `SSE_DONE` for the end marker, or None to skip."""
    if not line.startswith("data:"):
        return None
    data = line[len("data:") :].strip()
    if data == "[DONE]":
        return SSE_DONE
    payload = json.loads(data)
    if "error" in payload and "choices" not in payload:
        raise error_from_payload(payload.get("code") or 500, payload)
    return payload


def error_from_payload(status_code: int, payload: Any) -> EmberAPIError:
    """Build an EmberAPIError from an OpenAI-style (or FastAPI-style) error body."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        err = payload["error"]
        code = err.get("code") if isinstance(err.get("code"), int) else status_code
        return EmberAPIError(code, str(err.get("message")), err.get("type"), err.get("param"))
    if isinstance(payload, dict) and "detail" in payload:
        return EmberAPIError(status_code, json.dumps(payload["detail"]))
    return EmberAPIError(status_code, str(payload))


def raise_for_error(status_code: int, text: str) -> None:
    if status_code < 400:
        return
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        payload = text
    raise error_from_payload(status_code, payload)
