"""Small pieces every pipeline service handler shares (S3 store, scratch folders)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from plankline.stream.settings import ServiceSettings
from plankline.stream.store import S3Store


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
