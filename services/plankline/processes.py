"""Process hygiene: worker processes that exit when the process that started them dies.

A ``kill -9`` (or the OOM killer) of ``plankline run`` or ``plankline classify`` gives its
pool workers no chance to be told: they are re-parented to PID 1 (or a subreaper) and sit
idle, each holding its model and buffers (about 470 MB), until someone finds them. Every
pool of this package therefore starts its workers with :func:`die_with_parent` as the
initializer, so they follow their parent within a moment.

Two mechanisms, the first that works:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, called through ``ctypes`` on the C library.
  The kernel sends the signal when the parent exits, whatever the child is doing (blocked
  in C code, stopped). Caveat: the "parent" is the *thread* that created the child, so
  pools must be created and grown from a thread that lives as long as the pool (the main
  thread, as every pool here is; ``ProcessPoolExecutor`` with the spawn method starts its
  workers in the thread that calls ``submit``).
- elsewhere (macOS, a libc without ``prctl``): a daemon thread that checks ``os.getppid()``
  every ``poll_s`` seconds and kills its own process once the parent has changed. It needs
  the GIL, so a worker inside a long C call that holds it notices only after that call.

Both guard the race where the parent dies before the child arms them: the child compares
its parent with the PID the parent passed down and exits at once if they differ.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1
"""``prctl`` option from ``<linux/prctl.h>``: signal to receive when the parent dies."""


def _prctl_pdeathsig(sig: int) -> bool:
    """Arm ``PR_SET_PDEATHSIG``; False where there is no ``prctl`` (not Linux) or it fails."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def watch_parent(
    parent_pid: int, sig: int = signal.SIGKILL, poll_s: float = 0.5
) -> threading.Thread:
    """Start a daemon thread that sends ``sig`` to this process once its parent is not
    ``parent_pid`` any more (the parent died and this process was re-parented)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), sig)

    thread = threading.Thread(target=watch, name="plankline-parent-watch", daemon=True)
    thread.start()
    return thread


def die_with_parent(
    parent_pid: int | None = None,
    *,
    sig: int = signal.SIGKILL,
    poll_s: float = 0.5,
    use_prctl: bool = True,
) -> str:
    """Make this process receive ``sig`` (default SIGKILL) when its parent dies.

    Parameters
    ----------
    parent_pid
        The PID the parent had when it started this process (pass ``os.getpid()`` from the
        parent, e.g. in a pool's ``initargs``). If this process's parent is already another
        one, the parent died before we could arm anything: the signal is sent at once.
        None: the current parent.
    sig
        SIGKILL by default: the parent is gone, nobody can receive this worker's results,
        and a killed chunk is redone on resume (its outputs are written atomically).
    poll_s
        Period of the fallback watcher thread.
    use_prctl
        False forces the portable watcher (tests exercise both paths).

    Returns
    -------
    str
        ``"prctl"`` or ``"watch"``: the mechanism in force.
    """
    parent = os.getppid() if parent_pid is None else parent_pid
    how = "prctl" if use_prctl and _prctl_pdeathsig(sig) else "watch"
    if how == "watch":
        watch_parent(parent, sig, poll_s)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), sig)
    return how


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes that follow this one (:func:`pool_initializer`).

    Spawned, not forked: the parent runs a progress-bar thread, and a fork taken while a
    thread holds a lock leaves the child waiting on it forever.
    """
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=pool_initializer,
        initargs=(os.getpid(),),
    )


def pool_initializer(parent_pid: int) -> None:
    """The initializer of :func:`worker_pool`'s workers: each follows its parent, and
    prints warnings as the commands do (one line each)."""
    from plankline.terminal import plain_warnings

    die_with_parent(parent_pid)
    plain_warnings()
