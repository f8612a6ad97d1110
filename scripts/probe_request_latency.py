"""Round-trip latency of small requests, targets interleaved (docs/benchmarks.md).

    python scripts/probe_request_latency.py ember=http://127.0.0.1:8000 \
        vllm=http://127.0.0.1:8100 dense=http://127.0.0.1:8000,retrieve:dense

Each target is LABEL=URL[,retrieve[:MODE]]: `GET /v1/models`, or `POST /v1/retrieve`
on $COLL (default docs) in that mode. N requests each (default 200), first 5 dropped;
p50 and p90 printed. The key is $EMBER_API_KEY or Ember's local admin key.
"""

import os
import statistics
import sys
import time

import httpx
from ember.client.types import auth_headers


def main(targets: list[str]) -> None:
    rounds, collection = int(os.environ.get("N", "200")), os.environ.get("COLL", "docs")
    times: dict[str, list[float]] = {t: [] for t in targets}
    with httpx.Client(timeout=30, headers=auth_headers(None)) as client:
        for i in range(rounds):
            for target in targets:
                _, spec = target.split("=", 1)
                url, _, what = spec.partition(",")
                start = time.perf_counter()
                if what.startswith("retrieve"):
                    mode = what.partition(":")[2] or "dense"
                    response = client.post(f"{url}/v1/retrieve", json={
                        "query": f"how do I open a file {i}", "collection": collection,
                        "top_k": 4, "mode": mode})
                else:
                    response = client.get(f"{url}/v1/models")
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                if i >= 5:
                    times[target].append(elapsed)
    for target, values in times.items():
        values.sort()
        print(f"{target}: p50 {statistics.median(values) * 1000:.2f} ms  "
              f"p90 {values[int(len(values) * 0.9)] * 1000:.2f} ms  n={len(values)}")


if __name__ == "__main__":
    main(sys.argv[1:])
