"""Small pieces every pipeline service handler shares (S3 store, scratch folders)."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from google.protobuf.message import DecodeError

from plankline.stream import contracts
from plankline.stream.settings import ServiceSettings
from plankline.stream.store import S3Store

log = logging.getLogger("plankline.stream.service")


class ServiceBase:
    """Holds the settings and the S3 store; ``setup`` makes sure the bucket exists."""

    def __init__(self, settings: ServiceSettings | None = None, store: S3Store | None = None):
        self.settings = settings or ServiceSettings()
        self.store = store or S3Store.from_settings(self.settings)

    def setup(self) -> None:
        self.store.ensure_bucket()

    def scratch(self) -> tempfile.TemporaryDirectory[str]:
        """A private temporary folder for one message's files."""
        if self.settings.work_dir:
            Path(self.settings.work_dir).mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix="plankline-", dir=self.settings.work_dir)

    def on_dead_letter(self, message: object, error: str, attempts: int) -> None:
        """Mark the message's chunk failed (``failed.json``) so ``plankline results`` reports it.

        Called by the runner after it dead-lettered the message. Without this
        marker a chunk lost to a bug or a poison message downstream of the segmenter
        would read as pending forever. A message that does not parse names no job:
        only the dead-letter topic holds it.
        """
        try:
            parsed = message.parse()  # type: ignore[attr-defined]
        except (DecodeError, ValueError) as bad:
            log.error("dead-lettered message names no chunk (%s); see the dead-letter topic", bad)
            return
        if "chunk" not in parsed.DESCRIPTOR.fields_by_name or not parsed.HasField("chunk"):
            return
        ref = parsed.chunk
        first = error.splitlines()[0] if error else "unknown error"
        record = {
            "chunk": ref.chunk_name,
            "video_id": ref.video_id,
            "index": ref.chunk_index,
            "error": f"{self.settings.service_name} gave up after {attempts} attempt(s): {first}",
            "detail": error,
            "service": self.settings.service_name,
            "input_topic": message.topic,  # type: ignore[attr-defined]
            "dead_lettered": True,
            "failed_unix": time.time(),
        }
        key = contracts.chunk_key(ref.job_id, ref.video_id, ref.chunk_index, "failed.json")
        self.store.put_bytes(key, json.dumps(record).encode())
