"""The shared runner against real Tansu + SeaweedFS: at-least-once in, exactly-once out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from plankline.stream import contracts
from plankline.stream.runner import Runner, ensure_topics
from plankline.stream.settings import RunnerSettings
from plankline.stream.stack import ServerHandle, http_get
from plankline.stream.store import S3Store

pytestmark = pytest.mark.integration

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from stream_handlers import UppercaseHandler  # noqa: E402


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _settings(
    kafka: ServerHandle, store: S3Store, topic: str, group: str, **kw: Any
) -> RunnerSettings:
    values: dict[str, Any] = {
        "service_name": group,
        "bootstrap_servers": kafka.endpoint,
        "group_id": group,
        "input_topics": [topic],
        "dead_letter_topic": f"{topic}.dlq",
        "s3_endpoint": store.endpoint,
        "s3_bucket": store.bucket,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "backoff_initial_s": 0.02,
        "http_port": 0,
        "poll_timeout_ms": 200,
    }
    values.update(kw)
    return RunnerSettings(**values)


def _produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes, int]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    futures = [producer.send(topic, key=k, value=v, partition=p) for k, v, p in items]
    producer.flush()
    for future in futures:
        future.get(timeout=10)
    producer.close()


def _read_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    until: Callable[[list[Any]], bool],
    timeout_s: float = 30.0,
) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while not until(records) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    consumer.close()
    return records


def _committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    total = sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions))
    consumer.close()
    return total


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def _payloads(n: int, partitions: int) -> list[tuple[bytes, bytes, int]]:
    return [
        (contracts.message_key("vid", i), f"payload-{i}".encode(), i % partitions) for i in range(n)
    ]


def test_runner_writes_every_output_produces_downstream_commits_and_reports_metrics(
    kafka_server: ServerHandle, s3_store: S3Store
) -> None:
    topic, group = _name("in"), _name("svc")
    ensure_topics(kafka_server.endpoint, {topic: 3, f"{topic}.out": 3})
    items = _payloads(30, 3)
    _produce(kafka_server.endpoint, topic, items)
    handler = UppercaseHandler(s3_store, f"{topic}.out")
    runner = Runner(handler, _settings(kafka_server, s3_store, topic, group))
    port = runner.start_http()
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        _wait(lambda: runner.stats.processed == 30, 60, "30 records processed")
        # processed counts a record before its commit: wait for the commits themselves
        _wait(
            lambda: _committed_total(kafka_server.endpoint, group, topic, 3) == 30,
            60,
            "30 offsets committed",
        )
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        ok = re.search(
            rf'plankline_messages_total{{[^}}]*outcome="ok"[^}}]*topic="{topic}"'
            r"[^}]*} (\S+)|plankline_messages_total{[^}]*topic=\""
            + topic
            + r'"[^}]*outcome="ok"[^}]*} (\S+)',
            metrics,
        )
        assert ok and float(ok.group(1) or ok.group(2)) == 30.0
        lags = re.findall(r"plankline_consumer_lag{[^}]*} (\S+)", metrics)
        assert len(lags) == 3 and all(float(v) == 0.0 for v in lags)
        assert "plankline_handle_seconds_bucket" in metrics
    finally:
        runner.request_stop()
        thread.join(30)
    assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 503
    runner.shutdown_http()
    assert handler.setup_calls == 1
    expected = {f"out/{k.decode()}.txt": v.upper() for k, v, _ in items}
    assert s3_store.list("out/") == sorted(expected)
    assert all(s3_store.get_bytes(key) == value for key, value in expected.items())
    out = _read_topic(kafka_server.endpoint, f"{topic}.out", 3, lambda r: len(r) >= 30)
    assert sorted(r.value for r in out) == sorted(v.upper() for _, v, _ in items)
    assert _committed_total(kafka_server.endpoint, group, topic, 3) == 30


def test_poison_message_goes_to_dead_letter_with_its_error_and_the_stream_goes_on(
    kafka_server: ServerHandle, s3_store: S3Store
) -> None:
    topic, group = _name("in"), _name("svc")
    dlq = f"{topic}.dlq"
    ensure_topics(kafka_server.endpoint, {topic: 2, f"{topic}.out": 2, dlq: 1})
    items = _payloads(10, 2)
    items[3] = (items[3][0], b"poison-3", items[3][2])
    items[8] = (items[8][0], b"poison-8", items[8][2])
    _produce(kafka_server.endpoint, topic, items)
    runner = Runner(
        UppercaseHandler(s3_store, f"{topic}.out"),
        _settings(kafka_server, s3_store, topic, group, max_attempts=3),
    )
    stats = runner.run(max_messages=10, idle_timeout_s=30)
    assert (stats.processed, stats.dead_lettered, stats.failed_attempts) == (8, 2, 6)
    failures = _read_topic(kafka_server.endpoint, dlq, 1, lambda r: len(r) >= 2)
    parsed = sorted(
        (contracts.parse(contracts.TOPIC_DEAD_LETTER, r.value) for r in failures),
        key=lambda f: f.input_value,
    )
    assert [f.input_value for f in parsed] == [b"poison-3", b"poison-8"]
    for failure, index in zip(parsed, (3, 8), strict=True):
        assert failure.input_topic == topic and failure.attempts == 3
        assert failure.input_key == contracts.message_key("vid", index)
        assert failure.service == group
        assert "ValueError: cannot process payload" in failure.error
        assert "poisoned on purpose" in failure.error
    assert len(s3_store.list("out/")) == 8
    assert _committed_total(kafka_server.endpoint, group, topic, 2) == 10


def test_two_replicas_in_one_group_split_the_partitions(
    kafka_server: ServerHandle, s3_store: S3Store
) -> None:
    topic, group = _name("in"), _name("svc")
    ensure_topics(kafka_server.endpoint, {topic: 4, f"{topic}.out": 4})
    runners = [
        Runner(
            UppercaseHandler(s3_store, f"{topic}.out"),
            _settings(kafka_server, s3_store, topic, group),
        )
        for _ in range(2)
    ]
    threads = [threading.Thread(target=r.run) for r in runners]
    for thread in threads:
        thread.start()
    try:
        _wait(
            lambda: all(len(r.assignment) == 2 for r in runners),
            45,
            "both replicas holding 2 of the 4 partitions",
        )
        items = _payloads(40, 4)
        _produce(kafka_server.endpoint, topic, items)
        _wait(lambda: sum(r.stats.processed for r in runners) >= 40, 60, "40 records")
    finally:
        for runner in runners:
            runner.request_stop()
        for thread in threads:
            thread.join(30)
    a, b = (r.stats.partitions_seen for r in runners)
    assert a and b and not a & b
    assert a | b == {(topic, p) for p in range(4)}
    assert sum(r.stats.processed for r in runners) == 40
    assert len(s3_store.list("out/")) == 40


def _runner_process(
    kafka: ServerHandle,
    store: S3Store,
    s3: ServerHandle,
    topic: str,
    group: str,
    log: Path,
    hold_after: int = 0,
) -> subprocess.Popen[bytes]:
    """The runner as a real process, on the test handler; it holds (until killed) after
    ``hold_after`` messages, outputs written and offset not committed (0: never)."""
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(TESTS),
            "PLANKLINE_SERVICE_NAME": group,
            "PLANKLINE_BOOTSTRAP_SERVERS": kafka.endpoint,
            "PLANKLINE_GROUP_ID": group,
            "PLANKLINE_INPUT_TOPICS": f'["{topic}"]',
            "PLANKLINE_S3_ENDPOINT": store.endpoint,
            "PLANKLINE_S3_ACCESS_KEY": s3.extra["access_key"],
            "PLANKLINE_S3_SECRET_KEY": s3.extra["secret_key"],
            "PLANKLINE_S3_BUCKET": store.bucket,
            "PLANKLINE_SESSION_TIMEOUT_MS": "6000",
            "PLANKLINE_MAX_POLL_RECORDS": "8",
            "PLANKLINE_HTTP_PORT": "0",
            "TEST_OUTPUT_TOPIC": f"{topic}.out",
            "TEST_HOLD_AFTER": str(hold_after),
        }
    )
    factory = "stream_service_wrappers:uppercase_holding"
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "plankline.stream.runner", factory],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_killed_runner_resumes_and_outputs_are_complete_and_not_duplicated(
    kafka_server: ServerHandle, s3_server: ServerHandle, s3_store: S3Store, tmp_path: Path
) -> None:
    topic, group = _name("in"), _name("svc")
    n = 60
    ensure_topics(kafka_server.endpoint, {topic: 2, f"{topic}.out": 2})
    items = _payloads(n, 2)
    _produce(kafka_server.endpoint, topic, items)
    log = tmp_path / "runner.log"
    first = _runner_process(kafka_server, s3_store, s3_server, topic, group, log, hold_after=12)
    try:  # it holds after its 12th message: outputs written, offset not committed
        _wait(lambda: "holding after" in log.read_text(), 60, f"the hold; log:\n{log.read_text()}")
    finally:
        first.kill()  # kill -9 mid-run: no commit, no goodbye
        first.wait(10)
    held = log.read_text().split("holding after ", 1)[1].split("\n", 1)[0]
    assert len(s3_store.list("out/")) == 12  # exactly the 12 handled: the kill was mid-run
    assert f"out/{held}.txt" in s3_store.list("out/")
    assert _committed_total(kafka_server.endpoint, group, topic, 2) < 12  # the 12th is not
    second = _runner_process(kafka_server, s3_store, s3_server, topic, group, log)
    try:
        _wait(
            lambda: _committed_total(kafka_server.endpoint, group, topic, 2) == n,
            90,
            f"all {n} offsets committed; log:\n{log.read_text()[-3000:]}",
        )
        second.terminate()  # SIGTERM: graceful
        assert second.wait(20) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    expected = {f"out/{k.decode()}.txt": v.upper() for k, v, _ in items}
    assert s3_store.list("out/") == sorted(expected)  # complete, and no extra objects
    assert all(s3_store.get_bytes(key) == value for key, value in expected.items())
    out = _read_topic(kafka_server.endpoint, f"{topic}.out", 2, lambda r: len(r) >= n)
    assert {r.key for r in out} == {k for k, _, _ in items}  # at-least-once downstream
    assert log.read_text().count(f"handled {held}\n") >= 2  # the message in hand, redone
    assert "stopped:" in log.read_text()


def test_a_stop_request_finishes_and_commits_the_current_record_then_exits(
    kafka_server: ServerHandle, s3_store: S3Store
) -> None:
    topic, group = _name("in"), _name("svc")
    ensure_topics(kafka_server.endpoint, {topic: 1, f"{topic}.out": 1})
    _produce(kafka_server.endpoint, topic, _payloads(10, 1))
    runner: Runner

    class StopsDuringFifth(UppercaseHandler):
        def handle(self, message: Any) -> list[Any]:
            if message.offset == 4:
                runner.request_stop()  # what SIGTERM does, mid-record
            return super().handle(message)

    runner = Runner(
        StopsDuringFifth(s3_store, f"{topic}.out"), _settings(kafka_server, s3_store, topic, group)
    )
    stats = runner.run(idle_timeout_s=30)
    assert stats.processed == 5
    assert _committed_total(kafka_server.endpoint, group, topic, 1) == 5
    assert len(s3_store.list("out/")) == 5


def test_settings_come_from_plankline_env_and_mask_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLANKLINE_INPUT_TOPICS", '["plankline.rois"]')
    monkeypatch.setenv("PLANKLINE_S3_SECRET_KEY", "very-secret")
    monkeypatch.setenv("PLANKLINE_MAX_ATTEMPTS", "7")
    settings = RunnerSettings()
    assert settings.input_topics == ["plankline.rois"] and settings.max_attempts == 7
    assert settings.s3_secret_key.get_secret_value() == "very-secret"
    assert "very-secret" not in str(settings.masked())
    with pytest.raises(ValueError, match="input_topics is empty"):
        Runner(UppercaseHandler(None, "x"), RunnerSettings(input_topics=[]))  # type: ignore[arg-type]
