"""GPU utilisation and memory while a benchmark runs, for the row it belongs to.

A thread samples every GPU of the machine every `SAMPLE_INTERVAL_S` through NVML
(`pynvml`, from nvidia-ml-py) when it imports and initialises, else through
`nvidia-smi` when it is on PATH, else not at all (a CPU machine: the values are
None and the tables print "n/a"). Each sample is the mean utilisation over the
GPUs and the memory used summed over them; a row's window reports the mean
utilisation of its samples and the peak memory. The samples carry wall-clock
times, so a row can keep only those taken while its load ran (not the
client processes' start-up and warm-up around it).
"""

from __future__ import annotations

import functools
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SAMPLE_INTERVAL_S = 0.5
NVIDIA_SMI_QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
MIB_PER_GIB = 1024

# one reading: (utilisation %, memory used in MiB) per GPU, None where a GPU does not say
Reading = list[tuple[float | None, float | None]]


@dataclass
class GpuSample:
    time: float  # time.time()
    util_pct: float | None  # mean over the GPUs
    mem_gib: float | None  # summed over the GPUs


def parse_nvidia_smi(text: str) -> Reading:
    """`nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits`:
    one "UTIL, MIB" line per GPU; "[N/A]" (or anything not a number) becomes None."""
    reading = []
    for line in text.splitlines():
        if line.strip():
            util, _, mem = line.partition(",")
            reading.append((_number(util), _number(mem)))
    return reading


def _number(field: str) -> float | None:
    try:
        return float(field.strip())
    except ValueError:
        return None


def nvml_reader() -> Callable[[], Reading] | None:
    """A reader over NVML, or None when pynvml is missing or finds no driver."""
    handles = _nvml_handles()
    if handles is None:
        return None
    import pynvml

    def read() -> Reading:
        return [(float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                 pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20) for h in handles]

    return read


@functools.cache
def _nvml_handles() -> tuple | None:
    """NVML initialised once per process (it stays so until the process ends)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return tuple(pynvml.nvmlDeviceGetHandleByIndex(i)
                     for i in range(pynvml.nvmlDeviceGetCount()))
    except Exception:  # ImportError, or NVMLError without a driver or a GPU
        return None


def nvidia_smi_reader() -> Callable[[], Reading] | None:
    """A reader that runs nvidia-smi once per sample, or None when it is not on PATH."""
    path = shutil.which("nvidia-smi")
    if path is None:
        return None

    def read() -> Reading:
        out = subprocess.run([path, *NVIDIA_SMI_QUERY], capture_output=True, text=True,
                             timeout=10, check=True).stdout
        return parse_nvidia_smi(out)

    return read


def summarise(reading: Reading, at: float) -> GpuSample:
    utils = [u for u, _ in reading if u is not None]
    mems = [m for _, m in reading if m is not None]
    return GpuSample(at, statistics.fmean(utils) if utils else None,
                     sum(mems) / MIB_PER_GIB if mems else None)


def window_stats(samples: list[GpuSample], start: float | None = None,
                 end: float | None = None) -> dict[str, float | None]:
    """Mean utilisation and peak memory of the samples taken in [start, end]
    (all of them when none falls inside: a window shorter than one interval)."""
    inside = [s for s in samples if (start is None or s.time >= start)
              and (end is None or s.time <= end)] or samples
    utils = [s.util_pct for s in inside if s.util_pct is not None]
    mems = [s.mem_gib for s in inside if s.mem_gib is not None]
    return {"gpu_util_pct": statistics.fmean(utils) if utils else None,
            "gpu_mem_gib": max(mems) if mems else None}


class GpuSampler:
    """`with GpuSampler() as gpu: ...` samples in a thread; `gpu.stats(start, end)` after."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S,
                 reader: Callable[[], Reading] | None = None):
        self.interval_s = interval_s
        self.reader = reader
        self.samples: list[GpuSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        self.reader = self.reader or nvml_reader() or nvidia_smi_reader()
        if self.reader is not None:
            self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        while True:  # one sample at once, one per interval, one more when told to stop
            self._sample()
            if self._stop.wait(self.interval_s):
                self._sample()
                return

    def _sample(self) -> None:
        try:
            self.samples.append(summarise(self.reader(), time.time()))
        except Exception:  # a failed read (nvidia-smi timing out) loses that sample only
            pass

    def stats(self, start: float | None = None,
              end: float | None = None) -> dict[str, float | None]:
        return window_stats(self.samples, start, end)
