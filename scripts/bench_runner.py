"""Messages per second through the shared runner on real Tansu + SeaweedFS (127.0.0.1).

Prints, side by side in one run (the machine is shared and noisy):

- baseline: a bare kafka-python consumer loop (auto-commit, no S3, no produce, no commit);
- runner, Kafka only: handler returns one downstream message, no S3 write;
- runner, full step: handler writes a 4 KiB S3 object under a deterministic key
  and returns one downstream message (what every service does per chunk);

plus server start times. Usage: ``python scripts/bench_runner.py --messages 500``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from plankline.stream.runner import Incoming, Outgoing, Runner, ensure_topics
from plankline.stream.settings import RunnerSettings
from plankline.stream.stack import start_seaweedfs, start_tansu
from plankline.stream.store import S3Store


class KafkaOnly:
    def __init__(self, out: str) -> None:
        self.out = out
        self.first: float | None = None  # time of the first record, after the group join

    def setup(self) -> None:
        pass

    def handle(self, message: Incoming) -> list[Outgoing]:
        self.first = self.first or time.perf_counter()
        return [Outgoing(self.out, message.value, key=message.key)]


class FullStep(KafkaOnly):
    def __init__(self, out: str, store: S3Store) -> None:
        super().__init__(out)
        self.store = store

    def handle(self, message: Incoming) -> list[Outgoing]:
        assert message.key is not None
        self.store.put_bytes(f"bench/{message.key.decode()}", message.value * 64)
        return super().handle(message)


def produce(bootstrap: str, topic: str, n: int) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for i in range(n):
        producer.send(topic, key=f"vid/{i:06d}".encode(), value=b"x" * 64)
    producer.flush()
    producer.close()


def baseline(bootstrap: str, topic: str, n: int) -> float:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"base-{topic}",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
    )
    seen, start = 0, 0.0
    while seen < n:
        for batch in consumer.poll(timeout_ms=200, max_records=16).values():
            for _record in batch:  # same per-record shape as the runner, no work
                start = start or time.perf_counter()
                seen += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return (n - 1) / elapsed


def through_runner(handler: KafkaOnly, settings: RunnerSettings, n: int) -> float:
    runner = Runner(handler, settings)
    runner.run(max_messages=n)
    assert handler.first is not None
    return (n - 1) / (time.perf_counter() - handler.first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=4)
    options = parser.parse_args()
    n = options.messages
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        s3 = start_seaweedfs(Path(tmp), "bench", "bench-secret")
        t_s3 = time.perf_counter() - t
        t = time.perf_counter()
        kafka = start_tansu(Path(tmp))
        t_kafka = time.perf_counter() - t
        try:
            store = S3Store(s3.endpoint, "bench", "bench-secret", "bench")
            store.ensure_bucket()
            rates = {}
            for name in ("baseline", "runner-kafka-only", "runner-full-step"):
                topic = f"bench-{uuid.uuid4().hex[:6]}"
                ensure_topics(kafka.endpoint, {topic: options.partitions, f"{topic}.out": 4})
                produce(kafka.endpoint, topic, n)
                settings = RunnerSettings(
                    bootstrap_servers=kafka.endpoint,
                    group_id=f"g-{topic}",
                    input_topics=[topic],
                    s3_endpoint=s3.endpoint,
                    session_timeout_ms=6000,
                    http_port=0,
                )
                if name == "baseline":
                    rates[name] = baseline(kafka.endpoint, topic, n)
                elif name == "runner-kafka-only":
                    rates[name] = through_runner(KafkaOnly(f"{topic}.out"), settings, n)
                else:
                    rates[name] = through_runner(FullStep(f"{topic}.out", store), settings, n)
        finally:
            kafka.stop()
            s3.stop()
    print(f"start: seaweedfs {t_s3:.2f} s, tansu {t_kafka:.2f} s  ({n} messages each)")
    for name, rate in rates.items():
        print(f"{name:20} {rate:9.1f} msg/s   x{rate / rates['baseline']:.3f} of baseline")
    print("rates from the first record on (the ~3 s consumer-group join is excluded)")


if __name__ == "__main__":
    main()
