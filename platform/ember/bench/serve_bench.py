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
    end: float = 0.0  # wall-clock time it finished (soak windows)

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
    ttft, tokens, chunks, done = 0.0, 0, 0, False
    try:
        async with http.stream("POST", f"{target.url}/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                return RequestResult(False, error=f"HTTP {resp.status_code}", end=time.time())
            async for line in resp.aiter_lines():
                if line.strip() == "data: [DONE]":
                    done = True
                if not line.startswith("data:") or done:
                    continue
                chunk = json.loads(line[5:])
                if "error" in chunk:  # a stream that broke says so (issue 11)
                    message = (chunk["error"] or {}).get("message", chunk["error"])
                    return RequestResult(False, error=f"error event: {message}", end=time.time())
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    chunks += 1
                    ttft = ttft or time.perf_counter() - start
    except httpx.HTTPError as exc:
        return RequestResult(False, error=f"{type(exc).__name__}: {exc}", end=time.time())
    if not done:
        return RequestResult(False, error="stream ended without [DONE]", end=time.time())
    return RequestResult(True, ttft, time.perf_counter() - start, tokens or chunks,
                         end=time.time())


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
    repeat: int = 1,
) -> list[dict]:
    """One row per (level, round, target); targets alternate within each round."""
    rows = []
    for level in levels:
        for round_ in range(1, repeat + 1):
            for target in targets:
                count = requests_per_level or max(level * 2, 8)
                progress(f"  {target.label}: concurrency {level}, {count} requests"
                         f" (round {round_}/{repeat}) ...")
                report = await run_level(target, level, count, max_tokens)
                rows.append({**report.summary(), "round": round_})
    return rows


MEDIAN_KEYS = ("output_tok_s", "ttft_p50", "itl_p50", "e2e_p50", "e2e_p99")


def medians(rows: list[dict], baseline: str | None = None) -> list[dict]:
    """Per target and level: the median over rounds, and the ratio to `baseline`'s."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["target"], row["concurrency"]), []).append(row)
    out = []
    for (target, level), group in groups.items():
        med = {k: statistics.median(r[k] for r in group) for k in MEDIAN_KEYS}
        out.append({"target": target, "concurrency": level, "rounds": len(group),
                    "errors": sum(r["errors"] for r in group), **med})
    for row in out:
        base = next((b for b in out if b["target"] == baseline
                     and b["concurrency"] == row["concurrency"]), None)
        row["tok_s_ratio"] = row["output_tok_s"] / base["output_tok_s"] if base else float("nan")
        row["ttft_overhead_ms"] = (row["ttft_p50"] - base["ttft_p50"]) * 1000 if base \
            else float("nan")
    return out


async def soak(target: Target, concurrency: int, duration_s: float, max_tokens: int,
               window_s: float = 60.0, progress=print) -> list[dict]:
    """Keep `concurrency` streams busy for `duration_s`; one row per window."""
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits,
                                 headers=auth_headers(None)) as http:
        await one_request(http, target, PROMPTS[0], 4)
        start = time.time()
        deadline = start + duration_s

        async def worker(i: int) -> None:
            while time.time() < deadline:
                results.append(await one_request(http, target, PROMPTS[i % len(PROMPTS)],
                                                 max_tokens))
                i += 1

        async def report() -> None:
            while time.time() < deadline:
                await asyncio.sleep(min(window_s, 30))
                done = [r for r in results if r.ok]
                progress(f"  {target.label}: {time.time() - start:.0f}s, {len(done)} requests,"
                         f" {len(results) - len(done)} errors")

        await asyncio.gather(report(), *(worker(i) for i in range(concurrency)))
    return soak_windows(target.label, concurrency, results, start, window_s)


def soak_windows(label: str, concurrency: int, results: list[RequestResult], start: float,
                 window_s: float) -> list[dict]:
    windows: dict[int, list[RequestResult]] = {}
    for r in results:
        windows.setdefault(int((r.end - start) // window_s), []).append(r)
    rows = []
    for index in sorted(windows):
        group = windows[index]
        ok = [r for r in group if r.ok]
        tokens = sum(r.output_tokens for r in ok)
        rows.append({"target": label, "concurrency": concurrency,
                     "window": f"{index * window_s:.0f}-{(index + 1) * window_s:.0f}s",
                     "requests": len(group), "errors": len(group) - len(ok),
                     "output_tok_s": tokens / window_s,
                     **percentiles("ttft", [r.ttft for r in ok]),
                     **percentiles("e2e", [r.e2e for r in ok]),
                     "first_error": next((r.error for r in group if not r.ok), "")})
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


MEDIAN_COLUMNS = [
    ("target", "{}"), ("concurrency", "{}"), ("rounds", "{}"), ("errors", "{}"),
    ("output_tok_s", "{:.1f}"), ("tok_s_ratio", "{:.3f}"), ("ttft_p50", "{:.3f}"),
    ("ttft_overhead_ms", "{:+.1f}"), ("itl_p50", "{:.4f}"), ("e2e_p50", "{:.3f}"),
    ("e2e_p99", "{:.3f}"),
]
SOAK_COLUMNS = [
    ("target", "{}"), ("concurrency", "{}"), ("window", "{}"), ("requests", "{}"),
    ("errors", "{}"), ("output_tok_s", "{:.1f}"), ("ttft_p50", "{:.3f}"), ("ttft_p99", "{:.3f}"),
    ("e2e_p50", "{:.3f}"), ("e2e_p99", "{:.3f}"), ("first_error", "{}"),
]


def format_table(rows: list[dict], columns=COLUMNS) -> str:
    """A Markdown table; latencies in seconds."""
    header = "| " + " | ".join(name for name, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = [
        "| " + " | ".join(fmt.format(row[name]) for name, fmt in columns) + " |" for row in rows
    ]
    return "\n".join([header, rule, *body])
