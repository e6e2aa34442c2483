"""The real service handlers, wrapped to hold after their first message for kill tests.

``handle()`` of the real service runs in full (its S3 outputs are written); the
wrapper then holds before returning, i.e. before the runner produces downstream
and commits. A ``kill -9`` in that hold lands at the worst moment: outputs
written, offset not committed. Each handled message key is logged, so the test
can see the chunk was redone after restart.

The hold is an event, not a time window: ``TEST_PAUSE_AFTER_FIRST_S=inf`` holds
until the process is killed (subprocess tests), and in-process tests call
``release()`` when their fault (a broker or S3 restart) is in place; ``reached``
is set when the hold begins. A finite value still pauses that many seconds.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import Any

from plankline.stream.runner import Incoming, Outgoing

log = logging.getLogger("plankline.test.wrapper")


class PauseAfterFirst:
    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.pause_s = float(os.environ.get("TEST_PAUSE_AFTER_FIRST_S", "0"))
        self.handled = 0
        self.reached = threading.Event()
        """Set when the hold begins (outputs written, nothing produced or committed)."""
        self._released = threading.Event()

    def release(self) -> None:
        """End the hold (in-process tests, once their fault is in place)."""
        self._released.set()

    def setup(self) -> None:
        self.handler.setup()

    def handle(self, message: Incoming) -> list[Outgoing]:
        out = self.handler.handle(message)
        what = f"{message.topic} {(message.key or b'').decode()}"
        log.info("handled %s", what)
        if self.pause_s and not self.handled and self._wrote(message):
            self.handled += 1
            log.info("pausing after %s", what)
            self.reached.set()
            self._released.wait(None if math.isinf(self.pause_s) else self.pause_s)
        return out

    def _wrote(self, message: Incoming) -> bool:
        """True once the message made the service write (the collector waits for a pair)."""
        from plankline.stream import contracts
        from plankline.stream.collector import Collector

        if not isinstance(self.handler, Collector):
            return True
        ref = message.parse().chunk  # type: ignore[attr-defined]
        done = contracts.chunk_key(ref.job_id, ref.video_id, ref.chunk_index, "done.json")
        return bool(self.handler.store.exists(done))

    def close(self) -> None:
        close = getattr(self.handler, "close", None)
        if callable(close):
            close()


class FailOnChunk:
    """A real handler that raises a bug-like error on one chunk index (every attempt).

    Stands for a code bug or a poison message downstream of the segmenter: the
    runner dead-letters the message and must mark the chunk failed.
    """

    def __init__(self, handler: Any, chunk_index: int) -> None:
        self.handler = handler
        self.chunk_index = chunk_index

    def setup(self) -> None:
        self.handler.setup()

    def handle(self, message: Incoming) -> list[Outgoing]:
        ref = message.parse().chunk  # type: ignore[attr-defined]
        if ref.chunk_index == self.chunk_index:
            raise RuntimeError(f"injected bug on chunk {ref.chunk_name}")
        return self.handler.handle(message)

    def on_dead_letter(self, message: Incoming, failure: Any, outputs_follow: bool) -> None:
        self.handler.on_dead_letter(message, failure, outputs_follow)

    def close(self) -> None:
        close = getattr(self.handler, "close", None)
        if callable(close):
            close()


def segmenter() -> PauseAfterFirst:
    from plankline.stream.segmenter import from_env

    return PauseAfterFirst(from_env())


def measurer() -> PauseAfterFirst:
    from plankline.stream.measurer import from_env

    return PauseAfterFirst(from_env())


def classifier() -> PauseAfterFirst:
    from plankline.stream.classifier import from_env

    return PauseAfterFirst(from_env())


def collector() -> PauseAfterFirst:
    from plankline.stream.collector import from_env

    return PauseAfterFirst(from_env())


class HoldAfter:
    """A handler that, after its ``n``-th message (outputs written), holds until killed.

    The runner's kill test kills it there: the state at the kill is known exactly
    (``n`` outputs written, the last one not committed), whatever the machine's load.
    """

    def __init__(self, handler: Any, n: int) -> None:
        self.handler = handler
        self.n = n
        self.handled = 0

    def setup(self) -> None:
        self.handler.setup()

    def handle(self, message: Incoming) -> list[Outgoing]:
        out = self.handler.handle(message)
        self.handled += 1
        key = (message.key or b"").decode()
        log.info("handled %s", key)
        if self.handled == self.n:
            log.info("holding after %s", key)
            threading.Event().wait()  # until kill -9
        return out


def uppercase_holding() -> HoldAfter:
    """``stream_handlers.from_env()``, logging each key, holding after ``TEST_HOLD_AFTER``
    messages (0: never)."""
    from stream_handlers import from_env

    return HoldAfter(from_env(), int(os.environ.get("TEST_HOLD_AFTER", "0")))
