"""One streamed chat request as a benchmark client sees it: the SSE client underneath
`ember bench serve` (TTFT at the first content delta, tokens from the usage event, a
stream that breaks or ends without [DONE] is a failed request)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass

import httpx

PROMPTS = [
    "Explain what a vector database is in two sentences.",
    "Write a haiku about distributed computing.",
    "List three uses of a hash map.",
    "What is the difference between a process and a thread?",
    "Describe how a bicycle gear works.",
    "Give a short recipe for pancakes.",
    "Why is the sky blue?",
    "Summarise the plot of a detective story in three sentences.",
    "What does an operating system scheduler do?",
    "Name four planets and one fact about each.",
    "How does a refrigerator keep food cold?",
    "Write a polite email declining a meeting.",
    "What is gradient descent?",
    "Explain recursion to a child.",
    "What are the benefits of unit tests?",
    "Describe the water cycle.",
]


@dataclass
class RequestResult:
    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    output_tokens: int = 0
    error: str = ""
    end: float = 0.0  # wall-clock time it finished (soak windows)

    @property
    def itl(self) -> float | None:
        return (self.e2e - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else None


@dataclass
class Target:
    label: str
    url: str
    model: str  # one model, or several joined by "+": requests take them in turn

    def model_for(self, index: int) -> str:
        """The model of a level's request `index` (a mixed load rotates its models)."""
        models = self.model.split("+")
        return models[index % len(models)]


TOKEN_EVENT = re.compile(rb'[{,]"choices":\[\{"index":\d+,"delta":\{"content":"[^"]')


class StreamReader:
    """One streamed chat completion, fed the body's bytes as they arrive.

    TTFT is the first event with non-empty content; tokens are usage's
    completion_tokens when the server sends them, else the content events; an
    `{"error": ...}` event, or an end without `data: [DONE]`, fails the request.
    """

    def __init__(self, start: float):
        self.start = start  # time.perf_counter() when the request was sent
        self.ttft = 0.0
        self.tokens = 0  # usage.completion_tokens
        self.chunks = 0  # events with content
        self.done = False
        self.error = ""
        self._rest = b""  # a line cut at the end of the last block

    def feed(self, block: bytes) -> None:
        data = self._rest + block
        lines = data.splitlines()  # bytes split on CR, LF and CRLF only
        self._rest = lines.pop() if lines and data[-1:] not in b"\r\n" else b""
        for line in lines:
            self.line(line)

    def finish(self) -> None:
        """The body ended: a last line without its line end still counts."""
        if self._rest:
            self.line(self._rest)
            self._rest = b""

    def line(self, line: bytes) -> None:
        if line.startswith(b"data:") and not (self.done or self.error):
            self.event(line[5:].strip())

    def event(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self.done = True
        elif (b'"error"' not in payload and b'"usage"' not in payload
              and TOKEN_EVENT.search(payload)):
            self.content()  # neither key is in it: json.loads could add nothing
        else:
            self.parsed(payload)

    def parsed(self, payload: bytes) -> None:
        try:
            chunk = json.loads(payload)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            self.error = f"not a JSON object in the stream: {payload[:80]!r}"
        elif "error" in chunk:  # a stream that broke says so (issue 11)
            error = chunk["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            self.error = f"error event: {message}"
        else:
            if chunk.get("usage"):
                self.tokens = chunk["usage"].get("completion_tokens") or 0
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                self.content()

    def content(self) -> None:
        self.chunks += 1
        self.ttft = self.ttft or time.perf_counter() - self.start

    def result(self) -> RequestResult:
        if self.error:
            return RequestResult(False, error=self.error, end=time.time())
        if not self.done:
            return RequestResult(False, error="stream ended without [DONE]", end=time.time())
        return RequestResult(True, self.ttft, time.perf_counter() - self.start,
                             self.tokens or self.chunks, end=time.time())


async def one_request(
    http: httpx.AsyncClient, target: Target, prompt: str, max_tokens: int, index: int = 0
) -> RequestResult:
    body = {
        "model": target.model_for(index),
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream_options": {"include_usage": True},
    }
    stream = StreamReader(time.perf_counter())
    try:
        async with http.stream("POST", f"{target.url}/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                return RequestResult(False, error=f"HTTP {resp.status_code}", end=time.time())
            async for block in resp.aiter_bytes():
                stream.feed(block)
                if stream.error:
                    return stream.result()
            stream.finish()
    except httpx.HTTPError as exc:
        return RequestResult(False, error=f"{type(exc).__name__}: {exc}", end=time.time())
    return stream.result()


# --- one level ----------------------------------------------------------------------

def http_client(concurrency: int, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 4),
                             headers=headers)


def level_prompts(first: int, count: int) -> list[tuple[int, str]]:
    """Requests first..first+count-1 of a level, with their index in the level (the same
    sequence however it is split)."""
    return [(i, PROMPTS[i % len(PROMPTS)]) for i in range(first, first + count)]


async def drive(http: httpx.AsyncClient, target: Target, concurrency: int,
                prompts: list[tuple[int, str]], max_tokens: int) -> list[RequestResult]:
    """Send `prompts` with at most `concurrency` in flight: every client's worker loop."""
    pending = list(prompts)
    results: list[RequestResult] = []

    async def worker() -> None:
        while pending:
            index, prompt = pending.pop()
            results.append(await one_request(http, target, prompt, max_tokens, index))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


