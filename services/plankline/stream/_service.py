"""What every pipeline service handler shares: S3 store, scratch folders, cancelled jobs,
and the chunk's failure marker.

A service subclasses :class:`ServiceBase` and implements ``process(message, parsed)``;
``handle`` (what the runner calls) parses the record once and skips it when its job
was cancelled (``jobs.cancel_job``), so a cancel stops chunks already published.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError, Message

from plankline.stream import contracts
from plankline.stream.jobs import job_cancelled
from plankline.stream.runner import Incoming, Outgoing
from plankline.stream.settings import ServiceSettings
from plankline.stream.store import S3Store

log = logging.getLogger("plankline.stream.service")


def failure_record(
    ref: contracts.ChunkRef, failure: contracts.Failure, *, outputs_follow: bool
) -> dict[str, Any]:
    """The chunk's ``failed.json``: the dead-letter ``Failure`` (less the input bytes) plus the
    chunk, a one-line ``error`` for people and whether its (partial) outputs still come.

    ``outputs_follow`` False means the chunk was given up (no ``done.json`` will
    come), so job status counts it failed rather than pending.
    """
    first = failure.error.splitlines()[0] if failure.error else "unknown error"
    if outputs_follow:
        summary = f"{failure.service}: {first}"
    else:
        summary = f"{failure.service} gave up after {failure.attempts} attempt(s): {first}"
    return {
        "chunk": ref.chunk_name,
        "video_id": ref.video_id,
        "index": ref.chunk_index,
        "error": summary,
        "detail": failure.error,
        "service": failure.service,
        "attempts": failure.attempts,
        "input_topic": failure.input_topic,
        "input_partition": failure.input_partition,
        "input_offset": failure.input_offset,
        "failed_unix_ms": failure.failed_at_unix_ms,
        "outputs_follow": outputs_follow,
    }


class ServiceBase:
    """Holds the settings and the S3 store; ``setup`` makes sure the bucket exists."""

    def __init__(self, settings: ServiceSettings | None = None, store: S3Store | None = None):
        self.settings = settings or ServiceSettings()
        self.store = store or S3Store.from_settings(self.settings)
        self.skipped = 0
        """Messages of cancelled jobs skipped (committed without work)."""

    def setup(self) -> None:
        self.store.ensure_bucket()

    def scratch(self) -> tempfile.TemporaryDirectory[str]:
        """A private temporary folder for one message's files."""
        if self.settings.work_dir:
            Path(self.settings.work_dir).mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix="plankline-", dir=self.settings.work_dir)

    def handle(self, message: Incoming) -> list[Outgoing]:
        """Parse the record; skip it if its job was cancelled, else ``process`` it."""
        parsed = message.parse()
        ref = parsed.chunk  # type: ignore[attr-defined]
        if job_cancelled(self.store, ref.job_id):
            self.skipped += 1
            log.info("job %s cancelled: chunk %s skipped", ref.job_id, ref.chunk_name)
            return []
        return self.process(message, parsed)

    def process(self, message: Incoming, parsed: Message) -> list[Outgoing]:
        """The service's work on one record of a job that runs (see subclasses)."""
        raise NotImplementedError

    def failed_key(self, ref: contracts.ChunkRef) -> str:
        return contracts.chunk_key(ref.job_id, ref.video_id, ref.chunk_index, "failed.json")

    def on_dead_letter(
        self, message: Incoming, failure: contracts.Failure, outputs_follow: bool
    ) -> None:
        """Mark the message's chunk failed (``failed.json``) so ``plankline results`` reports it.

        Called by the runner after it dead-lettered the message. Without this
        marker a chunk lost to a bug or a poison message downstream of the segmenter
        would read as pending forever. A message that does not parse names no job:
        only the dead-letter topic holds it.
        """
        try:
            parsed = message.parse()
        except (DecodeError, ValueError) as bad:
            log.error("dead-lettered message names no chunk (%s); see the dead-letter topic", bad)
            return
        if "chunk" not in parsed.DESCRIPTOR.fields_by_name or not parsed.HasField("chunk"):
            return
        ref = parsed.chunk  # type: ignore[attr-defined]
        record = failure_record(ref, failure, outputs_follow=outputs_follow)
        self.store.put_bytes(self.failed_key(ref), json.dumps(record).encode())
