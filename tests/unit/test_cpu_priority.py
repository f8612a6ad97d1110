"""The engine replica gives its vLLM worker's threads (and only those) a niceness:
real child processes, named the way vLLM names its workers."""

import os
import shutil
import subprocess
import sys
import time

import pytest
from ember.serving.cpu_priority import WORKER_PREFIX, prioritise_engine_workers

CHILD = """
import sys, threading, time
import setproctitle
setproctitle.setproctitle(sys.argv[1])
for _ in range(3):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


def _start(title: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", CHILD, title], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


def _niceness_of_threads(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.fixture
def children():
    started = [_start(f"{WORKER_PREFIX}"), _start("ray::IDLE")]
    time.sleep(0.2)
    yield started
    for child in started:
        child.kill()
        child.wait()


def test_only_the_workers_threads_get_the_niceness(children):
    worker, other = children
    before = os.getpriority(os.PRIO_PROCESS, other.pid)
    wanted = min(before + 5, 19)  # raising a niceness needs no privilege
    assert prioritise_engine_workers(wanted) == 4  # the main thread and its three
    assert _niceness_of_threads(worker.pid) == {wanted}
    assert _niceness_of_threads(other.pid) == {before}


def test_without_the_privilege_it_says_so_and_leaves_it():
    """Without CAP_SYS_NICE (dropped with util-linux's setpriv when the tests run as
    root): no niceness below 0, a warning naming the capability, the worker untouched."""
    script = (
        "import logging, subprocess, sys\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from ember.serving.cpu_priority import prioritise_engine_workers\n"
        f"child = subprocess.Popen([sys.executable, '-c', {CHILD!r}, {WORKER_PREFIX!r}],"
        " stdout=subprocess.PIPE, text=True)\n"
        "child.stdout.readline()\n"
        "print('set', prioritise_engine_workers(-10))\n"
        "child.kill()\n")
    drop = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and util-linux's setpriv is missing")
        drop = ["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice", "--"]
    done = subprocess.run([*drop, sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "set 0"
    assert "needs CAP_SYS_NICE" in done.stderr
