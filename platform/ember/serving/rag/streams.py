"""Reshape the OpenAI responses Ray's ingress code returns, for RAG and plain endpoints.

Ray returns a JSONResponse (non-streaming) or a StreamingResponse of SSE
events `data: {...}\\n\\n`. These helpers rewrite them without touching the
generation path: add `sources`, rename the model, or turn chat chunks into
the simpler `{text}` / `{delta}` events of the plain endpoints.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from starlette.responses import JSONResponse, Response, StreamingResponse


async def sse_payloads(response: StreamingResponse) -> AsyncIterator[dict | str]:
    """The JSON payloads of a Ray SSE stream ("[DONE]" passed through as a string)."""
    async for piece in response.body_iterator:
        text = piece.decode() if isinstance(piece, bytes) else piece
        for event in text.split("\n\n"):
            event = event.strip()
            if event.startswith("data:"):
                data = event[len("data:"):].strip()
                yield data if data == "[DONE]" else json.loads(data)


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def with_sources(response: Response, sources: list[dict], model: str) -> Response:
    """Add `sources` (and the RAG model id) to a chat response, streamed or not."""
    if isinstance(response, StreamingResponse):
        return StreamingResponse(_stream_with_sources(response, sources, model),
                                 media_type="text/event-stream")
    data = json.loads(response.body)
    if "error" not in data:
        data.update(model=model, sources=sources)
    return JSONResponse(data, status_code=response.status_code)


async def _stream_with_sources(response, sources, model) -> AsyncIterator[str]:
    first = True
    async for payload in sse_payloads(response):
        if isinstance(payload, dict) and "error" not in payload:
            payload["model"] = model
            if first:
                payload["sources"], first = sources, False
        yield sse(payload)


def plain(response: Response, shape: Callable[[str, dict | None], dict],
          first_event: dict | None = None) -> Response:
    """Chat response -> `shape(text, usage)`; streamed: `first_event`, then deltas."""
    if isinstance(response, StreamingResponse):
        return StreamingResponse(_plain_stream(response, first_event),
                                 media_type="text/event-stream")
    data = json.loads(response.body)
    if "error" in data:
        return response
    return JSONResponse(shape(data["choices"][0]["message"]["content"] or "", data["usage"]))


async def _plain_stream(response, first_event) -> AsyncIterator[str]:
    if first_event:
        yield sse(first_event)
    async for payload in sse_payloads(response):
        if isinstance(payload, str) or "error" in payload:
            yield sse(payload)
            continue
        for choice in payload.get("choices") or []:
            if (delta := (choice.get("delta") or {}).get("content")):
                yield sse({"delta": delta})
        if payload.get("usage"):
            yield sse({"usage": payload["usage"]})
