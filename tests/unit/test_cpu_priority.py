"""The engine replica gives its vLLM worker's threads (and only those) a niceness:
real child processes, named the way vLLM names its workers."""

import os
import shutil
import subprocess
import sys

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


PARENT = """
import subprocess, sys, time
children = [subprocess.Popen([sys.executable, "-c", sys.argv[1], title],
                             stdout=subprocess.PIPE, text=True) for title in sys.argv[2:]]
for child in children:
    child.stdout.readline()
print(" ".join(str(child.pid) for child in children), flush=True)
time.sleep(60)
"""


@pytest.fixture
def replica():
    """A stand-in for the engine replica's process: a vLLM-named worker and another
    child under it (this test process may have other workers: a test cluster's)."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, WORKER_PREFIX,
                               "ray::IDLE"], stdout=subprocess.PIPE, text=True)
    worker, other = (int(pid) for pid in parent.stdout.readline().split())
    yield parent.pid, worker, other
    for pid in (worker, other):
        os.kill(pid, 9)
    parent.kill()
    parent.wait()


def _niceness_of_threads(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def test_only_the_workers_threads_get_the_niceness(replica):
    root, worker, other = replica
    before = os.getpriority(os.PRIO_PROCESS, other)
    wanted = min(before + 5, 19)  # raising a niceness needs no privilege
    assert prioritise_engine_workers(wanted, root=root) == 4  # the main thread + three
    assert _niceness_of_threads(worker) == {wanted}
    assert _niceness_of_threads(other) == {before}


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
