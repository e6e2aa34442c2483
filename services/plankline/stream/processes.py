"""Processes of the local stack: free ports, spawn with a PID file, wait ready, stop exactly.

Every server and service of ``plankline stack`` (and of the test fixtures) is one
process started by :func:`spawn`: it binds to 127.0.0.1, logs to
``<state>/logs/<name>.log`` and records ``<state>/<name>.pid`` (pid + process start
time), so :func:`stop_pid` kills exactly that process and never a recycled PID or
another engineer's server. ``stack.json`` (:func:`write_state`) lists what runs.
The server starters (:mod:`plankline.stream.servers`) and the services and gateway
(:mod:`plankline.stream.launch`) are built from these public helpers.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

HOST = "127.0.0.1"

#: Seconds to wait after SIGTERM before SIGKILL, per server (SeaweedFS needs ~14 s).
STOP_GRACE_S = {"tansu": 10.0, "seaweedfs": 15.0, "triton": 15.0}


class ServerError(RuntimeError):
    """A server failed to start or become ready; the message ends with its log tail."""


# ---------------------------------------------------------------------------- ports, pids


def free_port(*, max_port: int = 65535, grpc_offset: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that is free now (and ``port + grpc_offset`` too, if given).

    SeaweedFS opens a gRPC port at every HTTP port + 10000, so its ports must
    stay <= 55535 and have that twin free as well. Ports the kernel hands to outgoing
    connections (:func:`_ephemeral_ports`) are avoided: between this check and the
    server's bind, any client socket of the stack could take one (a container test's
    gateway once exited that way, most likely).
    """
    ephemeral = _ephemeral_ports()
    for _ in range(2000):
        port = random.randint(20000, max_port)
        candidates = [port] if grpc_offset is None else [port, port + grpc_offset]
        if all(p not in ephemeral and _bindable(p) for p in candidates):
            return port
    raise ServerError(f"no free port pair found on {HOST} below {max_port}")


def _ephemeral_ports() -> range:
    """The local ports Linux gives outgoing connections (``ip_local_port_range``; by
    default 32768-60999), or none where that is not readable."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(0)


def _bindable(port: int) -> bool:
    if not 0 < port <= 65535:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def distinct_ports(n: int, **kwargs: Any) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port(**kwargs)
        offset = kwargs.get("grpc_offset") or 0
        taken = set(ports) | {p + offset for p in ports}
        if port not in taken and port + offset not in taken:
            ports.append(port)
    return ports


@dataclass
class ServerHandle:
    """A started server: exactly one PID, its ports and where it logs.

    ``stop()`` signals that PID only, and only while it is still the process
    we started (same start time), so a stale pidfile never kills a stranger.
    """

    name: str
    pid: int
    create_time: float
    ports: dict[str, int]
    endpoint: str
    log_path: str
    pid_path: str
    extra: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        """Whether our process still runs (a zombie counts as gone)."""
        return same_process(self.pid, self.create_time)

    def cpu_s(self) -> float | None:
        """CPU seconds our process and its children used so far (Triton's Python-backend
        stub is a child of tritonserver); None once it is gone."""
        if not self.alive():
            return None
        try:
            process = psutil.Process(self.pid)
            return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])
        except psutil.NoSuchProcess:
            return None

    def stop(self, grace_s: float | None = None) -> bool:
        """SIGTERM, wait ``grace_s`` (per-server default), then SIGKILL; True if it was running."""
        grace = STOP_GRACE_S.get(self.name, 10.0) if grace_s is None else grace_s
        was_running = stop_pid(self.pid, self.create_time, grace_s=grace)
        with contextlib.suppress(FileNotFoundError):
            if read_pidfile(Path(self.pid_path)).get("pid") == self.pid:
                Path(self.pid_path).unlink()
        return was_running

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def same_process(pid: int, create_time: float) -> bool:
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > 0.5:
            return False
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_pid(pid: int, create_time: float, *, grace_s: float = 10.0) -> bool:
    """Stop exactly ``pid`` if it is still the process started at ``create_time``.

    Returns whether it was running. Reaps it when it is our child. Its descendants seen
    before the stop (Triton's Python-backend stubs) get a few seconds to follow it, then
    SIGKILL: a SIGKILLed server must not leave them running. Each is checked by its own
    start time, so a recycled PID is never signalled.
    """
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > 0.5:
            return False
    except psutil.NoSuchProcess:
        return False
    if process.status() == psutil.STATUS_ZOMBIE:
        with contextlib.suppress(psutil.Error):
            process.wait(timeout=0)
        return False
    try:
        descendants = process.children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(psutil.NoSuchProcess):
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    _, left = psutil.wait_procs(descendants, timeout=3)
    for child in left:  # psutil refuses to signal a PID that now names another process
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(left, timeout=5)
    return True


def read_pidfile(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def spawn(
    name: str,
    argv: Sequence[str],
    state_dir: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    pid_path = state_dir / f"{name}.pid"
    if pid_path.exists():
        old = read_pidfile(pid_path)
        if same_process(old["pid"], old["create_time"]):
            raise ServerError(
                f"{name} already runs as pid {old['pid']} ({pid_path}); stop it first"
            )
    with open(log_path, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # our Ctrl-C must not reach it
        )
    create_time = psutil.Process(process.pid).create_time()
    pid_path.write_text(
        json.dumps({"pid": process.pid, "create_time": create_time, "argv": list(argv)})
    )
    return process, log_path, pid_path


def log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def wait_ready(
    handle: ServerHandle, ready: Callable[[], bool], timeout_s: float, interval_s: float = 0.1
) -> float:
    """Poll ``ready`` until true; raise with the log tail if the server dies or times out."""
    start = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if ready():
                return time.monotonic() - start
        if not handle.alive():
            handle.stop(grace_s=1)
            raise ServerError(
                f"{handle.name} exited during start; log {handle.log_path}:\n"
                f"{log_tail(Path(handle.log_path))}"
            )
        if time.monotonic() - start > timeout_s:
            handle.stop(grace_s=2)
            raise ServerError(
                f"{handle.name} not ready after {timeout_s:.0f} s; log "
                f"{handle.log_path}:\n{log_tail(Path(handle.log_path))}"
            )
        time.sleep(interval_s)


def make_handle(
    name: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    pid_path: Path,
    ports: dict[str, int],
    endpoint: str,
    **extra: str,
) -> ServerHandle:
    create_time = read_pidfile(pid_path)["create_time"]
    return ServerHandle(
        name=name,
        pid=process.pid,
        create_time=create_time,
        ports=ports,
        endpoint=endpoint,
        log_path=str(log_path),
        pid_path=str(pid_path),
        extra=dict(extra),
    )


def tcp_open(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=0.5):
        return True


# ---------------------------------------------------------------------------- stack state


def write_state(state_dir: Path, handles: Sequence[ServerHandle]) -> Path:
    """Record the running stack in ``<state>/stack.json`` for ``status``/``down``/services."""
    path = Path(state_dir) / "stack.json"
    path.write_text(json.dumps({h.name: h.to_json() for h in handles}, indent=2))
    return path


def read_state(state_dir: Path) -> dict[str, ServerHandle]:
    """The handles ``stack up`` recorded (empty when none)."""
    path = Path(state_dir) / "stack.json"
    if not path.is_file():
        return {}
    return {name: ServerHandle(**data) for name, data in json.loads(path.read_text()).items()}


def stop_recorded(state_dir: Path) -> dict[str, bool]:
    """Stop exactly the PIDs recorded in ``state_dir`` (stack.json and *.pid files).

    Returns {server name: whether it was running}.
    """
    state_dir = Path(state_dir)
    results: dict[str, bool] = {}
    for name, handle in read_state(state_dir).items():
        results[name] = handle.stop()
    for pid_path in sorted(state_dir.glob("*.pid")):
        record = read_pidfile(pid_path)
        grace = STOP_GRACE_S.get(pid_path.stem, 10.0)
        results[pid_path.stem] = results.get(pid_path.stem, False) or stop_pid(
            record["pid"], record["create_time"], grace_s=grace
        )
        pid_path.unlink(missing_ok=True)
    (state_dir / "stack.json").unlink(missing_ok=True)
    return results


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, str]:
    """GET a URL: (status, body); status 0 when unreachable. For probes and status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError:
        return 0, ""
