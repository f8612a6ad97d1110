"""`ember bench serve`: load any OpenAI-compatible endpoint and report latencies.

Design choices:
- A fixed prompt set and `ignore_eos` + `max_tokens`, so every request
  produces the same number of tokens and two servers get the same work.
- Several targets are measured in one run, interleaved per concurrency level,
  so the comparison shares the machine's noise instead of being skewed by it.
- Time to first token (TTFT) is the first non-empty content delta; inter-token
  latency (ITL) is (e2e - TTFT) / (output tokens - 1) per request, because a
  server may pack several tokens in one chunk (Ray Serve batches its stream).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field

import httpx

from ember.client.types import auth_headers

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

    @property
    def itl(self) -> float | None:
        return (self.e2e - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else None


@dataclass
class Target:
    label: str
    url: str
    model: str


@dataclass
class RunReport:
    label: str
    concurrency: int
    wall: float
    results: list[RequestResult] = field(default_factory=list)

    def summary(self) -> dict:
        ok = [r for r in self.results if r.ok]
        tokens = sum(r.output_tokens for r in ok)
        itls = [r.itl for r in ok if r.itl is not None]
        return {
            "target": self.label,
            "concurrency": self.concurrency,
            "requests": len(self.results),
            "errors": len(self.results) - len(ok),
            "output_tok_s": tokens / self.wall if self.wall else 0.0,
            "req_s": len(ok) / self.wall if self.wall else 0.0,
            **percentiles("ttft", [r.ttft for r in ok]),
            **percentiles("itl", itls),
            **percentiles("e2e", [r.e2e for r in ok]),
        }


def percentiles(name: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {f"{name}_p{p}": float("nan") for p in (50, 95, 99)}
    ordered = sorted(values)

    def pick(p: int) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return {
        f"{name}_p50": statistics.median(ordered),
        f"{name}_p95": pick(95),
        f"{name}_p99": pick(99),
    }


async def one_request(
    http: httpx.AsyncClient, target: Target, prompt: str, max_tokens: int
) -> RequestResult:
    body = {
        "model": target.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    ttft, tokens, chunks = 0.0, 0, 0
    try:
        async with http.stream("POST", f"{target.url}/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                return RequestResult(False, error=f"HTTP {resp.status_code}")
            async for line in resp.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    chunks += 1
                    ttft = ttft or time.perf_counter() - start
    except httpx.HTTPError as exc:
        return RequestResult(False, error=f"{type(exc).__name__}: {exc}")
    return RequestResult(True, ttft, time.perf_counter() - start, tokens or chunks)


async def run_level(
    target: Target, concurrency: int, num_requests: int, max_tokens: int
) -> RunReport:
    """Send `num_requests` with at most `concurrency` in flight."""
    queue = [PROMPTS[i % len(PROMPTS)] for i in range(num_requests)]
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=concurrency + 4)
    # Ember's key (EMBER_API_KEY or the local admin key) goes to every target;
    # servers without auth (plain vLLM) ignore the header.
    headers = auth_headers(None)
    async with httpx.AsyncClient(timeout=600, limits=limits, headers=headers) as http:
        await one_request(http, target, PROMPTS[0], 4)  # warm the connection and caches

        async def worker() -> None:
            while queue:
                results.append(await one_request(http, target, queue.pop(), max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return RunReport(target.label, concurrency, wall, results)


async def run_bench(
    targets: list[Target],
    levels: list[int],
    requests_per_level: int | None,
    max_tokens: int,
    progress=print,
) -> list[dict]:
    rows = []
    for level in levels:
        for target in targets:
            count = requests_per_level or max(level * 2, 8)
            progress(f"  {target.label}: concurrency {level}, {count} requests ...")
            report = await run_level(target, level, count, max_tokens)
            rows.append(report.summary())
    return rows


COLUMNS = [
    ("target", "{}"),
    ("concurrency", "{}"),
    ("requests", "{}"),
    ("errors", "{}"),
    ("output_tok_s", "{:.1f}"),
    ("req_s", "{:.2f}"),
    ("ttft_p50", "{:.3f}"),
    ("ttft_p95", "{:.3f}"),
    ("ttft_p99", "{:.3f}"),
    ("itl_p50", "{:.4f}"),
    ("itl_p95", "{:.4f}"),
    ("itl_p99", "{:.4f}"),
    ("e2e_p50", "{:.3f}"),
    ("e2e_p95", "{:.3f}"),
    ("e2e_p99", "{:.3f}"),
]


def format_table(rows: list[dict]) -> str:
    """A Markdown table; latencies in seconds."""
    header = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = [
        "| " + " | ".join(fmt.format(row[name]) for name, fmt in COLUMNS) + " |" for row in rows
    ]
    return "\n".join([header, rule, *body])
