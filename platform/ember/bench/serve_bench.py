"""`ember bench serve`: load any OpenAI-compatible endpoint and report latencies.

Design choices:
- A fixed prompt set and `ignore_eos` + `max_tokens`, so every request
  produces the same number of tokens and two servers get the same work.
- Several targets are measured in one run, interleaved per concurrency level,
  so the comparison shares the machine's noise instead of being skewed by it.
- Time to first token (TTFT) is the first non-empty content delta; inter-token
  latency (ITL) is (e2e - TTFT) / (output tokens - 1) per request, because a
  server may pack several tokens in one chunk (Ray Serve batches its stream).
- The load generator must never be the bottleneck. One Python process (one
  event loop parsing every SSE event) keeps up with about `STREAMS_PER_CLIENT`
  streams at GPU speed; past that, it and not the server sets the pace. So a
  level runs in several client processes (`clients`, automatic by default),
  each with its own event loop and httpx client and an even share of the
  level's streams and requests. With one client the level runs in the calling
  process, as it always did.
- The processes are started with "spawn", never "fork": a caller may hold Ray's
  or asyncio's threads, and a forked copy of a process with threads can
  deadlock on a lock one of them held at the fork.
- Wall time across processes: each process warms its connection, then waits on
  a shared barrier so that all start together, and reports its own start and
  end (time.time(): one clock for all processes of the machine); the level's
  wall time is the latest end minus the earliest start. A process that fails
  or dies does not hang the level: the barrier and the joins have timeouts,
  and its requests come back as errors that say what happened.
- The stream is read as bytes and split on CR/LF only (httpx's aiter_lines also
  splits on U+2028 and U+0085, which a token may hold, cutting an event in two),
  and the common token event is recognised without json.loads
  (`StreamReader.event`), so one process parses more streams.
- GPU utilisation and peak memory are sampled beside each level
  (`gpu_sampler.py`) over the window its load ran.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing
import os
import queue
import statistics
import threading
import time
from dataclasses import dataclass, field

from ember.bench.gpu_sampler import GpuSample, GpuSampler, window_stats
from ember.bench.serve_report import (  # noqa: F401 - the report, importable from here too
    COLUMNS,
    MEDIAN_COLUMNS,
    SOAK_COLUMNS,
    format_table,
    medians,
)
from ember.bench.sse_client import (  # noqa: F401 - importable from here too
    PROMPTS,
    RequestResult,
    StreamReader,
    Target,
    drive,
    http_client,
    level_prompts,
    one_request,
)
from ember.client.types import auth_headers

# One Python process parses roughly this many 128-token SSE streams at GPU speed (a
# few hundred events a second each) without falling behind the server; the old
# single-process client topped out around 8-16k tok/s. An estimate, not a measured
# optimum: a lead to re-check on the GPU (raise it if one client keeps up with more).
STREAMS_PER_CLIENT = 32
START_TIMEOUT_S = 300.0  # spawn, imports and warm-up of every client, before the barrier
JOIN_TIMEOUT_S = 30.0  # for the processes to exit once they have sent their results
POLL_S = 1.0  # how often the parent looks for a process that died


@dataclass
class RunReport:
    label: str
    concurrency: int
    wall: float
    results: list[RequestResult] = field(default_factory=list)
    clients: int = 1
    started: float = 0.0  # time.time() when the load started and ended (the GPU window)
    ended: float = 0.0

    def summary(self) -> dict:
        ok = [r for r in self.results if r.ok]
        tokens = sum(r.output_tokens for r in ok)
        itls = [r.itl for r in ok if r.itl is not None]
        return {
            "target": self.label,
            "concurrency": self.concurrency,
            "clients": self.clients,
            "requests": len(self.results),
            "errors": len(self.results) - len(ok),
            "output_tok_s": tokens / self.wall if self.wall else 0.0,
            "req_s": len(ok) / self.wall if self.wall else 0.0,
            **percentiles("ttft", [r.ttft for r in ok]),
            **percentiles("itl", itls),
            **percentiles("e2e", [r.e2e for r in ok]),
            "first_error": next((r.error for r in self.results if not r.ok), ""),
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


# --- one streamed request ---------------------------------------------------------

# A token event whose first choice has non-empty content, in the OpenAI chunk's key
# order as a compact encoder writes it (vLLM, Ember):
#     {...,"choices":[{"index":0,"delta":{"content":"<anything but a quote>...
# Inside a JSON string every quote is escaped, so the bare quotes of this pattern are
# the chunk's structure: it can only match choices[0].delta.content != "". Any other
# event (another layout, empty or null content, a role, usage, an error) goes through
# json.loads, so this shortcut can only skip parsing, never change a result.
async def run_level(
    target: Target, concurrency: int, num_requests: int, max_tokens: int,
    clients: int | None = None,
) -> RunReport:
    """Send `num_requests` with at most `concurrency` in flight, from `clients` processes
    (None: `auto_clients`; 1: in this process)."""
    clients = effective_clients(clients, concurrency, num_requests)
    # Ember's key (EMBER_API_KEY or the local admin key) goes to every target;
    # servers without auth (plain vLLM) ignore the header.
    headers = auth_headers(None)
    if clients == 1:
        return await _run_in_process(target, concurrency, num_requests, max_tokens, headers)
    shares = split_load(concurrency, num_requests, clients)
    reports = await asyncio.to_thread(run_client_processes, target, shares, max_tokens, headers)
    start, end = level_window(reports)
    results = [r for report in reports for r in report.results]
    return RunReport(target.label, concurrency, end - start, results, clients, start, end)


async def _run_in_process(target: Target, concurrency: int, num_requests: int,
                          max_tokens: int, headers: dict[str, str]) -> RunReport:
    async with http_client(concurrency, headers) as http:
        await one_request(http, target, PROMPTS[0], 4)  # warm the connection and caches
        started, start = time.time(), time.perf_counter()
        results = await drive(http, target, concurrency, level_prompts(0, num_requests),
                              max_tokens)
        wall = time.perf_counter() - start
    return RunReport(target.label, concurrency, wall, results, 1, started, started + wall)


# --- several client processes ------------------------------------------------------

def auto_clients(concurrency: int) -> int:
    """One process per STREAMS_PER_CLIENT streams, at most half the machine's cores
    (the rest are the server's, when it runs here)."""
    return min(math.ceil(concurrency / STREAMS_PER_CLIENT), max(1, (os.cpu_count() or 2) // 2))


def effective_clients(clients: int | None, concurrency: int, num_requests: int) -> int:
    """`clients` (None: automatic), never more than the streams or the requests."""
    wanted = auto_clients(concurrency) if clients is None else clients
    return max(1, min(wanted, concurrency, num_requests))


def split_evenly(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def split_load(concurrency: int, num_requests: int, clients: int) -> list[tuple[int, int]]:
    """(streams, requests) per client process; the first ones take the remainders."""
    return list(zip(split_evenly(concurrency, clients), split_evenly(num_requests, clients),
                    strict=True))


@dataclass
class ClientJob:
    """What one client process is sent (pickled: it crosses to a spawned process)."""

    index: int
    clients: int
    target: Target
    concurrency: int
    first: int  # the level's index of its first request
    requests: int
    max_tokens: int
    headers: dict[str, str]
    start_timeout_s: float

    @property
    def name(self) -> str:
        return f"client process {self.index + 1} of {self.clients}"


@dataclass
class ClientReport:
    """What one client process sends back; start and end are time.time(), 0 if it never ran."""

    index: int
    results: list[RequestResult]
    start: float = 0.0
    end: float = 0.0


def failed(job: ClientJob, message: str) -> ClientReport:
    """The job's requests, all failed with `message`."""
    return ClientReport(job.index, [RequestResult(False, error=message, end=time.time())
                                    for _ in range(job.requests)])


def client_process(job: ClientJob, barrier, outbox) -> None:
    """A spawned client process: run its share of the level, send the report to `outbox`."""
    try:
        report = asyncio.run(_client_share(job, barrier))
    except Exception as exc:  # the parent must hear from every process
        barrier.abort()  # the others stop waiting for this one
        report = failed(job, f"{job.name} failed: {exc!r}")
    outbox.put(report)


async def _client_share(job: ClientJob, barrier) -> ClientReport:
    async with http_client(job.concurrency, job.headers) as http:
        await one_request(http, job.target, PROMPTS[0], 4)  # warm the connection and caches
        try:
            barrier.wait(job.start_timeout_s)  # all clients start together
        except threading.BrokenBarrierError:
            return failed(job, f"{job.name} did not start: another client process failed or "
                               f"was not ready within {job.start_timeout_s:.0f} s")
        start = time.time()
        results = await drive(http, job.target, job.concurrency,
                              level_prompts(job.first, job.requests), job.max_tokens)
        return ClientReport(job.index, results, start, time.time())


def client_jobs(target: Target, shares: list[tuple[int, int]], max_tokens: int,
                headers: dict[str, str]) -> list[ClientJob]:
    firsts = list(itertools.accumulate((requests for _, requests in shares), initial=0))
    return [ClientJob(i, len(shares), target, streams, firsts[i], requests, max_tokens,
                      headers, START_TIMEOUT_S) for i, (streams, requests) in enumerate(shares)]


def run_client_processes(target: Target, shares: list[tuple[int, int]], max_tokens: int,
                         headers: dict[str, str]) -> list[ClientReport]:
    """One level in len(shares) spawned processes; blocks, so callers run it in a thread."""
    ctx = multiprocessing.get_context("spawn")
    barrier, outbox = ctx.Barrier(len(shares)), ctx.Queue()
    jobs = client_jobs(target, shares, max_tokens, headers)
    procs = [ctx.Process(target=client_process, args=(job, barrier, outbox), daemon=True,
                         name=f"ember-bench-client-{job.index + 1}") for job in jobs]
    try:
        for proc in procs:
            proc.start()
        return collect(procs, jobs, barrier, outbox)
    finally:
        stop(procs)


def collect(procs, jobs: list[ClientJob], barrier, outbox) -> list[ClientReport]:
    """Every process's report, in order. One that exits without sending its report is
    lost: its requests become errors, and the barrier breaks so no other waits for it."""
    reports: dict[int, ClientReport] = {}
    while len(reports) < len(procs):
        try:
            report = outbox.get(timeout=POLL_S)
            reports[report.index] = report
        except queue.Empty:
            gone = [i for i, p in enumerate(procs) if i not in reports and p.exitcode is not None]
            if gone:
                _drain(outbox, reports)  # what a process sent before it exited is in the pipe
            for i in (i for i in gone if i not in reports):
                reports[i] = failed(jobs[i], f"{jobs[i].name} lost: it exited with code "
                                             f"{procs[i].exitcode} before sending its results")
                barrier.abort()
    return [reports[i] for i in range(len(procs))]


def _drain(outbox, reports: dict[int, ClientReport]) -> None:
    while True:
        try:
            report = outbox.get(timeout=0.2)
        except queue.Empty:
            return
        reports[report.index] = report


def stop(procs) -> None:
    """Join the processes, together within JOIN_TIMEOUT_S; terminate any still running."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for proc in procs:
        if proc.pid is not None:  # started
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def level_window(reports: list[ClientReport]) -> tuple[float, float]:
    """Earliest start and latest end of the processes that ran; (0, 0) if none did."""
    ran = [r for r in reports if r.end]
    if not ran:
        return 0.0, 0.0
    return min(r.start for r in ran), max(r.end for r in ran)


# --- runs, medians, soak, tables -----------------------------------------------------

async def run_bench(
    targets: list[Target],
    levels: list[int],
    requests_per_level: int | None,
    max_tokens: int,
    progress=print,
    repeat: int = 1,
    clients: int | None = None,
) -> list[dict]:
    """One row per (level, round, target); targets alternate within each round."""
    rows = []
    for level in levels:
        for round_ in range(1, repeat + 1):
            for target in targets:
                count = requests_per_level or max(level * 2, 8)
                used = effective_clients(clients, level, count)
                progress(f"  {target.label}: concurrency {level}, {count} requests"
                         f" from {used} client process{'es' if used > 1 else ''}"
                         f" (round {round_}/{repeat}) ...")
                row = await measure_level(target, level, count, max_tokens, clients)
                rows.append({**row, "round": round_})
    return rows


async def measure_level(target: Target, concurrency: int, num_requests: int, max_tokens: int,
                        clients: int | None = None) -> dict:
    """A level's summary, with the GPUs' mean utilisation and peak memory while it ran."""
    with GpuSampler() as gpu:
        report = await run_level(target, concurrency, num_requests, max_tokens, clients)
    return {**report.summary(), **gpu.stats(report.started, report.ended)}


async def soak(target: Target, concurrency: int, duration_s: float, max_tokens: int,
               window_s: float = 60.0, progress=print) -> list[dict]:
    """Keep `concurrency` streams busy for `duration_s`; one row per window."""
    results: list[RequestResult] = []
    async with http_client(concurrency, auth_headers(None)) as http:
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

        with GpuSampler() as gpu:
            await asyncio.gather(report(), *(worker(i) for i in range(concurrency)))
    return soak_windows(target.label, concurrency, results, start, window_s, gpu.samples)


def soak_windows(label: str, concurrency: int, results: list[RequestResult], start: float,
                 window_s: float, gpu_samples: list[GpuSample] | None = None) -> list[dict]:
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
                     **window_stats(gpu_samples or [], start + index * window_s,
                                    start + (index + 1) * window_s),
                     "first_error": next((r.error for r in group if not r.ok), "")})
    return rows
