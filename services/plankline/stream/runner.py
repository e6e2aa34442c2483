"""The one shared service runner: consume -> handle -> (outputs in S3) -> produce -> commit.

Every streaming service (segmenter, measurer, classifier, collector) is a
*handler* with the shape of a Triton Python-backend model: ``setup()`` loads
once, ``handle(message)`` turns one input record into its downstream
messages. The handler writes its bulk outputs to S3 itself, under the
deterministic keys of :mod:`plankline.stream.contracts`, before returning.
This runner owns everything else, once, for all services:

1. consume with a consumer group, ``enable_auto_commit=False``;
2. call ``handle``; retry with exponential backoff on exceptions;
3. produce the returned messages and WAIT for the broker's ack;
4. only then commit the input's offset.

A crash anywhere before (4) redelivers the input, the handler rewrites the
same S3 keys and re-sends the same messages: at-least-once delivery,
exactly-once outputs. An input that fails ``max_attempts`` times (or raises
:class:`PermanentError`) is published to the dead-letter topic as a
``plankline.v1.Failure`` (error text + input reference + input bytes) and
committed, so the stream goes on. A handler that could do part of the work
(a chunk with an unreadable frame keeps the ROIs before it) raises
:class:`PartialFailure` with the messages that still go downstream: the runner
produces them, then dead-letters the input the same way. Dead-lettering happens
here only; the handler's optional ``on_dead_letter(message, failure,
outputs_follow)`` records it where job status looks (``failed.json``).

SIGTERM/SIGINT finish the current message, commit it and exit. An HTTP port
serves ``/healthz`` (loop alive), ``/readyz`` (set up, partitions assigned)
and Prometheus ``/metrics``. Consumer lag is computed from our own committed
offsets and the records we have seen (plus the fetch high-water mark), never
from ``end_offsets()``, which Tansu answers wrongly.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, runtime_checkable

from google.protobuf.message import Message
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from plankline.stream import contracts
from plankline.stream.settings import RunnerSettings

log = logging.getLogger("plankline.stream.runner")


# ---------------------------------------------------------------------------- handler API


@dataclass(frozen=True)
class Incoming:
    """One consumed record, as the handler sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    attempt: int = 1  # 1-based try number of this record in this process

    def parse(self) -> Message:
        """The record's protobuf message, by the type its topic carries."""
        return contracts.parse(self.topic, self.value, partition=self.partition, offset=self.offset)


@dataclass(frozen=True)
class Outgoing:
    """One message to produce downstream once ``handle`` returns."""

    topic: str
    value: bytes
    key: bytes | None = None

    @classmethod
    def of(cls, topic: str, message: Message, key: bytes | None = None) -> Outgoing:
        """Encode a contract message; the key defaults to its chunk's message key."""
        if key is None and "chunk" in message.DESCRIPTOR.fields_by_name:
            ref = message.chunk  # type: ignore[attr-defined]
            key = contracts.message_key(ref.video_id, ref.chunk_index)
        return cls(topic=topic, value=contracts.encode(message), key=key)


@runtime_checkable
class Handler(Protocol):
    """What a service implements; the runner does the rest (see module docstring)."""

    def setup(self) -> None:
        """Load models, open clients; called once before the first message."""

    def handle(self, message: Incoming) -> list[Outgoing]:
        """Process one record; write S3 outputs under deterministic keys; return messages."""
        ...

    # Optional: ``on_dead_letter(message, failure, outputs_follow)`` is called once a record
    # is dead-lettered (after the Failure is acknowledged, before the commit), e.g. to mark
    # its chunk failed in S3 so job status reports it; ``close()`` on exit.


class PermanentError(Exception):
    """Raised by a handler for an input that can never succeed: dead-letter it at once."""


class PartialFailure(Exception):
    """Raised by a handler that did what it could with an input that cannot fully succeed.

    ``outgoing`` still goes downstream (e.g. the ROIs found before an unreadable
    frame); then the input is dead-lettered with this error, without retries
    (the same input fails the same way), and committed.
    """

    def __init__(self, message: str, outgoing: list[Outgoing]) -> None:
        super().__init__(message)
        self.outgoing = outgoing


# ---------------------------------------------------------------------------- Kafka helpers

FETCH_MAX_WAIT_MS = 2000
"""How long the broker may hold an empty fetch (Kafka's long poll). The broker answers as
soon as a record arrives (measured on Tansu: 10-40 ms either way), so this only sets how
often an idle consumer asks: at kafka-python's default of 500 ms an idle service cost
12.5 CPU ms per second and Tansu 9 more per consumer; at 2 s, 7 and 2.5
(``scripts/bench_stack.py`` counts it; an idle stack of 4 services spent ~60 CPU ms/s)."""


def ensure_topics(
    bootstrap_servers: str, topics: dict[str, int], *, timeout_s: float = 30.0
) -> None:
    """Create the topics (name -> partitions) that do not exist yet; idempotent."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        existing = set(admin.list_topics())
        for name, partitions in topics.items():
            if name in existing:
                continue
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


# ---------------------------------------------------------------------------- metrics


class RunnerMetrics:
    """Prometheus metrics of one runner, in its own registry (several runners per process)."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["service", "topic"]
        self.service = service
        self.messages = Counter(
            "plankline_messages",
            "Input records finished, by outcome.",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.errors = Counter(
            "plankline_handle_errors",
            "Failed attempts at an input record.",
            labels,
            registry=self.registry,
        )
        self.produced = Counter(
            "plankline_produced",
            "Downstream messages acknowledged.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "plankline_handle_seconds",
            "Handle + produce time of a successful record.",
            labels,
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.lag = Gauge(
            "plankline_consumer_lag",
            "Records seen but not committed, per assigned partition (lower bound).",
            [*labels, "partition"],
            registry=self.registry,
        )
        self.last_commit = Gauge(
            "plankline_last_commit_timestamp_seconds",
            "Unix time of the last offset commit.",
            ["service"],
            registry=self.registry,
        )


# ---------------------------------------------------------------------------- runner


@dataclass
class RunStats:
    """What one ``run()`` did; also what the tests and benchmarks read."""

    processed: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0
    produced: int = 0
    commit_failures: int = 0
    partitions_seen: set[tuple[str, int]] = field(default_factory=set)


class _Stopping(Exception):
    """Internal: stop was requested while retrying; leave the record uncommitted."""


class Runner:
    """Runs one handler against Kafka with the at-least-once loop (see module docstring).

    Parameters
    ----------
    handler : Handler
        The service logic.
    settings : RunnerSettings
        Kafka, retry and HTTP settings; ``input_topics`` must not be empty.
    registry : CollectorRegistry, optional
        Where metrics go (a fresh registry by default).
    """

    def __init__(
        self, handler: Handler, settings: RunnerSettings, registry: CollectorRegistry | None = None
    ) -> None:
        if not settings.input_topics:
            raise ValueError(
                "RunnerSettings.input_topics is empty: nothing to consume "
                "(set PLANKLINE_INPUT_TOPICS='[\"plankline.chunks\"]')"
            )
        if not isinstance(handler, Handler):
            raise TypeError(f"{type(handler).__name__} lacks setup()/handle(message)")
        self.handler = handler
        self.settings = settings
        self.metrics = RunnerMetrics(settings.service_name, registry)
        self.stats = RunStats()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._heartbeat = time.monotonic()
        self._committed: dict[tuple[str, int], int] = {}
        self._seen: dict[tuple[str, int], int] = {}
        self._consumer: Any = None
        self._producer: Any = None
        self._http: ThreadingHTTPServer | None = None
        self.assignment: set[tuple[str, int]] = set()

    # -- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the current record, commit it, then leave ``run()`` (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT request a graceful stop (main thread only)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.request_stop())

    # -- HTTP probes and metrics -------------------------------------------------------------

    @property
    def http_port(self) -> int | None:
        return self._http.server_address[1] if self._http else None

    def start_http(self) -> int:
        """Serve /healthz, /readyz and /metrics on settings.http_host:http_port; returns port."""
        runner = self
        stale_after = self.settings.max_poll_interval_ms / 1000 + 30

        class Probe(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    runner._update_lag()
                    body, status, ctype = (
                        generate_latest(runner.metrics.registry),
                        200,
                        CONTENT_TYPE_LATEST,
                    )
                elif self.path == "/healthz":
                    alive = time.monotonic() - runner._heartbeat < stale_after
                    status, body, ctype = (
                        (200, b"ok\n", "text/plain")
                        if alive
                        else (503, b"loop stalled\n", "text/plain")
                    )
                elif self.path == "/readyz":
                    ready = runner._ready.is_set() and not runner.stopping
                    status, body, ctype = (
                        (200, b"ready\n", "text/plain")
                        if ready
                        else (503, b"not ready\n", "text/plain")
                    )
                else:
                    status, body, ctype = 404, b"not found\n", "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # probes are frequent: stay quiet
                pass

        self._http = ThreadingHTTPServer((self.settings.http_host, self.settings.http_port), Probe)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="runner-http", daemon=True).start()
        return self.http_port or 0

    def _update_lag(self) -> None:
        consumer = self._consumer
        for topic, partition in list(self.assignment):
            seen = self._seen.get((topic, partition), -1) + 1
            highwater = None
            if consumer is not None:
                with contextlib.suppress(Exception):
                    from kafka import TopicPartition

                    highwater = consumer.highwater(TopicPartition(topic, partition))
            end = max(seen, highwater or 0)
            committed = self._committed.get((topic, partition), end)
            self.metrics.lag.labels(self.settings.service_name, topic, str(partition)).set(
                max(0, end - committed)
            )

    # -- the loop -----------------------------------------------------------------------------

    def _connect(self) -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        s = self.settings
        runner = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
                for tp in revoked:
                    runner.assignment.discard((tp.topic, tp.partition))
                    with contextlib.suppress(KeyError):
                        runner.metrics.lag.remove(s.service_name, tp.topic, str(tp.partition))

            def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
                for tp in assigned:
                    runner.assignment.add((tp.topic, tp.partition))
                runner._ready.set()

        self._consumer = KafkaConsumer(
            bootstrap_servers=s.bootstrap_servers.split(","),
            group_id=s.group_id,
            client_id=f"{s.service_name}-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=min(s.heartbeat_interval_ms, s.session_timeout_ms // 3),
            max_poll_interval_ms=s.max_poll_interval_ms,
            max_poll_records=s.max_poll_records,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            fetch_max_bytes=max(s.max_request_size, 52428800),
            max_partition_fetch_bytes=max(s.max_request_size, 1048576),
        )
        self._consumer.subscribe(topics=list(s.input_topics), listener=Listener())
        self._producer = self._new_producer()

    def _new_producer(self) -> Any:
        from kafka import KafkaProducer

        s = self.settings
        return KafkaProducer(
            bootstrap_servers=s.bootstrap_servers.split(","),
            client_id=f"{s.service_name}-producer",
            acks="all",
            retries=5,
            max_request_size=s.max_request_size,
            linger_ms=0,
            max_in_flight_requests_per_connection=1,  # keep per-key order through retries
        )

    def run(
        self,
        *,
        max_messages: int | None = None,
        idle_timeout_s: float | None = None,
        handle_signals: bool = False,
    ) -> RunStats:
        """Consume until stopped (or ``max_messages`` done, or idle ``idle_timeout_s``)."""
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        if handle_signals:
            self.install_signal_handlers()
        self.handler.setup()
        self._connect()
        consumer = self._consumer
        last_record = time.monotonic()
        try:
            while not self.stopping:
                self._heartbeat = time.monotonic()
                batch = consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
                if consumer.assignment():
                    self._ready.set()
                if not batch:
                    if (
                        idle_timeout_s is not None
                        and time.monotonic() - last_record > idle_timeout_s
                    ):
                        break
                    continue
                last_record = time.monotonic()
                pending = {tp: list(records) for tp, records in batch.items()}
                for tp, records in batch.items():
                    for record in records:
                        self._seen[(tp.topic, tp.partition)] = max(
                            self._seen.get((tp.topic, tp.partition), -1), record.offset
                        )
                abandon = False
                for tp in list(pending):
                    while pending[tp] and not abandon:
                        if self.stopping:
                            abandon = True  # uncommitted records are redelivered
                            break
                        record = pending[tp][0]
                        try:
                            self._process(record)
                        except _Stopping:
                            abandon = True
                            break
                        try:
                            consumer.commit(
                                {
                                    TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(
                                        record.offset + 1, "", -1
                                    )
                                }
                            )
                        except (CommitFailedError, KafkaError) as error:
                            # Rebalanced away mid-batch: the new owner redoes this record.
                            log.warning(
                                "commit of %s[%d]@%d failed (%s); re-fetching",
                                tp.topic,
                                tp.partition,
                                record.offset,
                                error,
                            )
                            self.stats.commit_failures += 1
                            pending[tp].pop(0)
                            self._rewind(pending)
                            abandon = True
                            break
                        pending[tp].pop(0)
                        self._committed[(tp.topic, tp.partition)] = record.offset + 1
                        self.metrics.last_commit.labels(self.settings.service_name).set(time.time())
                        done = self.stats.processed + self.stats.dead_lettered
                        if max_messages is not None and done >= max_messages:
                            self.request_stop()
                    if abandon:
                        break
        finally:
            self._close()
        return self.stats

    def _rewind(self, pending: dict[Any, list[Any]]) -> None:
        """Seek back to the first unprocessed record of partitions we still own."""
        owned = self._consumer.assignment()
        for tp, records in pending.items():
            if records and tp in owned:
                with contextlib.suppress(Exception):
                    self._consumer.seek(tp, records[0].offset)

    def _process(self, record: Any) -> None:
        """Handle one record with retries; dead-letter it after max_attempts. Raises _Stopping."""
        s = self.settings
        topic = record.topic
        self.stats.partitions_seen.add((record.topic, record.partition))
        delay = s.backoff_initial_s
        error_text = ""
        attempt = 0
        for attempt in range(1, s.max_attempts + 1):
            started = time.monotonic()
            partial: PartialFailure | None = None
            try:
                incoming = Incoming(
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    timestamp_ms=record.timestamp,
                    attempt=attempt,
                )
                try:
                    outgoing = self.handler.handle(incoming)
                except PartialFailure as failure:
                    outgoing, partial = failure.outgoing, failure
                self._produce(outgoing)
            except PermanentError as error:
                self.metrics.errors.labels(s.service_name, topic).inc()
                self.stats.failed_attempts += 1
                error_text = _describe(error)
                break
            except Exception as error:
                self.metrics.errors.labels(s.service_name, topic).inc()
                self.stats.failed_attempts += 1
                error_text = _describe(error)
                log.warning(
                    "%s[%d]@%d attempt %d/%d failed: %s",
                    topic,
                    record.partition,
                    record.offset,
                    attempt,
                    s.max_attempts,
                    error,
                )
                if attempt < s.max_attempts:
                    if self._stop.wait(delay):
                        raise _Stopping from error
                    delay = min(delay * 2, s.backoff_max_s)
                continue
            self.metrics.latency.labels(s.service_name, topic).observe(time.monotonic() - started)
            if partial is not None:  # its outputs are downstream: now record the failure
                self._dead_letter(record, str(partial), attempt, outputs_follow=True)
                return
            self.metrics.messages.labels(s.service_name, topic, "ok").inc()
            self.stats.processed += 1
            return
        self._dead_letter(record, error_text, attempt)

    def _produce(self, outgoing: list[Outgoing]) -> None:
        if not isinstance(outgoing, list | tuple) or not all(
            isinstance(o, Outgoing) for o in outgoing
        ):
            raise TypeError(f"handle() must return a list of Outgoing, got {outgoing!r:.200}")
        if self._producer is None:
            self._producer = self._new_producer()
        try:
            futures = [
                (o.topic, self._producer.send(o.topic, key=o.key, value=o.value)) for o in outgoing
            ]
            if futures:
                self._producer.flush(timeout=self.settings.produce_timeout_s)
            acked = [
                (topic, future.get(timeout=self.settings.produce_timeout_s))
                for topic, future in futures
            ]
        except Exception:
            # A restarted broker forgets the idempotent producer's id and answers every later
            # send with UNKNOWN_SERVER_ERROR: the next attempt gets a fresh producer.
            with contextlib.suppress(Exception):
                self._producer.close(timeout=1)
            self._producer = None  # made again by the next send (the broker may still be down)
            raise
        for topic, _ in acked:
            self.metrics.produced.labels(self.settings.service_name, topic).inc()
            self.stats.produced += 1

    def _dead_letter(
        self, record: Any, error_text: str, attempts: int, *, outputs_follow: bool = False
    ) -> None:
        """Publish the one failure record (``plankline.v1.Failure``) and wait for its ack;
        then tell the handler (``on_dead_letter``). ``outputs_follow``: the handler's
        partial outputs went downstream (:class:`PartialFailure`)."""
        s = self.settings
        failure = contracts.Failure(
            input_topic=record.topic,
            input_partition=record.partition,
            input_offset=record.offset,
            input_key=record.key or b"",
            input_value=record.value or b"",
            error=error_text,
            service=s.service_name,
            attempts=attempts,
            failed_at_unix_ms=int(time.time() * 1000),
        )
        log.error(
            "%s[%d]@%d dead-lettered to %s after %d attempts: %s",
            record.topic,
            record.partition,
            record.offset,
            s.dead_letter_topic,
            attempts,
            error_text.splitlines()[0] if error_text else "",
        )
        delay = s.backoff_initial_s
        while True:  # never commit a record whose failure was not recorded
            try:
                if self._producer is None:
                    self._producer = self._new_producer()
                future = self._producer.send(
                    s.dead_letter_topic, key=record.key, value=failure.SerializeToString()
                )
                future.get(timeout=s.produce_timeout_s)
                break
            except Exception as error:
                log.error("dead-letter publish failed (%s); retrying", error)
                if self._producer is not None:  # a fresh producer next time (see _produce)
                    with contextlib.suppress(Exception):
                        self._producer.close(timeout=1)
                    self._producer = None
                if self._stop.wait(max(delay, 0.1)):
                    raise _Stopping from error
                delay = min(max(delay, 0.1) * 2, s.backoff_max_s)
        self._mark_failed(record, failure, outputs_follow)
        self.metrics.messages.labels(s.service_name, record.topic, "dead_letter").inc()
        self.stats.dead_lettered += 1

    def _mark_failed(self, record: Any, failure: Any, outputs_follow: bool) -> None:
        """Let the handler record the failure where job status looks (``on_dead_letter``).

        Best effort after the dead-letter record is durable: the topic stays the
        authority, and a marker that cannot be written must not block the stream.
        """
        hook = getattr(self.handler, "on_dead_letter", None)
        if not callable(hook):
            return
        incoming = Incoming(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value or b"",
            timestamp_ms=record.timestamp,
            attempt=failure.attempts,
        )
        try:
            hook(incoming, failure, outputs_follow)
        except Exception as error:
            log.error("on_dead_letter of %s[%d]@%d failed: %s", *_where(record), error)

    def _close(self) -> None:
        self._ready.clear()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=5)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close(autocommit=False)
        close = getattr(self.handler, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()

    def shutdown_http(self) -> None:
        """Stop the probe server (after ``run`` returns)."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _where(record: Any) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


def _describe(error: BaseException) -> str:
    """Error type, message and the traceback tail: readable in the dead-letter topic."""
    tail = "".join(traceback.format_exception(error)[-6:])
    return f"{type(error).__name__}: {error}\n{tail}"[:8000]


# ---------------------------------------------------------------------------- entry points


def run_service(handler: Handler, settings: RunnerSettings | None = None) -> int:
    """Entry point of a service process: print config, serve probes, run until SIGTERM."""
    settings = settings or RunnerSettings()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.info("effective config: %s", settings.masked())
    runner = Runner(handler, settings)
    port = runner.start_http()
    log.info("probes and metrics on http://%s:%d", settings.http_host, port)
    try:
        stats = runner.run(handle_signals=True)
    finally:
        runner.shutdown_http()
    log.info("stopped: %d processed, %d dead-lettered", stats.processed, stats.dead_lettered)
    return 0


def load_handler(spec: str) -> Handler:
    """Build a handler from ``module:factory`` (a class or function returning a Handler)."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ValueError(f"handler must be module:factory, got {spec!r}")
    factory: Callable[[], Handler] = getattr(importlib.import_module(module_name), attr)
    return factory()


def main(argv: list[str] | None = None) -> int:
    """``python -m plankline.stream.runner module:factory`` (settings from PLANKLINE_*)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m plankline.stream.runner module:factory", file=sys.stderr)
        return 2
    return run_service(load_handler(args[0]))


if __name__ == "__main__":
    # Run the imported module, not __main__, so handlers share its Outgoing/Incoming classes.
    from plankline.stream import runner as _runner

    sys.exit(_runner.main())
