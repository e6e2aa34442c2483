"""The whole local stack: servers (``stack.stack_up``) plus Triton with the default model,
one process per service, each through the shared runner, and the gRPC gateway, with logs
and PID files.

``plankline stack up`` calls :func:`up`; ``plankline stack down`` stops exactly
the recorded PIDs (gateway and services first, so they commit and leave their
groups); ``plankline stack status`` reads each service's ``/metrics``
(:func:`stage_stats`). The gateway gets a token for one lab, ``local``, made on the
first ``up`` and kept in ``<state>/gateway-token`` (its digest in
``<state>/gateway-tokens.json``); ``<state>/env`` exports ``PLANKLINE_ENDPOINT`` and
``PLANKLINE_TOKEN``, so ``plankline remote ...`` works after ``source .stack/env``.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from plankline.stream import contracts
from plankline.stream.processes import (
    HOST,
    ServerHandle,
    free_port,
    http_get,
    make_handle,
    read_state,
    spawn,
    wait_ready,
    write_state,
)
from plankline.stream.stack import stack_up

#: service -> (handler factory, input topics); consumer group = service name.
SERVICES: dict[str, tuple[str, list[str]]] = {
    "segmenter": ("plankline.stream.segmenter:from_env", [contracts.TOPIC_CHUNKS]),
    "measurer": ("plankline.stream.measurer:from_env", [contracts.TOPIC_ROIS]),
    "classifier": ("plankline.stream.classifier:from_env", [contracts.TOPIC_ROIS]),
    "collector": (
        "plankline.stream.collector:from_env",
        [contracts.TOPIC_MEASUREMENTS, contracts.TOPIC_CLASSIFICATIONS],
    ),
}

TRITON_MODEL = "plankline_classifier"


def read_env_file(state_dir: Path) -> dict[str, str]:
    """``PLANKLINE_*`` variables ``stack up`` wrote to ``<state>/env``."""
    path = Path(state_dir) / "env"
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.removeprefix("export ").partition("=")
            if sep:
                values[key.strip()] = value.strip()
    return values


def use_stack_env(state_dir: Path) -> None:
    """Point this process at the stack in ``state_dir`` unless the environment already does."""
    for key, value in read_env_file(state_dir).items():
        os.environ.setdefault(key, value)


def export_default_model(state_dir: Path, model_dir: Path | None = None) -> Path:
    """A Triton repository serving ``model_dir`` (default: the shipped model); returns it."""
    from plankline.model.export import write_triton_repository
    from plankline.model.infer import DEFAULT_MODEL_DIR

    repo = Path(state_dir).resolve() / "models"
    write_triton_repository(Path(model_dir or DEFAULT_MODEL_DIR), repo, model_name=TRITON_MODEL)
    return repo


def start_service(
    state_dir: Path, name: str, env: dict[str, str], *, replica: int = 0, timeout_s: float = 90
) -> ServerHandle:
    """One service process (``python -m plankline.stream.runner FACTORY``), ready when /readyz."""
    factory, topics = SERVICES[name]
    label = name if replica == 0 else f"{name}-{replica}"
    port = free_port()
    child = dict(os.environ) | env
    child |= {
        "PLANKLINE_SERVICE_NAME": name,
        "PLANKLINE_GROUP_ID": name,
        "PLANKLINE_INPUT_TOPICS": json.dumps(topics),
        "PLANKLINE_HTTP_HOST": HOST,
        "PLANKLINE_HTTP_PORT": str(port),
    }
    argv = [sys.executable, "-m", "plankline.stream.runner", factory]
    process, log_path, pid_path = spawn(label, argv, Path(state_dir).resolve(), env=child)
    handle = make_handle(
        label, process, log_path, pid_path, {"http": port}, f"http://{HOST}:{port}", service=name
    )

    def ready() -> bool:
        return http_get(f"{handle.endpoint}/readyz", 1.0)[0] == 200

    handle.extra["ready_s"] = f"{wait_ready(handle, ready, timeout_s, 0.2):.2f}"
    return handle


def up(
    state_dir: Path,
    *,
    tansu_storage: str = "memory",
    partitions: int = 4,
    triton: bool = True,
    model_repository: Path | None = None,
    model_config_name: str | None = "cpu_python",
    services: bool = True,
    inference: str = "triton",
    replicas: dict[str, int] | None = None,
    gateway: bool = True,
    gateway_port: int = 0,
    gateway_unauthenticated: bool = False,
) -> dict[str, ServerHandle]:
    """Servers, Triton (default: the shipped model, ``cpu_python``), the services and the
    gateway (``gateway_port`` 0: a free port)."""
    state_dir = Path(state_dir).resolve()
    if triton and model_repository is None:
        model_repository = export_default_model(state_dir)
    handles = stack_up(
        state_dir,
        tansu_storage=tansu_storage,
        partitions=partitions,
        triton_model_repository=model_repository if triton else None,
        model_config_name=model_config_name,
        triton_venv=Path(os.environ["PLANKLINE_TRITON_VENV"])
        if os.environ.get("PLANKLINE_TRITON_VENV")
        else None,
    )
    started: dict[str, ServerHandle] = {}
    try:
        if services:
            started |= start_services(
                state_dir, inference=inference if triton else "onnxruntime", replicas=replicas
            )
        if gateway:
            started["gateway"] = start_gateway(
                state_dir, port=gateway_port, unauthenticated=gateway_unauthenticated
            )
    except BaseException:
        for handle in [*started.values(), *handles.values()]:
            handle.stop()
        raise
    return started | handles


def gateway_token(state_dir: Path) -> str:
    """The local stack's lab token (``local``), made once and kept in ``<state>``; its
    SHA-256 is what the gateway reads (``gateway-tokens.json``)."""
    from plankline.stream.auth import new_token, token_digest

    state_dir = Path(state_dir)
    path = state_dir / "gateway-token"
    if not path.is_file():
        path.write_text(new_token())
        path.chmod(0o600)
    token = path.read_text().strip()
    table = state_dir / "gateway-tokens.json"  # other labs' lines, added by hand, stay
    labs = json.loads(table.read_text()) if table.is_file() else {}
    table.write_text(json.dumps(labs | {"local": token_digest(token)}, indent=1))
    return token


def start_gateway(
    state_dir: Path, *, port: int = 0, unauthenticated: bool = False, timeout_s: float = 60
) -> ServerHandle:
    """The gRPC gateway (``python -m plankline.stream.gateway``) against the stack recorded
    in ``state_dir``, ready once its health service answers SERVING; recorded in the state
    (before the servers, so ``down`` stops it first), its endpoint and token added to
    ``<state>/env``."""
    state_dir = Path(state_dir).resolve()
    env = read_env_file(state_dir)
    token = gateway_token(state_dir)
    port = port or free_port()
    child = dict(os.environ) | env
    child |= {
        "PLANKLINE_GATEWAY_HOST": HOST,
        "PLANKLINE_GATEWAY_PORT": str(port),
        "PLANKLINE_GATEWAY_TOKENS_FILE": str(state_dir / "gateway-tokens.json"),
        "PLANKLINE_GATEWAY_ALLOW_UNAUTHENTICATED": "1" if unauthenticated else "0",
    }
    argv = [sys.executable, "-m", "plankline.stream.gateway"]
    process, log_path, pid_path = spawn("gateway", argv, state_dir, env=child)
    handle = make_handle(
        "gateway", process, log_path, pid_path, {"grpc": port}, f"{HOST}:{port}", role="gateway"
    )
    handle.extra["ready_s"] = f"{wait_ready(handle, lambda: _serving(port), timeout_s, 0.2):.2f}"
    recorded = [h for h in read_state(state_dir).values() if h.name != "gateway"]
    write_state(state_dir, [handle, *recorded])
    client_env = {"PLANKLINE_ENDPOINT": handle.endpoint, "PLANKLINE_TOKEN": token}
    lines = [
        ln
        for ln in (state_dir / "env").read_text().splitlines()
        if ln.removeprefix("export ").partition("=")[0] not in client_env
    ]
    lines += [f"export {k}={v}" for k, v in client_env.items()]
    (state_dir / "env").write_text("\n".join(lines) + "\n")
    return handle


def _serving(port: int) -> bool:
    """Whether the gateway on ``port`` answers its standard health check with SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1
        )
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def start_services(
    state_dir: Path, *, inference: str = "triton", replicas: dict[str, int] | None = None
) -> dict[str, ServerHandle]:
    """One process per service (``replicas`` more) against the stack recorded in
    ``state_dir``, in parallel, each ready once it joined its consumer group."""
    state_dir = Path(state_dir).resolve()
    env = read_env_file(state_dir)
    env["PLANKLINE_INFERENCE"] = inference
    env["PLANKLINE_TRITON_MODEL"] = TRITON_MODEL
    started: dict[str, ServerHandle] = {}
    wanted = [(n, r) for n in SERVICES for r in range((replicas or {}).get(n, 1))]
    try:  # in parallel: each waits for its consumer group join (seconds on Tansu)
        with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
            futures = [pool.submit(start_service, state_dir, n, env, replica=r) for n, r in wanted]
            errors = []
            for future in futures:
                try:
                    handle = future.result()
                    started[handle.name] = handle
                except Exception as error:  # stop the others too, then report
                    errors.append(error)
            if errors:
                raise errors[0]
    except BaseException:
        for handle in started.values():
            handle.stop()
        raise
    # services first: `down` stops them before the servers they commit to
    servers = [h for h in read_state(state_dir).values() if "service" not in h.extra]
    write_state(state_dir, [*started.values(), *servers])
    return started


def stage_stats(state_dir: Path) -> list[dict[str, Any]]:
    """Per service process: messages ok / dead-lettered, errors, latency, consumer lag.

    Lag is the runner's own figure: records fetched or seen (high-water mark of its
    fetches) minus its COMMITTED offset, per assigned partition, never Tansu's
    ``end_offsets``.
    """
    from prometheus_client.parser import text_string_to_metric_families

    rows = []
    for name, handle in read_state(state_dir).items():
        if "service" not in handle.extra:
            continue
        status, body = http_get(f"{handle.endpoint}/metrics")
        row: dict[str, Any] = {"name": name, "up": status == 200, "ok": 0, "dead_letter": 0}
        row |= {"errors": 0, "lag": 0, "latency_count": 0, "latency_sum": 0.0}
        if status == 200:
            for family in text_string_to_metric_families(body):
                for sample in family.samples:
                    if sample.name == "plankline_messages_total":
                        row[sample.labels["outcome"]] = row.get(sample.labels["outcome"], 0) + int(
                            sample.value
                        )
                    elif sample.name == "plankline_handle_errors_total":
                        row["errors"] += int(sample.value)
                    elif sample.name == "plankline_consumer_lag":
                        row["lag"] += int(sample.value)
                    elif sample.name == "plankline_handle_seconds_count":
                        row["latency_count"] += int(sample.value)
                    elif sample.name == "plankline_handle_seconds_sum":
                        row["latency_sum"] += sample.value
        count = row["latency_count"]
        row["mean_latency_s"] = row["latency_sum"] / count if count else None
        rows.append(row)
    return rows
