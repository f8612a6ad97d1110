"""Offline batch inference with the real engine: `ember batch run` on Ray Data LLM.

One batch mixes 200 good lines with bad ones (each bad line gets its own error, the
rest completes); a job killed part-way is re-run and runs only what it lacked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

MODEL = "smollm2-135m-instruct"


def chat_line(custom_id: str, content: str, **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": MODEL, "messages": [{"role": "user", "content": content}],
                                "max_tokens": 8, "temperature": 0, **body}})


def good_lines(count: int) -> list[str]:
    return [chat_line(f"req-{i}", f"Say the number {i}.") for i in range(count)]


def records_of(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def batch_config(tmp_path, lines: list[str], name: str):
    from ember.batch.job import CPU_ENGINE, BatchConfig

    source = tmp_path / f"{name}.jsonl"
    source.write_text("\n".join(lines) + "\n")
    # a small engine beside the session's two service replicas
    engine = {**CPU_ENGINE, "max_model_len": 512}
    return BatchConfig(input=str(source), model=MODEL, engine=engine, kv_cache_gib=1)


@pytest.fixture(scope="module")
def mixed_batch(ray_cluster, tmp_path_factory):
    from ember.batch.job import run_batch

    bad = {
        "broken": "{this is not json",
        "other-model": chat_line("other-model", "hi", model="no-such-model"),
        "too-long": chat_line("too-long", "word " * 600),
        "bad-option": chat_line("bad-option", "hi", n=3),
    }
    lines = good_lines(200)
    for at, line in zip((0, 50, 120, 199), bad.values(), strict=True):
        lines.insert(at, line)
    config = batch_config(tmp_path_factory.mktemp("batch"), lines, "mixed")
    report = run_batch(config)
    return config, report, records_of(config.output_path)


def test_every_line_gets_one_result_in_input_order(mixed_batch):
    config, report, records = mixed_batch
    assert report.lines == 204 and len(records) == 204
    ids = [r["custom_id"] for r in records]
    assert ids[0] is None and records[0]["line"] == 1  # the broken line, by its number
    assert [i for i in ids if i and i.startswith("req-")] == [f"req-{i}" for i in range(200)]
    assert report.ran == 200 and report.failed == 4


def test_good_lines_are_real_chat_completions(mixed_batch):
    _, report, records = mixed_batch
    ok = [r for r in records if r["custom_id"] and r["custom_id"].startswith("req-")]
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in ok)
    bodies = [r["response"]["body"] for r in ok]
    assert all(b["object"] == "chat.completion" and b["model"] == MODEL for b in bodies)
    assert all(b["choices"][0]["message"]["content"].strip() for b in bodies)
    assert all(0 < b["usage"]["completion_tokens"] <= 8 for b in bodies)
    assert report.output_tokens == sum(b["usage"]["completion_tokens"] for b in bodies)


def test_bad_lines_get_errors_naming_the_problem(mixed_batch):
    _, _, records = mixed_batch
    by_id = {r["custom_id"]: r for r in records}
    assert "not JSON" in records[0]["error"]["message"]
    expected = {"other-model": (404, "no-such-model"),
                "too-long": (400, "exceeds the model's context of 512"),
                "bad-option": (400, "'n'")}
    for custom_id, (status, words) in expected.items():
        response = by_id[custom_id]["response"]
        assert response["status_code"] == status, custom_id
        assert words in response["body"]["error"]["message"], custom_id


def test_a_killed_job_resumes_without_repeating_finished_lines(ray_cluster, tmp_path):
    """`python -m ember.batch.job` killed once results arrive; the re-run adds the rest."""
    from ember.batch.job import run_batch

    config = batch_config(tmp_path, good_lines(120), "resume")
    config.batch_size = 4  # results arrive in small steps, so the kill lands mid-job
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
           "RAY_AUTH_MODE": "token"}
    job = subprocess.Popen(
        [sys.executable, "-m", "ember.batch.job", config.input, "--model", MODEL,
         "--output", str(config.output_path), "--batch-size", "4",
         "--engine", "max_model_len=512"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and job.poll() is None:
            if config.output_path.exists() and len(records_of(config.output_path)) >= 12:
                break
            time.sleep(0.5)
        assert job.poll() is None, job.stdout.read().decode()[-3000:]
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    first = {r["custom_id"]: r["id"] for r in records_of(config.output_path)}
    assert 12 <= len(first) < 120

    report = run_batch(config)
    assert report.already_done == len(first)
    assert report.ran == 120 - len(first)
    records = records_of(config.output_path)
    assert [r["custom_id"] for r in records] == [f"req-{i}" for i in range(120)]
    assert all(r["response"]["status_code"] == 200 for r in records)
    kept = {r["custom_id"]: r["id"] for r in records if r["custom_id"] in first}
    assert kept == first  # finished lines were not run again
