"""One query at a time through each encoder backend, interleaved (docs/rag.md "Retrieval").

    python scripts/bench_fast_encoder.py [THREADS]

Builds the ONNX Runtime, TorchScript and plain `encode` backends of the embedded
embedder, embeds 300 queries through each in turn and prints p50 and p90 per backend.
"""

import statistics
import sys
import time

from ember.models.catalogue import DEFAULT_EMBEDDER
from ember.models.fast_encoder import FastEncoder


def main(threads: int) -> None:
    encoders = {name: FastEncoder(DEFAULT_EMBEDDER, threads=threads, backend=name)
                for name in ("onnx", "torchscript", "encode")}
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for i in range(300):
        query = f"how do I make a function remember the results of previous calls {i}"
        for name, encoder in encoders.items():
            start = time.perf_counter()
            encoder(query)
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        values.sort()
        print(f"{name} ({encoders[name].backend}): p50 {statistics.median(values) * 1000:.2f} ms"
              f"  p90 {values[int(0.9 * len(values))] * 1000:.2f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
