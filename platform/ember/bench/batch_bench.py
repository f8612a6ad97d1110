"""`ember bench batch`: the batch job vs offline `vllm.LLM.generate` vs the online service.

The same rendered prompts go to all three, one after the other on an idle machine:
1. offline: `vllm.LLM(...).generate(prompts)` in a child process (its engine start
   timed apart from its generation);
2. `ember batch run` (Ray Data LLM): a one-line batch first measures its start-up
   (Ray Data LLM does not report when its engine is ready), then the whole batch;
   its generation time is the batch's engine time minus that start-up;
3. the online service at concurrency `--online-concurrency` (when `--url` is given);
then the online service's c=1 latency idle and while a batch runs.
Output lengths are compared too: greedy decoding should make them match.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

RESULT = "EMBER_OFFLINE_RESULT "
TOPICS = ("rivers", "bread", "comets", "bicycles", "volcanoes", "libraries", "owls", "tides",
          "glass", "chess", "maple trees", "lighthouses", "honey", "trains", "clouds", "salt")


def make_lines(count: int, model: str, max_tokens: int) -> list[str]:
    lines = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        lines.append(json.dumps({
            "custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "max_tokens": max_tokens, "temperature": 0,
                     "messages": [{"role": "user",
                                   "content": f"Write {i % 5 + 2} sentences about {topic}."}]}}))
    return lines


def offline_generate(model_path: str, prompts_file: str, max_tokens: int, engine: dict,
                     kv_cache_gib: int = 2) -> dict:
    """In a child process (vLLM spawns workers: it needs a fresh __main__)."""
    import os

    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib)}  # as the batch engine
    out = subprocess.run(
        [sys.executable, "-m", "ember.bench.batch_bench", model_path, prompts_file,
         str(max_tokens), json.dumps(engine)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"offline vllm.LLM failed:\n{out.stderr[-3000:]}")
    marked = [x for x in out.stdout.splitlines() if x.startswith(RESULT)]
    if not marked:
        raise RuntimeError(f"offline vllm.LLM printed no result:\n{out.stdout[-3000:]}")
    return json.loads(marked[-1].removeprefix(RESULT))


def _offline_main(model_path: str, prompts_file: str, max_tokens: int, engine: dict) -> None:
    from vllm import LLM, SamplingParams

    prompts = json.loads(Path(prompts_file).read_text())
    start = time.perf_counter()
    llm = LLM(model=model_path, **engine)
    ready = time.perf_counter()
    outputs = llm.generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0),
                           use_tqdm=False)
    done = time.perf_counter()
    tokens = [len(o.outputs[0].token_ids) for o in outputs]
    print(RESULT + json.dumps({"start_s": ready - start, "generate_s": done - ready,
                               "tokens": tokens}), flush=True)


async def online_run(url: str, key: str | None, lines: list[str], concurrency: int) -> dict:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    tokens: list[int] = []

    async def one(client, body):
        async with gate:
            response = await client.post(f"{url}/v1/chat/completions", json=body,
                                         headers=headers)
            response.raise_for_status()
            tokens.append(response.json()["usage"]["completion_tokens"])

    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client, json.loads(x)["body"]) for x in lines))
        return {"seconds": time.perf_counter() - start, "tokens": tokens}


def latencies_c1(url: str, key: str | None, body: dict, stop: threading.Event,
                 limit: int = 10_000) -> list[float]:
    """Sequential requests until `stop` (or `limit`): the wall time of each."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    times = []
    with httpx.Client(timeout=600) as client:
        while not stop.is_set() and len(times) < limit:
            start = time.perf_counter()
            client.post(f"{url}/v1/chat/completions", json=body, headers=headers
                        ).raise_for_status()
            times.append(time.perf_counter() - start)
    return times


def median_ms(times: list[float]) -> str:
    return f"{statistics.median(times) * 1000:.0f} ms" if times else "n/a"


if __name__ == "__main__":
    _offline_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]))
