"""A small real handler for the runner tests (imported in-process and by subprocesses).

It behaves like a service step: read an input record, write a deterministic
S3 object derived from it, return one downstream message. Payloads starting
with ``poison`` always fail, like a corrupt video chunk.
"""

from __future__ import annotations

import os
import time

from plankline.stream.runner import Incoming, Outgoing
from plankline.stream.store import S3Store


class UppercaseHandler:
    """Writes ``out/<key>.txt`` = upper-cased payload, then sends it to ``output_topic``."""

    def __init__(self, store: S3Store, output_topic: str, sleep_s: float = 0.0) -> None:
        self.store = store
        self.output_topic = output_topic
        self.sleep_s = sleep_s
        self.setup_calls = 0

    def setup(self) -> None:
        self.store.ensure_bucket()
        self.setup_calls += 1

    def handle(self, message: Incoming) -> list[Outgoing]:
        payload = message.value.decode()
        if payload.startswith("poison"):
            raise ValueError(f"cannot process payload {payload!r}: poisoned on purpose")
        if self.sleep_s:
            time.sleep(self.sleep_s)
        result = payload.upper().encode()
        assert message.key is not None
        self.store.put_bytes(f"out/{message.key.decode()}.txt", result)  # deterministic key
        return [Outgoing(self.output_topic, result, key=message.key)]


def from_env() -> UppercaseHandler:
    """Factory for ``python -m plankline.stream.runner stream_handlers:from_env``."""
    from plankline.stream.settings import S3Settings

    return UppercaseHandler(
        S3Store.from_settings(S3Settings()),
        os.environ["TEST_OUTPUT_TOPIC"],
        float(os.environ.get("TEST_SLEEP_S", "0")),
    )
