"""What each serving process costs during a GPU serving bench (`bench_serve.py`): the
processes on a request's path by role, the CPU each used over a window (from /proc), and
py-spy profiles of them summarised per function."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

# --- which process does what, and how much CPU it used --------------------------------------


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found[int(entry.name)] = (ppid, cmdline or stat.split("(", 1)[1].split(")", 1)[0])
    return found


def descendants(root: int, table: dict[int, tuple[int, str]]) -> list[int]:
    out, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        out += children
        frontier += children
    return out


def serving_processes(vllm_pid: int) -> dict[str, list[int]]:
    """The processes on a request's path, by role."""
    table = processes()
    roles: dict[str, list[int]] = {"vllm api server": [vllm_pid]}
    roles["vllm engine core"] = [p for p in descendants(vllm_pid, table)
                                 if "EngineCore" in table[p][1]]
    replicas = [p for p, (_, cmd) in table.items() if "ServeReplica:ember:LLMServer" in cmd]
    roles["ember replica"] = replicas
    roles["ember engine core"] = [p for r in replicas for p in descendants(r, table)
                                  if "EngineCore" in table[p][1]]
    roles["serve proxy"] = [p for p, (_, cmd) in table.items() if "ProxyActor" in cmd]
    roles["haproxy"] = [p for p, (_, cmd) in table.items()
                        if cmd.split(" ")[0].endswith("haproxy")]
    roles["serve controller"] = [p for p, (_, cmd) in table.items() if "ServeController" in cmd]
    return {role: pids for role, pids in roles.items() if pids}


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


class CpuMeter:
    """CPU % per role over a window (100% = one core busy)."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = roles
        self.hz = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> CpuMeter:
        self.start = time.time()
        self.before = {role: cpu_ticks(pids) for role, pids in self.roles.items()}
        return self

    def __exit__(self, *_exc) -> None:
        wall = time.time() - self.start
        self.percent = {role: round(100 * (cpu_ticks(pids) - self.before[role])
                                    / self.hz / wall, 1)
                        for role, pids in self.roles.items()}


# --- py-spy -----------------------------------------------------------------------------------


def py_spy() -> str | None:
    return shutil.which("py-spy") or next(
        (str(p) for p in (Path("/tmp/site/bin/py-spy"),) if p.is_file()), None)


def start_profiles(roles: dict[str, list[int]], which: list[str], seconds: float,
                   folder: Path) -> list[tuple[str, Path, subprocess.Popen]]:
    binary = py_spy()
    if binary is None:
        print("no py-spy: no profiles", flush=True)
        return []
    running = []
    for role in which:
        for pid in roles.get(role, [])[:1]:
            out = folder / f"{role.replace(' ', '-')}-{pid}.raw"
            proc = subprocess.Popen([binary, "record", "--pid", str(pid), "--rate", "200",
                                     "--duration", str(int(seconds)), "--format", "raw",
                                     "--nonblocking", "--output", str(out)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            running.append((role, out, proc))
    return running


GENERIC_FRAMES = ("Thread.run ", "Thread._bootstrap", "<module> ", "Worker.main_loop ",
                  "BaseEventLoop.run_forever ", "BaseEventLoop._run_once ", "Handle._run ",
                  "run (asyncio/runners.py)", "Runner.run ")


def summarise_profile(raw: Path, seconds: float, rate: int = 200, top: int = 25) -> str:
    """py-spy's samples per function (file:function, lines dropped): inclusive share (the
    function or what it called was running) and self share (it was the innermost frame)."""
    inclusive, leaf, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0] + ")"
                  for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        leaf[frames[-1]] += n
    lines = [f"{raw.name}: {total} samples in {seconds:.0f}s at {rate}/s "
             f"(busy {total / (rate * seconds):.0%} of one thread)", " inclusive:"]
    shown = [(f, n) for f, n in inclusive.most_common()
             if not any(f.startswith(g) or g in f for g in GENERIC_FRAMES)][:top]
    lines += [f"  {n / max(total, 1):6.1%}  {frame}" for frame, n in shown]
    lines.append(" self:")
    lines += [f"  {n / max(total, 1):6.1%}  {frame}" for frame, n in leaf.most_common(15)]
    return "\n".join(lines)


