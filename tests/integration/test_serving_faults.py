"""Faults on the serving path, with the real engine behind the session's real ingress.

- A client that disconnects mid-stream frees the engine (the request is aborted).
- An engine replica SIGKILLed under 16 streams of a limited key: every open
  stream ends within seconds, the broken ones as the ingress ends them: behind
  HAProxy (the default) the connection is cut before the chunked body's end, which
  every HTTP client reports as an error; behind Serve's proxy, an OpenAI error event
  and `[DONE]` (Ember's stream guard). New requests are answered by the other
  replica meanwhile, the limited key's with 200 (never 503); Serve restarts the
  dead one without an operator; the dead replica's vLLM processes do not outlive
  it; the usage keeper and the Milvus Lite server are the same processes as before,
  outside any placement group; and the usage table has one row for every request
  the key sent (a broken stream's row is its open row, or the guard's).
The session runs two engine replicas (conftest).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import psutil
import pytest

from tests.integration.conftest import MODEL
from tests.integration.keys import AUTH
from tests.integration.test_service_actors import count_usage

DEPLOYMENT = f"LLMServer:{MODEL}"
CUT = "connection cut: "  # what `_stream` records when the body ended short


def engine_replicas() -> list:
    from ray.util.state import list_actors

    return [a for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
            if a.class_name == f"ServeReplica:ember:{DEPLOYMENT}"]


def unfinished_requests() -> list[int]:
    """Each call lands on one of the replicas. Sent one after another, every call would
    go to the idle replica (Serve routes to the shorter queue); sent together, they fill
    the idle replica's queue and spread over both."""
    from ray import serve

    handle = serve.get_deployment_handle(DEPLOYMENT, app_name="ember")
    calls = [handle.unfinished_requests.remote() for _ in range(16)]
    return [call.result(timeout_s=30) for call in calls]


def chat_body(max_tokens: int) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Count to a thousand."}],
            "max_tokens": max_tokens, "ignore_eos": True, "stream": True}


def test_a_client_that_disconnects_mid_stream_frees_the_engine(base_url):
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", headers=AUTH(),
                      json=chat_body(1800), timeout=120) as response:
        lines = response.iter_lines()
        chunks = [line for line, _ in zip(lines, range(6), strict=False) if line]
        assert len(chunks) >= 3 and any(n >= 1 for n in unfinished_requests())
    # closed after a few chunks of 1800 tokens (minutes of work): aborted
    deadline = time.time() + 30
    while any(unfinished_requests()) and time.time() < deadline:
        time.sleep(1)
    assert not any(unfinished_requests())


async def _stream(base_url: str, events: list, started: asyncio.Event, count: list,
                  headers: dict) -> float:
    async with httpx.AsyncClient(timeout=httpx.Timeout(120)) as client:
        async with client.stream("POST", f"{base_url}/v1/chat/completions", headers=headers,
                                 json=chat_body(160)) as response:
            assert response.status_code == 200
            try:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        events.append(line[5:].strip())
                        if len(events) == 3:
                            count[0] += 1
                            if count[0] == 16:
                                started.set()
            except httpx.RemoteProtocolError as exc:  # the ingress cut the connection
                events.append(f"{CUT}{exc}")
    return time.time()


def is_error_event(data: str) -> bool:
    """An OpenAI error event (a token whose text is "error" is not one)."""
    if data == "[DONE]" or data.startswith(CUT):
        return False
    return "error" in json.loads(data)


def service_pids() -> dict[str, tuple]:
    from ember.service_actors import service_actors

    return {a["name"]: (a["pid"], a["placement_group_id"]) for a in service_actors()
            if a["state"] == "ALIVE" and not a["name"].startswith("batch")}


def survivors(processes: list) -> list:
    """Those of `processes` still running (a zombie has exited; only its entry is left)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


# Longer than the suite's ceiling (pyproject.toml), for its own deadlines: 300 s for the
# 16 streams to start, 300 s for them to end, 600 s for Serve to replace the replica,
# 60 s for the usage rows.
@pytest.mark.timeout(1500)
def test_a_replica_killed_under_load_ends_every_stream_and_the_service_recovers(
        base_url, access_url):
    from ember.access.keys import create_key

    key, record = create_key(access_url, "under-the-kill", rpm=10_000, tpm=10_000_000,
                             budget_usd=1_000)
    limited = {"Authorization": f"Bearer {key}"}
    sent = 0
    services = service_pids()
    assert any(n.startswith("ember-quota-") for n in services), services
    replicas = engine_replicas()
    assert len(replicas) == 2, replicas
    victim = psutil.Process(replicas[0].pid)
    engine_procs = [p for p in victim.children(recursive=True) if p.name().startswith("VLLM")]
    assert engine_procs  # its EngineCore and worker

    async def run() -> tuple[list[list[str]], list[float], float]:
        events: list[list[str]] = [[] for _ in range(16)]
        started, count = asyncio.Event(), [0]
        tasks = [asyncio.create_task(_stream(base_url, e, started, count, limited))
                 for e in events]
        await asyncio.wait_for(started.wait(), timeout=300)
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        ended = await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)
        return events, ended, killed_at

    events, ended, killed_at = asyncio.run(run())
    from ember.cluster.environment import DEFAULT_INGRESS

    broken = [i for i, e in enumerate(events) if e[-1].startswith(CUT) or
              any(is_error_event(x) for x in e)]
    for i, stream in enumerate(events):
        if i in broken and DEFAULT_INGRESS == "haproxy":
            assert stream[-1].startswith(CUT) and "incomplete chunked read" in stream[-1], \
                f"stream {i} was not cut as HAProxy cuts it: {stream[-2:]}"
            assert "[DONE]" not in stream
        elif i in broken:
            assert stream[-1] == "[DONE]", f"stream {i} ended without [DONE]: {stream[-2:]}"
            error = json.loads(stream[-2])["error"]
            assert error["code"] == 503 and "incomplete" in error["message"]
        else:
            assert stream[-1] == "[DONE]", f"stream {i} ended without [DONE]: {stream[-2:]}"
            finish = json.loads(stream[-2]) if "usage" not in stream[-2] else json.loads(stream[-3])
            assert finish["choices"][0]["finish_reason"] == "length"
        if i in broken:
            assert ended[i] - killed_at < 15, "a broken stream took too long to end"
    assert broken, "no stream was on the killed replica"
    print(f"\n{len(broken)} of 16 streams were on the killed replica; each ended "
          f"({'cut' if DEFAULT_INGRESS == 'haproxy' else 'error event'}) within "
          f"{max(ended[i] - killed_at for i in broken):.1f}s")

    sent += 16

    # the other replica answers meanwhile, the limited key too
    answer = httpx.post(f"{base_url}/v1/chat/completions", headers=limited, timeout=120,
                        json={"model": MODEL, "max_tokens": 4,
                              "messages": [{"role": "user", "content": "Hi"}]})
    sent += 1
    assert answer.status_code == 200, answer.text

    # the dead replica's engine processes went with it
    while (left := survivors(engine_procs)) and time.time() < killed_at + 30:
        time.sleep(0.5)
    assert not left, f"engine processes still running 30 s after their replica died: {left}"

    # Serve replaces it, without an operator; the limited key is served all along
    deadline = time.time() + 600
    while len(engine_replicas()) < 2 or not _healthy():
        assert time.time() < deadline, "the killed replica was not replaced within 10 min"
        during = httpx.post(f"{base_url}/v1/retrieve", headers=limited, timeout=120,
                            json={"query": "fares", "top_k": 1})
        sent += 1
        assert during.status_code == 200, during.text
        time.sleep(5)
    print(f"two replicas serving again {time.time() - killed_at:.0f}s after the kill")
    after = httpx.post(f"{base_url}/v1/retrieve", headers=limited, timeout=120,
                       json={"query": "fares", "top_k": 1})
    sent += 1
    assert after.status_code == 200, after.text

    # the keeper and the vector store were not touched; every request has its row
    assert service_pids() == services
    assert all(group is None for _, group in services.values()), services
    deadline = time.time() + 60
    while count_usage(access_url, record.id) < sent and time.time() < deadline:
        time.sleep(1)
    assert count_usage(access_url, record.id) == sent
    print(f"{sent} requests of the limited key, {sent} usage rows")


def _healthy() -> bool:
    from ray import serve

    status = serve.status().applications["ember"].deployments[DEPLOYMENT]
    return status.status == "HEALTHY"
