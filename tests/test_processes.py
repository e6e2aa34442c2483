"""Workers die with their parent: ``prctl(PR_SET_PDEATHSIG)`` on Linux, a watcher elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

# The parent starts the child, records its PID, then waits forever; the child arms
# die_with_parent (prctl or the watcher thread), says so, then waits forever too.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]])
open(sys.argv[2] + ".pid", "w").write(str(child.pid))
time.sleep(600)
"""
CHILD = """
import os, sys, time
from plankline.processes import die_with_parent
how = die_with_parent(os.getppid(), use_prctl=sys.argv[2] == "prctl", poll_s=0.1)
open(sys.argv[1] + ".tmp", "w").write(how)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize(
    "mechanism",
    [
        pytest.param(
            "prctl",
            marks=pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
        ),
        "watch",
    ],
)
def test_a_child_dies_within_seconds_of_a_kill_9_of_its_parent(
    tmp_path: Path, mechanism: str
) -> None:
    armed = tmp_path / "armed"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(armed), mechanism])
    child_pid = None
    try:
        wait_until(armed.is_file, 60, "the child to arm die_with_parent")
        assert armed.read_text() == mechanism
        child_pid = int(Path(f"{armed}.pid").read_text())
        assert psutil.Process(child_pid).ppid() == parent.pid
        parent.kill()  # SIGKILL: the parent can tell nobody
        parent.wait(10)
        wait_until(lambda: gone(child_pid), 5, f"child {child_pid} to follow its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if child_pid is not None and not gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)  # the test failed: leave nothing behind


@pytest.mark.parametrize("use_prctl", [True, False])
def test_a_child_whose_parent_died_before_it_armed_exits_at_once(use_prctl: bool) -> None:
    """The race: the parent passed its PID, then died before the child's initializer ran."""
    code = (
        "import os\nfrom plankline.processes import die_with_parent\n"
        f"die_with_parent(os.getppid() + 10**7, use_prctl={use_prctl})\n"
        "print('still alive')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert "still alive" not in done.stdout
