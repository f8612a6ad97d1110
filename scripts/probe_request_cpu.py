"""CPU time each streamed chat costs a server's front-end process (docs/benchmarks.md).

    python scripts/probe_request_cpu.py ember=http://127.0.0.1:8000@PID \
        vllm=http://127.0.0.1:8100@PID

PID is the process that admits requests: Ember's engine replica
(`ray::ServeReplica:ember:LLMServer:...`) or plain vLLM's API server. N requests
(default 200) of MAX_TOKENS (default 1) at CONC at once (default 8), ROUNDS rounds
(default 3), targets alternating. The process's CPU over the run (from /proc, less its
idle rate measured just before) divided by N is what one request costs the event loop
that admits it: under a burst, requests pay it one after another before their first
token. The key is $EMBER_API_KEY or Ember's local admin key.
"""

import asyncio
import os
import statistics
import sys
import time

import httpx
from ember.client.types import auth_headers

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: str) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


async def drive(url: str, n: int, conc: int, max_tokens: int) -> None:
    gate = asyncio.Semaphore(conc)
    async with httpx.AsyncClient(timeout=120, headers=auth_headers(None),
                                 limits=httpx.Limits(max_connections=conc)) as client:
        async def one(i: int) -> None:
            body = {"model": os.environ.get("MODEL", "smollm2-135m-instruct"), "stream": True,
                    "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": f"Say hello number {i}"}]}
            async with gate, client.stream("POST", f"{url}/v1/chat/completions",
                                           json=body) as response:
                response.raise_for_status()
                async for _ in response.aiter_lines():
                    pass

        await asyncio.gather(*(one(i) for i in range(n)))


def cost_ms(url: str, pid: str, n: int, conc: int, max_tokens: int) -> float:
    before = cpu_seconds(pid)
    time.sleep(5)
    idle = (cpu_seconds(pid) - before) / 5
    before, start = cpu_seconds(pid), time.perf_counter()
    asyncio.run(drive(url, n, conc, max_tokens))
    used = cpu_seconds(pid) - before - idle * (time.perf_counter() - start)
    return used / n * 1000


def main(targets: list[str]) -> None:
    n, conc = int(os.environ.get("N", "200")), int(os.environ.get("CONC", "8"))
    max_tokens, rounds = int(os.environ.get("MAX_TOKENS", "1")), int(os.environ.get("ROUNDS", "3"))
    costs: dict[str, list[float]] = {t: [] for t in targets}
    for round_no in range(rounds):
        for target in targets:
            label, spec = target.split("=", 1)
            url, pid = spec.rsplit("@", 1)
            costs[target].append(cost_ms(url, pid, n, conc, max_tokens))
            print(f"round {round_no + 1} {label}: {costs[target][-1]:.2f} CPU-ms/request",
                  flush=True)
    for target, values in costs.items():
        print(f"{target.split('=')[0]}: median {statistics.median(values):.2f} CPU-ms/request "
              f"over {rounds} rounds of {n}")


if __name__ == "__main__":
    main(sys.argv[1:])
