"""On a CPU node, the engine's compute threads get their core first.

vLLM's CPU backend binds its worker's compute (OpenMP) threads to cores of
their own and keeps a core for its engine loop and API server. Nothing keeps
the rest of a Ray node off the compute cores: Ray's daemons, Serve's proxy and
controller, the usage keeper, the replica's own event loop. Every slice they
take there is a slice the engine step waits for, a cost a plain `vllm serve`
beside an idle machine does not pay (issue 11; docs/benchmarks.md "Serving hot path").

Pinning the whole Ray node to the engine's reserved core would keep them off,
but Ray's workers inherit the raylet's CPU set: ingestion, training and batch
jobs would lose the other cores. So the replica instead raises the priority of
its worker's threads once the engine is up (`worker_niceness`, -10 by default:
about ten times the CPU share of a nice-0 process when both want the core).
Lowering a niceness needs CAP_SYS_NICE (root here; often not in a container):
without it the replica logs that once and serves as before.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("ember.cpu_priority")
WORKER_PREFIX = "VLLM::Worker"  # vLLM's process title for its engine workers


def prioritise_engine_workers(niceness: int, root: int | None = None) -> int:
    """Set every thread of the vLLM workers under `root` (default: this process, the
    engine replica) to `niceness`; returns how many threads were set."""
    import psutil

    threads = 0
    for child in psutil.Process(root).children(recursive=True):
        try:
            if not child.name().startswith(WORKER_PREFIX):
                continue
            for thread in child.threads():  # niceness is per thread on Linux
                os.setpriority(os.PRIO_PROCESS, thread.id, niceness)
                threads += 1
        except psutil.Error:
            continue  # a worker that just ended
        except PermissionError as exc:
            logger.warning("could not set the CPU engine worker's niceness to %d (%s: needs "
                           "CAP_SYS_NICE); it keeps its priority", niceness, exc)
            return threads
    return threads


def on_cpu_engine() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()
