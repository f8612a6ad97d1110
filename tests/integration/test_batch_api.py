"""The OpenAI Batch API on the running service, driven by the `openai` SDK unchanged.

The session's service has small Batch API ceilings (conftest: 300 lines, 1 MB,
8 requests per synchronous batch). Batches run one at a time, each through its
own vLLM engine on Ray Data LLM.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import time

import httpx
import openai
import psutil
import pytest

MODEL = "smollm2-135m-instruct"
DONE = ("completed", "failed", "cancelled", "expired")


def chat_line(custom_id: str, content: str, **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": MODEL, "messages": [{"role": "user", "content": content}],
                                "max_tokens": 8, "temperature": 0, **body}})


def upload(client, lines: list[str]):
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("batch.jsonl", io.BytesIO(data)), purpose="batch")


def wait_for(client, batch_id: str, until, timeout_s: float = 900, every_s: float = 2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if until(batch):
            return batch
        time.sleep(every_s)
    raise AssertionError(f"batch {batch_id} still {batch.status}: {batch.request_counts}")


def short_then_long(prefix: str, count: int = 150, short: int = 64) -> list[str]:
    """`short` one-token lines, then lines that must run 64 tokens: the engine batches
    holding the short lines finish (and their results are written) while the long
    ones still run, so a test can act on a batch that is part-way through. Ray Data
    hands back a block (>= batch_size rows, 32 by default) at a time: `short` must
    fill at least the first block."""
    return [chat_line(f"{prefix}{i}", f"Describe colour number {i}.",
                      **({"max_tokens": 1} if i < short else
                         {"max_tokens": 64, "ignore_eos": True}))
            for i in range(count)]


def lines_of(client, file_id: str) -> list[dict]:
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


@pytest.fixture(scope="module")
def finished_batch(openai_client):
    lines = [chat_line(f"r{i}", f"Say the word number {i}.") for i in range(200)]
    lines.insert(10, "{this line is broken")
    lines.insert(100, chat_line("wrong-model", "hi", model="no-such-model"))
    source = upload(openai_client, lines)
    batch = openai_client.batches.create(input_file_id=source.id,
                                         endpoint="/v1/chat/completions",
                                         completion_window="24h", metadata={"suite": "api"})
    assert batch.status == "validating" and batch.request_counts.total == 202
    return source, wait_for(openai_client, batch.id, lambda b: b.status in DONE)


def test_a_200_line_batch_completes_through_the_sdk(openai_client, finished_batch):
    source, batch = finished_batch
    assert batch.status == "completed", batch.errors
    assert batch.request_counts.completed == 200 and batch.request_counts.failed == 2
    assert batch.metadata == {"suite": "api"} and batch.input_file_id == source.id
    out = lines_of(openai_client, batch.output_file_id)
    assert [r["custom_id"] for r in out] == [f"r{i}" for i in range(200)]
    first = out[0]["response"]
    assert first["status_code"] == 200
    assert first["body"]["choices"][0]["message"]["content"].strip()
    assert first["body"]["usage"]["completion_tokens"] <= 8


def test_bad_lines_are_in_the_error_file(openai_client, finished_batch):
    _, batch = finished_batch
    errors = lines_of(openai_client, batch.error_file_id)
    assert len(errors) == 2
    by_id = {e["custom_id"]: e for e in errors}
    assert by_id["wrong-model"]["response"]["status_code"] == 404
    assert "no-such-model" in by_id["wrong-model"]["response"]["body"]["error"]["message"]
    assert by_id[None]["line"] == 11 and "not JSON" in by_id[None]["error"]["message"]


def test_listing_and_files_belong_to_the_key(openai_client, finished_batch, base_url,
                                             access_url):
    from ember.access.keys import create_key
    from openai import OpenAI

    _, batch = finished_batch
    assert batch.id in [b.id for b in openai_client.batches.list(limit=10).data]
    assert openai_client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    key, _ = create_key(access_url, "batch-outsider")
    outsider = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        outsider.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        outsider.files.content(batch.output_file_id)
    assert batch.id not in [b.id for b in outsider.batches.list().data]


def test_bad_uploads_and_batches_get_clear_4xx(openai_client):
    with pytest.raises(openai.BadRequestError, match="not JSONL"):
        openai_client.files.create(file=("x.jsonl", io.BytesIO(b"hello\nworld\n")),
                                   purpose="batch")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        upload_with_purpose = io.BytesIO(chat_line("a", "hi").encode())
        openai_client.files.create(file=("x.jsonl", upload_with_purpose),
                                   purpose="fine-tune")
    with pytest.raises(openai.APIStatusError, match="batch.max_file_mb") as big:
        openai_client.files.create(file=("big.jsonl", io.BytesIO(b"{}\n" * 600_000)),
                                   purpose="batch")
    assert big.value.status_code == 413
    with pytest.raises(openai.NotFoundError, match="no file"):
        openai_client.batches.create(input_file_id="file-nope",
                                     endpoint="/v1/chat/completions", completion_window="24h")
    too_many = upload(openai_client, [chat_line(f"x{i}", "hi") for i in range(301)])
    with pytest.raises(openai.BadRequestError, match="batch.max_lines"):
        openai_client.batches.create(input_file_id=too_many.id,
                                     endpoint="/v1/chat/completions", completion_window="24h")
    small = upload(openai_client, [chat_line("a", "hi")])
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        openai_client.batches.create(input_file_id=small.id, endpoint="/v1/embeddings",
                                     completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        openai_client.batches.retrieve("batch_nope")


def test_a_cancelled_batch_keeps_its_results(openai_client, finished_batch):
    source = upload(openai_client, short_then_long("c"))
    batch = openai_client.batches.create(input_file_id=source.id,
                                         endpoint="/v1/chat/completions",
                                         completion_window="24h")
    running = wait_for(openai_client, batch.id, every_s=0.5,
                       until=lambda b: b.request_counts.completed >= 16 or b.status in DONE)
    assert running.status == "in_progress"
    cancelled = openai_client.batches.cancel(batch.id)
    assert cancelled.status == "cancelled"
    kept = lines_of(openai_client, cancelled.output_file_id)
    assert len(kept) == cancelled.request_counts.completed >= 16
    assert len(kept) < 150
    assert all(r["response"]["status_code"] == 200 for r in kept)
    with pytest.raises(openai.ConflictError):
        openai_client.batches.cancel(batch.id)


def frozen_batch_engine() -> list:
    """The batch engine's vLLM processes (children of Ray Data LLM's engine actor), stopped
    with SIGSTOP: an engine that hangs without dying, the harder case for a watchdog."""
    actors = [p for p in psutil.process_iter(["cmdline"])
              if (p.info["cmdline"] or [""])[0].startswith("ray::MapWorker(MapBatches(Nice")]
    assert len(actors) == 1, [a.info["cmdline"] for a in actors]
    engine = actors[0].children(recursive=True)
    assert engine, "the batch engine actor has no vLLM processes"
    for process in engine:
        process.send_signal(signal.SIGSTOP)
    return engine


def test_a_batch_whose_engine_hangs_fails_and_keeps_its_results(openai_client, ray_cluster,
                                                                  local_app_args):
    """The runner's watchdog (the session's `batch.stall_timeout_s`: 45 s) fails it."""
    source = upload(openai_client, short_then_long("h"))
    batch = openai_client.batches.create(input_file_id=source.id,
                                         endpoint="/v1/chat/completions",
                                         completion_window="24h")
    running = wait_for(openai_client, batch.id, every_s=0.5,
                       until=lambda b: b.request_counts.completed >= 16 or b.status in DONE)
    assert running.status == "in_progress"
    engine = frozen_batch_engine()
    try:
        stall_s = local_app_args["batch"]["stall_timeout_s"]
        failed = wait_for(openai_client, batch.id, lambda b: b.status in DONE,
                          timeout_s=4 * stall_s)
    finally:
        for process in engine:  # stopped processes outlive their parent otherwise
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    assert failed.status == "failed", failed
    [error] = failed.errors.data
    assert "stall_timeout_s" in error.message and "died or hangs" in error.message, error
    kept = lines_of(openai_client, failed.output_file_id)
    assert len(kept) == failed.request_counts.completed >= 16
    assert all(r["response"]["status_code"] == 200 for r in kept)
    # the runner ended (its engine with it), and a look at a failed batch starts none
    assert openai_client.batches.retrieve(batch.id).status == "failed"
    deadline = time.monotonic() + 30
    while runner_alive(batch.id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not runner_alive(batch.id)


def runner_alive(batch_id: str) -> bool:
    import ray
    from ember.batch.service import runner_name

    try:
        ray.get_actor(runner_name(batch_id), namespace="ember")
        return True
    except ValueError:
        return False


# Longer than the suite's ceiling (pyproject.toml): two waits of up to 900 s each (wait_for).
@pytest.mark.timeout(1800)
def test_a_batch_whose_runner_died_resumes(openai_client, ray_cluster, finished_batch):
    """A restart (here: the runner actor killed) loses no work and repeats none."""
    import ray
    from ember.batch.service import runner_name

    count = 150
    source = upload(openai_client, short_then_long("k", count))
    batch = openai_client.batches.create(input_file_id=source.id,
                                         endpoint="/v1/chat/completions",
                                         completion_window="24h")
    running = wait_for(openai_client, batch.id, every_s=0.5,
                       until=lambda b: b.request_counts.completed >= 1 or b.status in DONE)
    assert running.status == "in_progress" and running.request_counts.completed < count
    ray.kill(ray.get_actor(runner_name(batch.id), namespace="ember"))
    done = wait_for(openai_client, batch.id, lambda b: b.status in DONE)  # GET restarts it
    assert done.status == "completed" and done.request_counts.completed == count
    out = lines_of(openai_client, done.output_file_id)
    assert [r["custom_id"] for r in out] == [f"k{i}" for i in range(count)]


def test_synchronous_batch_answers_in_order(base_url, auth):
    requests = [{"custom_id": "a", "body": {"model": MODEL, "max_tokens": 4,
                                            "messages": [{"role": "user", "content": "Hi"}]}},
                {"custom_id": "b", "url": "/v1/completions",
                 "body": {"model": MODEL, "prompt": "One, two,", "max_tokens": 4}},
                {"custom_id": "c", "body": {"model": "no-such-model", "max_tokens": 4,
                                            "messages": [{"role": "user", "content": "Hi"}]}},
                {"custom_id": "d", "body": {"model": MODEL, "messages": "not a list"}}]
    response = httpx.post(f"{base_url}/v1/batch", json={"requests": requests}, headers=auth,
                          timeout=300)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["custom_id"] for d in data] == ["a", "b", "c", "d"]
    assert [d["response"]["status_code"] for d in data[:2]] == [200, 200]
    assert data[0]["response"]["body"]["object"] == "chat.completion"
    assert data[2]["response"]["status_code"] == 404
    assert data[3]["response"]["status_code"] == 400
    too_many = httpx.post(f"{base_url}/v1/batch", json={"requests": requests * 3},
                          headers=auth, timeout=60)
    assert too_many.status_code == 413 and "sync_max_requests" in too_many.text
