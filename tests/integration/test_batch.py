"""Offline batch inference with the real engine: `ember batch run` on Ray Data LLM.

The module's one batch mixes 200 good lines with bad ones: `python -m ember.batch.job`
runs it until results arrive and is killed; the re-run runs only what the output lacks
and completes it. Every test reads that final output: each bad line gets its own error,
the rest completes, and no finished line runs twice. One batch, killed and resumed,
starts two vLLM engines (about a minute each on CPU); a run per claim started three.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    from ember.batch.job import BatchReport

MODEL = "smollm2-135m-instruct"
GOOD = 200  # good lines in the batch, req-0 .. req-199


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


def mixed_lines() -> list[str]:
    """GOOD good lines with four bad ones among them (the first line is one)."""
    bad = {
        "broken": "{this is not json",
        "other-model": chat_line("other-model", "hi", model="no-such-model"),
        "too-long": chat_line("too-long", "word " * 600),
        "bad-option": chat_line("bad-option", "hi", n=3),
    }
    lines = good_lines(GOOD)
    for at, line in zip((0, 50, 120, 199), bad.values(), strict=True):
        lines.insert(at, line)
    return lines


def good_results_in(path) -> int:
    if not path.exists():
        return 0
    return sum(1 for r in records_of(path) if (r["custom_id"] or "").startswith("req-"))


def run_and_kill(ray_cluster, config, after_results: int = 12) -> dict[str, str]:
    """`python -m ember.batch.job` on the batch, killed once `after_results` good lines have
    a result; what it wrote: result id by custom_id."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
           "RAY_AUTH_MODE": "token"}
    # batches of 4: results arrive in small steps, so the kill lands mid-job
    job = subprocess.Popen(
        [sys.executable, "-m", "ember.batch.job", config.input, "--model", MODEL,
         "--output", str(config.output_path), "--batch-size", "4",
         "--engine", "max_model_len=512"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and job.poll() is None:
            if good_results_in(config.output_path) >= after_results:
                break
            time.sleep(0.5)
        assert job.poll() is None, job.stdout.read().decode()[-3000:]
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    return {r["custom_id"]: r["id"] for r in records_of(config.output_path)}


class ResumedBatch(NamedTuple):
    report: BatchReport  # the re-run's
    records: list[dict]  # the final output
    first: dict[str, str]  # what the killed job wrote: result id by custom_id


@pytest.fixture(scope="module")
def resumed_batch(ray_cluster, tmp_path_factory) -> ResumedBatch:
    """The mixed batch, its job killed part-way, then re-run in-process to the end."""
    from ember.batch.job import run_batch

    config = batch_config(tmp_path_factory.mktemp("batch"), mixed_lines(), "mixed")
    first = run_and_kill(ray_cluster, config)
    report = run_batch(config)
    return ResumedBatch(report, records_of(config.output_path), first)


def test_every_line_gets_one_result_in_input_order(resumed_batch):
    report, records, _ = resumed_batch
    assert report.lines == 204 and len(records) == 204
    ids = [r["custom_id"] for r in records]
    assert ids[0] is None and records[0]["line"] == 1  # the broken line, by its number
    assert [i for i in ids if i and i.startswith("req-")] == [f"req-{i}" for i in range(GOOD)]
    assert report.failed == 4


def test_good_lines_are_real_chat_completions(resumed_batch):
    report, records, first = resumed_batch
    ok = [r for r in records if r["custom_id"] and r["custom_id"].startswith("req-")]
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in ok)
    bodies = [r["response"]["body"] for r in ok]
    assert all(b["object"] == "chat.completion" and b["model"] == MODEL for b in bodies)
    assert all(b["choices"][0]["message"]["content"].strip() for b in bodies)
    assert all(0 < b["usage"]["completion_tokens"] <= 8 for b in bodies)
    # the report counts the tokens of the lines it ran: those the killed job had not
    rerun = [r["response"]["body"] for r in ok if r["custom_id"] not in first]
    assert report.output_tokens == sum(b["usage"]["completion_tokens"] for b in rerun)


def test_bad_lines_get_errors_naming_the_problem(resumed_batch):
    _, records, _ = resumed_batch
    by_id = {r["custom_id"]: r for r in records}
    assert "not JSON" in records[0]["error"]["message"]
    expected = {"other-model": (404, "no-such-model"),
                "too-long": (400, "exceeds the model's context of 512"),
                "bad-option": (400, "'n'")}
    for custom_id, (status, words) in expected.items():
        response = by_id[custom_id]["response"]
        assert response["status_code"] == status, custom_id
        assert words in response["body"]["error"]["message"], custom_id


def test_a_killed_job_resumes_without_repeating_finished_lines(resumed_batch):
    """The killed job's results stay; the re-run runs every good line it lacked, once."""
    report, records, first = resumed_batch
    finished = [c for c in first if c.startswith("req-")]
    assert 12 <= len(finished) < GOOD  # killed part-way, after results arrived
    assert report.already_done == len(first)  # its errors for bad lines count as done
    assert report.ran == GOOD - len(finished)
    good = [r for r in records if r["custom_id"] and r["custom_id"].startswith("req-")]
    assert [r["custom_id"] for r in good] == [f"req-{i}" for i in range(GOOD)]
    assert all(r["response"]["status_code"] == 200 for r in good)
    kept = {r["custom_id"]: r["id"] for r in records if r["custom_id"] in first}
    assert kept == first  # finished lines were not run again
