"""`ember bench serve`'s load generator against a tiny real streaming server.

The server (Starlette on uvicorn, in a thread) speaks OpenAI's streamed chat
format; the model name picks its behaviour: "ok" (a role event, max_tokens/2
content events, a finish event, usage, [DONE]), "spaced-no-usage" (the same in
spaced JSON with CRLF line ends and no usage event), "no-done" (ends without
[DONE]) and "error" (an error event mid-stream). Several tests spawn real client
processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import threading
import time

import pytest
from ember.bench import gpu_sampler, serve_bench, sse_client
from ember.bench.serve_bench import RequestResult, Target, run_level

FIRST_EVENT_DELAY_S = 0.02
TEXT = [" hello", " a\u2028b", " c\x85d", " world"]  # Unicode line breaks inside tokens


def events(model: str, max_tokens: int) -> list[str]:
    """The SSE events (JSON payloads, "[DONE]") the server sends for `model`."""
    def chunk(delta: dict, finish=None) -> dict:
        return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish}]}

    parts = [chunk({"role": "assistant", "content": ""})]
    parts += [chunk({"content": TEXT[i % len(TEXT)]}) for i in range(max(1, max_tokens // 2))]
    if model == "error":
        parts = parts[:3] + [{"error": {"message": "replica died", "type": "Internal",
                                        "code": 500}}]
    parts.append(chunk({"content": ""}, "length"))  # as vLLM ends a choice
    if model == "ok":
        parts.append({"id": "chatcmpl-1", "choices": [],
                      "usage": {"prompt_tokens": 9, "completion_tokens": max_tokens,
                                "total_tokens": 9 + max_tokens}})
    separators = (", ", ": ") if model == "spaced-no-usage" else (",", ":")
    out = [json.dumps(p, separators=separators, ensure_ascii=False) for p in parts]
    return out if model == "no-done" else [*out, "[DONE]"]


async def chat(request):
    from starlette.responses import StreamingResponse

    body = await request.json()
    line_end = "\r\n" if body["model"] == "spaced-no-usage" else "\n"

    async def stream():
        await asyncio.sleep(FIRST_EVENT_DELAY_S)
        for event in events(body["model"], body["max_tokens"]):
            yield f"data: {event}{line_end}{line_end}".encode()
            await asyncio.sleep(0.002)

    return StreamingResponse(stream(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def server_url():
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.01)
    assert server.started, "the test server did not start"
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(5)


def level(url: str, model: str, concurrency: int, requests: int, max_tokens: int,
          clients: int | None):
    return asyncio.run(run_level(Target(model, url, model), concurrency, requests, max_tokens,
                                 clients))


# --- splitting the load -----------------------------------------------------------------

def test_split_load_is_even_and_the_first_clients_take_the_remainder():
    assert serve_bench.split_load(10, 25, 3) == [(4, 9), (3, 8), (3, 8)]
    assert serve_bench.split_load(64, 128, 2) == [(32, 64), (32, 64)]
    assert serve_bench.split_load(5, 3, 3) == [(2, 1), (2, 1), (1, 1)]
    jobs = serve_bench.client_jobs(Target("t", "u", "m"), serve_bench.split_load(5, 7, 3), 8, {})
    assert [(j.first, j.requests) for j in jobs] == [(0, 3), (3, 2), (5, 2)]
    prompts = [p for j in jobs for p in serve_bench.level_prompts(j.first, j.requests)]
    assert prompts == serve_bench.level_prompts(0, 7)  # the same requests as one client's


def test_auto_clients(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert [serve_bench.auto_clients(c) for c in (1, 32, 33, 64, 128, 256, 1024)] == \
        [1, 1, 2, 2, 4, 8, 8]
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert [serve_bench.auto_clients(c) for c in (1, 64, 1024)] == [1, 1, 1]
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert serve_bench.auto_clients(128) == 1
    # never more processes than streams or requests
    assert serve_bench.effective_clients(4, 2, 100) == 2
    assert serve_bench.effective_clients(4, 64, 3) == 3
    assert serve_bench.effective_clients(None, 64, 100) == 1


def test_level_window_spans_every_process_that_ran():
    reports = [serve_bench.ClientReport(0, [], 100.0, 105.0),
               serve_bench.ClientReport(1, [], 99.5, 104.0),
               serve_bench.ClientReport(2, [RequestResult(False, error="lost")])]  # never ran
    assert serve_bench.level_window(reports) == (99.5, 105.0)
    assert serve_bench.level_window(reports[2:]) == (0.0, 0.0)


# --- reading a stream -----------------------------------------------------------------

def read(body: bytes, block: int) -> serve_bench.StreamReader:
    reader = serve_bench.StreamReader(time.perf_counter())
    for i in range(0, len(body), block):
        reader.feed(body[i:i + block])
    reader.finish()
    return reader


@pytest.mark.parametrize("model", ["ok", "spaced-no-usage"])
def test_stream_reader_is_the_same_however_the_body_is_cut(model):
    line_end = "\r\n" if model == "spaced-no-usage" else "\n"
    body = "".join(f"data: {e}{line_end}{line_end}" for e in events(model, 8)).encode()
    for block in (1, 2, 3, 7, 64, len(body)):
        reader = read(body, block)
        assert (reader.error, reader.done, reader.chunks) == ("", True, 4), block
        assert reader.result().output_tokens == (8 if model == "ok" else 4)


def test_token_shortcut_never_changes_what_json_says(monkeypatch):
    payloads = [e.encode() for m in ("ok", "spaced-no-usage", "error") for e in events(m, 8)]
    payloads += [b'{"choices":[{"index":0,"delta":{"content":null}}]}',
                 b'{"choices":[{"index":0,"delta":{"content":""}}]}',
                 b'{"choices":[{"index":0,"delta":{"role":"assistant","content":"x"}}]}',
                 b'{"choices":[{"index":0,"delta":{"content":"\\"usage\\""}}]}',
                 b'{"choices":[{"index":0,"delta":{"content":"x"}}],"usage":{"completion_tokens":3}}']

    def outcome(payload: bytes):
        reader = serve_bench.StreamReader(time.perf_counter())
        reader.event(payload)
        return reader.chunks, reader.tokens, reader.error

    fast = [outcome(p) for p in payloads]
    assert sum(sse_client.TOKEN_EVENT.search(p) is not None for p in payloads) >= 6
    monkeypatch.setattr(sse_client, "TOKEN_EVENT", re.compile(b"(?!)"))  # never matches
    assert fast == [outcome(p) for p in payloads]


# --- levels against the server ----------------------------------------------------------

@pytest.mark.timeout(60)
def test_two_client_processes(server_url):
    report = level(server_url, "ok", 4, 10, 8, clients=2)
    assert report.clients == 2 and report.summary()["clients"] == 2
    assert len(report.results) == 10
    assert [r.error for r in report.results if not r.ok] == []
    assert {r.output_tokens for r in report.results} == {8}  # usage, not the 4 events
    assert all(r.ttft >= FIRST_EVENT_DELAY_S for r in report.results)
    # the wall time covers every request of both processes
    assert report.wall == pytest.approx(report.ended - report.started, abs=1e-5)
    assert report.started <= min(r.end - r.e2e for r in report.results) + 0.05
    assert report.ended >= max(r.end for r in report.results) - 0.05
    assert report.summary()["output_tok_s"] == pytest.approx(80 / report.wall)


def test_one_client_in_process_counts_content_events_without_usage(server_url):
    report = level(server_url, "spaced-no-usage", 3, 5, 8, clients=None)  # automatic: 1
    assert report.clients == 1
    assert [(r.ok, r.output_tokens) for r in report.results] == [(True, 4)] * 5
    assert report.started and report.ended - report.started == pytest.approx(report.wall, abs=1e-5)


@pytest.mark.timeout(60)
def test_a_stream_without_done_is_an_error_in_client_processes(server_url):
    summary = level(server_url, "no-done", 2, 4, 8, clients=2).summary()
    assert (summary["requests"], summary["errors"]) == (4, 4)
    assert summary["first_error"] == "stream ended without [DONE]"


def test_an_error_event_is_an_error(server_url):
    summary = level(server_url, "error", 2, 3, 8, clients=1).summary()
    assert (summary["requests"], summary["errors"]) == (3, 3)
    assert summary["first_error"] == "error event: replica died"


def crashing_client(job, barrier, outbox):
    """Stands in for serve_bench.client_process in the spawned processes: the second dies."""
    if job.index == 1:
        os._exit(3)
    serve_bench.client_process(job, barrier, outbox)


@pytest.mark.timeout(90)
def test_a_lost_client_process_becomes_errors_without_a_hang(server_url, monkeypatch):
    assert __name__ in sys.modules  # the spawned processes import this module by its name
    monkeypatch.setattr(serve_bench, "client_process", crashing_client)
    monkeypatch.setattr(serve_bench, "POLL_S", 0.2)
    monkeypatch.setattr(serve_bench, "START_TIMEOUT_S", 40.0)
    started = time.time()
    report = level(server_url, "ok", 4, 6, 8, clients=2)
    # well before START_TIMEOUT_S: the parent breaks the barrier when it sees the loss
    assert time.time() - started < 30
    errors = [r.error for r in report.results]
    assert len(errors) == 6 and not any(r.ok for r in report.results)
    assert errors.count("client process 2 of 2 lost: it exited with code 3 before sending "
                        "its results") == 3
    assert all("client process 1 of 2 did not start" in e for e in errors[:3])


def test_cli_prints_clients_and_gpu_columns(server_url, capsys, monkeypatch):
    from ember.cli.main import build_parser

    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi
    monkeypatch.setitem(sys.modules, "pynvml", None)
    gpu_sampler._nvml_handles.cache_clear()
    args = build_parser().parse_args(["bench", "serve", "--target", f"t={server_url}@ok",
                                      "--concurrency", "2", "--requests", "3",
                                      "--max-tokens", "4", "--clients", "1"])
    assert args.func(args) == 0
    header, _, row = capsys.readouterr().out.splitlines()[-3:]
    cells = dict(zip(header.strip("| ").split(" | "), row.strip("| ").split(" | "), strict=True))
    assert (cells["clients"], cells["errors"]) == ("1", "0")
    assert (cells["gpu_util_pct"], cells["gpu_mem_gib"]) == ("n/a", "n/a")


# --- GPU columns ----------------------------------------------------------------------------

def test_parse_nvidia_smi():
    assert gpu_sampler.parse_nvidia_smi("37, 1024\n63, 2048\n\n") == [(37.0, 1024.0),
                                                                      (63.0, 2048.0)]
    assert gpu_sampler.parse_nvidia_smi("[N/A], 512\n") == [(None, 512.0)]
    assert gpu_sampler.parse_nvidia_smi("") == []


def test_sampler_without_nvml_or_nvidia_smi_gives_none(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    gpu_sampler._nvml_handles.cache_clear()
    with gpu_sampler.GpuSampler(interval_s=0.01) as gpu:
        time.sleep(0.05)
    assert gpu.reader is None and gpu.samples == []
    assert gpu.stats() == {"gpu_util_pct": None, "gpu_mem_gib": None}
    gpu_sampler._nvml_handles.cache_clear()


def test_sampler_reads_nvidia_smi_over_all_gpus(monkeypatch, tmp_path):
    script = tmp_path / "nvidia-smi"
    script.write_text('#!/bin/sh\n[ "$1" = "--query-gpu=utilization.gpu,memory.used" ] || '
                      'exit 2\nprintf "40, 1024\\n60, 2048\\n"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    gpu_sampler._nvml_handles.cache_clear()
    with gpu_sampler.GpuSampler(interval_s=0.05) as gpu:
        time.sleep(0.12)
    assert len(gpu.samples) >= 2
    assert gpu.stats() == {"gpu_util_pct": 50.0, "gpu_mem_gib": 3.0}
    gpu_sampler._nvml_handles.cache_clear()


def test_window_stats_keep_the_load_window():
    samples = [gpu_sampler.GpuSample(t, u, m) for t, u, m in
               [(0.0, 0.0, 1.0), (1.0, 80.0, 5.0), (2.0, 90.0, 6.0), (3.0, 0.0, 9.0)]]
    assert gpu_sampler.window_stats(samples, 0.5, 2.5) == {"gpu_util_pct": 85.0,
                                                           "gpu_mem_gib": 6.0}
    # a window shorter than one interval takes every sample
    assert gpu_sampler.window_stats(samples, 1.2, 1.3)["gpu_mem_gib"] == 9.0


def test_medians_and_table_cope_with_missing_gpu_values():
    def row(round_, util, mem):
        return {"target": "t", "concurrency": 1, "clients": 1, "requests": 8, "errors": 0,
                "output_tok_s": 10.0 * round_, "req_s": 1.0, "ttft_p50": 0.1,
                "ttft_p95": 0.1, "ttft_p99": 0.1, "itl_p50": 0.01, "itl_p95": 0.01,
                "itl_p99": 0.01, "e2e_p50": 1.0, "e2e_p95": 1.0, "e2e_p99": 1.0,
                "gpu_util_pct": util, "gpu_mem_gib": mem, "round": round_}

    gpu = serve_bench.medians([row(1, 50.0, 2.0), row(2, None, 4.0), row(3, 70.0, 3.0)])[0]
    assert (gpu["gpu_util_pct"], gpu["gpu_mem_gib"]) == (60.0, 3.0)
    cpu = serve_bench.medians([row(1, None, None), row(2, None, None)])
    assert (cpu[0]["gpu_util_pct"], cpu[0]["gpu_mem_gib"]) == (None, None)
    table = serve_bench.format_table(cpu, serve_bench.MEDIAN_COLUMNS)
    assert table.splitlines()[-1].endswith("| n/a | n/a |")
    assert serve_bench.format_table([row(1, 49.6, 2.04)]).splitlines()[-1].endswith(
        "| 50 | 2.0 |")


def test_a_mixed_target_rotates_its_models_by_request_index():
    target = serve_bench.Target("mixed", "http://x", "base+a1+a2")
    assert [target.model_for(i) for i in range(5)] == ["base", "a1", "a2", "base", "a1"]
    assert serve_bench.Target("one", "http://x", "base").model_for(7) == "base"
