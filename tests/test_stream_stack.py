"""`plankline stack up|status|down` start and stop real servers, exactly by recorded PID."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from plankline.cli import app
from plankline.stream import contracts
from plankline.stream.auth import new_token, token_digest
from plankline.stream.stack import read_state, stop_recorded
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

NARROW = {"COLUMNS": "40"}  # a narrow terminal setting must not break lines in a pipe


def _env(state: Path) -> dict[str, str]:
    lines = (state / "env").read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


def _read_all(bootstrap: str, topic: str, partitions: int, want: int) -> list[bytes]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    values: list[bytes] = []
    deadline = time.monotonic() + 15
    while len(values) < want and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            values.extend(r.value for r in batch)
    consumer.close()
    return values


def test_stack_up_down_up_keeps_kafka_records_with_the_s3_engine_and_serves_the_gateway(
    tmp_path: Path,
) -> None:
    from kafka import KafkaProducer
    from plankline.model.infer import DEFAULT_MODEL_DIR

    state = tmp_path / "stack"
    cli = CliRunner()
    result = cli.invoke(
        app,
        [
            *("stack", "up", "--state-dir", str(state), "--tansu-storage", "s3"),
            *("--partitions", "2", "--no-triton", "--no-services", "--gateway-port", "0"),
        ],
    )
    assert result.exit_code == 0, result.output
    try:
        handles = read_state(state)
        assert set(handles) == {"seaweedfs", "tansu", "gateway"}
        assert all(h.endpoint.startswith("127.0.0.1:") for h in handles.values())
        status = cli.invoke(app, ["stack", "status", "--state-dir", str(state)], env=NARROW)
        assert status.exit_code == 0, status.output
        lines = status.output.splitlines()  # one whole line per server, whatever COLUMNS says
        for name, handle in handles.items():
            (line,) = [x for x in lines if x.startswith(f"{name} ")]
            assert f" running pid {handle.pid} " in line and handle.endpoint in line, line
            assert all(f"{k}={v}" in line for k, v in handle.ports.items()), line
        env = _env(state)
        assert env["PLANKLINE_BOOTSTRAP_SERVERS"] == handles["tansu"].endpoint
        # the gateway: its endpoint and the local lab's token are in the env file
        assert env["PLANKLINE_ENDPOINT"] == handles["gateway"].endpoint
        models = cli.invoke(app, ["remote", "models"], env=env | {"COLUMNS": "200"})
        assert models.exit_code == 0 and f"{DEFAULT_MODEL_DIR.name} (default)" in models.output
        anonymous = {k: v for k, v in env.items() if k != "PLANKLINE_TOKEN"}
        refused = cli.invoke(app, ["remote", "models"], env=anonymous | {"PLANKLINE_TOKEN": ""})
        assert refused.exit_code == 2 and "UNAUTHENTICATED" in refused.output, refused.output
        producer = KafkaProducer(bootstrap_servers=env["PLANKLINE_BOOTSTRAP_SERVERS"], acks="all")
        producer.send(contracts.TOPIC_CHUNKS, key=b"k", value=b"kept", partition=1).get(10)
        producer.close()
        again = cli.invoke(app, ["stack", "up", "--state-dir", str(state)])
        assert again.exit_code == 2 and "already runs" in again.output
    finally:
        down = cli.invoke(app, ["stack", "down", "--state-dir", str(state)])
    assert down.exit_code == 0 and down.output.count("stopped") == 3
    lines = down.output.splitlines()  # the gateway before the servers it uses
    assert lines == ["gateway    stopped", "seaweedfs  stopped", "tansu      stopped"], lines
    assert not any(psutil.pid_exists(h.pid) and h.alive() for h in handles.values())
    assert cli.invoke(app, ["stack", "status", "--state-dir", str(state)]).exit_code == 1

    table = json.loads((state / "gateway-tokens.json").read_text())
    other = new_token()  # the operator adds a lab: a later `up` keeps it, and the local token
    (state / "gateway-tokens.json").write_text(json.dumps(table | {"lab-b": token_digest(other)}))
    result = cli.invoke(
        app,
        [
            *("stack", "up", "--state-dir", str(state), "--tansu-storage", "s3"),
            *("--partitions", "2", "--no-triton", "--no-services", "--gateway-port", "0"),
        ],
    )
    assert result.exit_code == 0, result.output
    try:
        values = _read_all(_env(state)["PLANKLINE_BOOTSTRAP_SERVERS"], contracts.TOPIC_CHUNKS, 2, 1)
        assert values == [b"kept"]
        again_env = _env(state)
        assert again_env["PLANKLINE_TOKEN"] == env["PLANKLINE_TOKEN"]  # the same local token
        for token in (env["PLANKLINE_TOKEN"], other):
            models = cli.invoke(
                app, ["remote", "models"], env=again_env | {"PLANKLINE_TOKEN": token}
            )
            assert models.exit_code == 0, models.output
    finally:
        stop_recorded(state)


def test_a_stale_pidfile_never_kills_a_process_we_did_not_start(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        started = psutil.Process(stranger.pid).create_time()
        (tmp_path / "tansu.pid").write_text(
            json.dumps({"pid": stranger.pid, "create_time": started - 1000, "argv": ["tansu"]})
        )
        assert stop_recorded(tmp_path) == {"tansu": False}
        assert stranger.poll() is None  # still running
        assert not (tmp_path / "tansu.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


# A server that leaves a child behind when it is killed, as any server with worker
# processes could: the parent runs `sleep`, then waits; SIGTERM kills it, not the child.
LEAVES_A_CHILD = """
import subprocess, sys, time
child = subprocess.Popen(["sleep", "600"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(600)
"""


def test_stopping_a_server_also_stops_the_children_it_left_behind(tmp_path: Path) -> None:
    from plankline.stream.stack import stop_pid

    marker = tmp_path / "child.pid"
    server = subprocess.Popen(
        [sys.executable, "-c", LEAVES_A_CHILD, str(marker)], start_new_session=True
    )
    child = None
    try:
        deadline = time.monotonic() + 30
        while not marker.is_file() or not marker.read_text():
            assert time.monotonic() < deadline, "the server never started its child"
            time.sleep(0.02)
        child = psutil.Process(int(marker.read_text()))
        started = psutil.Process(server.pid).create_time()
        assert stop_pid(server.pid, started, grace_s=5) is True
        assert server.poll() is not None
        assert not _running(child), "the server's child outlived stop_pid"
    finally:
        for process in (server, child):
            with contextlib.suppress(Exception):
                process.kill()


def test_kill_9_of_tritonserver_leaves_no_python_backend_stub(
    triton_venv: Path, tmp_path: Path
) -> None:
    """Triton starts one stub process per model instance; the stub must follow a killed
    server (it checks its parent), or a crashed Triton would leave it running."""
    from plankline.stream import launch, stack

    repo = launch.export_default_model(tmp_path)
    triton = stack.start_triton(
        tmp_path, repo, venv=triton_venv, model_config_name="cpu_python", name="triton-orphan"
    )
    stubs: list[psutil.Process] = []
    try:
        stubs = psutil.Process(triton.pid).children(recursive=True)
        assert any("triton_python_backend_stub" in p.name() for p in stubs), stubs
        server = psutil.Process(triton.pid)
        server.kill()
        server.wait(10)  # reaped, as init reaps a `stack up` server (a zombie parent still
        # answers the stub's liveness check: a PID 1 that never reaps would keep it alive)
        deadline = time.monotonic() + 15
        while any(_running(p) for p in stubs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p.pid for p in stubs if _running(p)] == [], "stub left behind"
    finally:
        triton.stop(grace_s=2)
        for p in stubs:
            with contextlib.suppress(psutil.Error):
                p.kill()


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_server_ports_stay_out_of_the_kernels_range_for_outgoing_connections() -> None:
    """A port picked in the ephemeral range can be taken by any client socket of the
    stack before its server binds it."""
    from plankline.stream.processes import _ephemeral_ports, free_port

    ephemeral = _ephemeral_ports()
    if not ephemeral:
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range here")
    assert not any(free_port() in ephemeral for _ in range(100))
    for _ in range(50):
        port = free_port(max_port=55535, grpc_offset=10000)  # SeaweedFS and its gRPC twin
        assert port not in ephemeral and port + 10000 not in ephemeral
