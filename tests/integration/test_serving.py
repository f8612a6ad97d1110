"""The OpenAI-compatible service: real Serve HTTP, real vLLM CPU engine, real model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from ember import AsyncClient, Client
from ember.client import ChatStream

from .conftest import MODEL

pytestmark = pytest.mark.integration
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_models_lists_the_llm_first_then_rag_models_and_the_embedder(openai_client):
    ids = [m.id for m in openai_client.models.list().data]
    assert ids[0] == MODEL
    assert {"rag", "rag:docs", "all-minilm-l6-v2"} <= set(ids)


def test_chat_answers_correctly(openai_client):
    response = openai_client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=32, temperature=0)
    assert "Paris" in response.choices[0].message.content
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


def test_streaming_chat_arrives_incrementally_with_usage_at_the_end(openai_client):
    stream = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a short poem about rain."}],
        max_tokens=48, temperature=0, stream=True, stream_options={"include_usage": True})
    arrivals, text, usage = [], "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter())
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert len(arrivals) > 5, "the answer came in too few chunks to be streamed"
    assert arrivals[-1] - arrivals[0] > 0.05, "all chunks arrived at once"
    assert usage is not None and 0 < usage.completion_tokens <= 48
    assert text.strip()


def test_completions(openai_client):
    response = openai_client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert "Paris" in response.choices[0].text


def test_sixteen_concurrent_chats_all_succeed(base_url, api_key):
    from openai import AsyncOpenAI

    async def run() -> list[str]:
        client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0,
                             timeout=600)
        calls = [client.chat.completions.create(
            model=MODEL, max_tokens=24, temperature=0,
            messages=[{"role": "user", "content": f"Name a colour. Request {i}."}])
            for i in range(16)]
        responses = await asyncio.gather(*calls)
        return [r.choices[0].message.content for r in responses]

    answers = asyncio.run(run())
    assert len(answers) == 16 and all(a.strip() for a in answers)


def test_sdk_sync_chat_and_stream(base_url):
    with Client(base_url) as client:
        assert client.models()[0].id == MODEL
        result = client.chat(QUESTION, max_tokens=32, temperature=0)
        assert "Paris" in result.content and result.usage.completion_tokens > 0
        stream = ChatStream()
        deltas = list(client.stream_chat(QUESTION, stream=stream, max_tokens=32, temperature=0))
        assert len(deltas) > 1 and "Paris" in "".join(deltas)
        # Greedy decoding: the streamed answer is the non-streamed one, usage included.
        assert "".join(deltas).strip() == result.content.strip()
        assert stream.usage.completion_tokens == result.usage.completion_tokens
        assert stream.finish_reason == result.finish_reason


def test_sdk_async_chat_and_stream(base_url):
    async def run():
        async with AsyncClient(f"{base_url}/v1") as client:
            result = await client.chat("What is the capital of France?", max_tokens=32,
                                       temperature=0)
            deltas = [d async for d in client.stream_chat("Count to three.", max_tokens=16)]
            return result, deltas

    result, deltas = asyncio.run(run())
    assert "Paris" in result.content and len(deltas) > 1


def test_cli_chat_streams_the_answer(base_url):
    out = subprocess.run(
        [sys.executable, "-m", "ember.cli.main", "chat", "What is the capital of France?",
         "--url", base_url, "--usage"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout and "completion tokens" in out.stderr


def test_the_cpu_engine_workers_run_at_the_configured_niceness(base_url):
    """local.yaml's default `cpu_worker_niceness` (-10): the engine replicas' vLLM worker
    threads, and only theirs, get their core before the node's other processes."""
    import os

    import psutil
    from ember.serving.config import ModelDeploymentConfig

    wanted = ModelDeploymentConfig().cpu_worker_niceness
    replicas = [p for p in psutil.process_iter(["name", "cmdline"])
                if "ServeReplica:ember:LLMServer" in " ".join(p.info["cmdline"] or [])]
    assert replicas, "no engine replica process found"
    for replica in replicas:
        workers = [c for c in replica.children(recursive=True)
                   if c.name().startswith("VLLM::Worker")]
        assert workers, f"engine replica {replica.pid} has no vLLM worker"
        for worker in workers:
            nice = {os.getpriority(os.PRIO_PROCESS, t.id) for t in worker.threads()}
            assert nice == ({wanted} if os.geteuid() == 0 else {replica.nice()}), nice
        assert replica.nice() == 0  # the rest of the replica keeps Ray's worker niceness
