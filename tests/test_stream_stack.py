"""`plankline stack up|status|down` start and stop real servers, exactly by recorded PID."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from plankline.cli import app
from plankline.stream import contracts
from plankline.stream.stack import read_state, stop_recorded
from typer.testing import CliRunner

pytestmark = pytest.mark.integration


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


def test_stack_up_down_up_keeps_kafka_records_with_the_s3_engine(tmp_path: Path) -> None:
    from kafka import KafkaProducer

    state = tmp_path / "stack"
    cli = CliRunner()
    result = cli.invoke(
        app,
        [
            *("stack", "up", "--state-dir", str(state), "--tansu-storage", "s3"),
            *("--partitions", "2", "--no-triton", "--no-services"),
        ],
    )
    assert result.exit_code == 0, result.output
    try:
        handles = read_state(state)
        assert set(handles) == {"seaweedfs", "tansu"}
        assert all(h.endpoint.startswith("127.0.0.1:") for h in handles.values())
        assert cli.invoke(app, ["stack", "status", "--state-dir", str(state)]).exit_code == 0
        env = _env(state)
        assert env["PLANKLINE_BOOTSTRAP_SERVERS"] == handles["tansu"].endpoint
        producer = KafkaProducer(bootstrap_servers=env["PLANKLINE_BOOTSTRAP_SERVERS"], acks="all")
        producer.send(contracts.TOPIC_CHUNKS, key=b"k", value=b"kept", partition=1).get(10)
        producer.close()
        again = cli.invoke(app, ["stack", "up", "--state-dir", str(state)])
        assert again.exit_code == 2 and "already runs" in again.output
    finally:
        down = cli.invoke(app, ["stack", "down", "--state-dir", str(state)])
    assert down.exit_code == 0 and down.output.count("stopped") == 2
    assert not any(psutil.pid_exists(h.pid) and h.alive() for h in handles.values())
    assert cli.invoke(app, ["stack", "status", "--state-dir", str(state)]).exit_code == 1

    result = cli.invoke(
        app,
        [
            *("stack", "up", "--state-dir", str(state), "--tansu-storage", "s3"),
            *("--partitions", "2", "--no-triton", "--no-services"),
        ],
    )
    assert result.exit_code == 0, result.output
    try:
        values = _read_all(_env(state)["PLANKLINE_BOOTSTRAP_SERVERS"], contracts.TOPIC_CHUNKS, 2, 1)
        assert values == [b"kept"]
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
