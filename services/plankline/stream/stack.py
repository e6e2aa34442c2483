"""The local stack as one: SeaweedFS + Tansu (+ Triton), its bucket, topics and env file.

:func:`stack_up` starts the servers (:mod:`plankline.stream.servers`), creates the
bucket and the plankline topics and records everything in ``<state>/stack.json``
and ``<state>/env``; ``plankline stack up`` adds the services and the gateway on
top (:mod:`plankline.stream.launch`). Process handling (ports, PID files, exact
stops, state) is :mod:`plankline.stream.processes`; the names below are
re-exported so ``stack.start_tansu`` and friends keep working.
"""

from __future__ import annotations

from pathlib import Path

from plankline.stream.processes import (
    HOST,
    STOP_GRACE_S,
    ServerError,
    ServerHandle,
    free_port,
    http_get,
    read_state,
    stop_pid,
    stop_recorded,
    write_state,
)
from plankline.stream.servers import (
    start_seaweedfs,
    start_tansu,
    start_triton,
    tansu_binary,
    weed_binary,
)
from plankline.stream.triton_venv import ensure_triton_venv, triton_backend_dir

__all__ = [
    "HOST",
    "STOP_GRACE_S",
    "ServerError",
    "ServerHandle",
    "ensure_triton_venv",
    "free_port",
    "http_get",
    "read_state",
    "stack_env",
    "stack_up",
    "start_seaweedfs",
    "start_tansu",
    "start_triton",
    "stop_pid",
    "stop_recorded",
    "tansu_binary",
    "triton_backend_dir",
    "weed_binary",
    "write_state",
]


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
