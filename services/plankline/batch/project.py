"""The project folder: the seed's layout, per-chunk markers and resume.

```
project/
  raw/              videos in (AVI/MP4/MKV, or folders of frames)
  segmentation/     <chunk>.tar        ROI images
  measurements/     <chunk>.csv        one row per ROI
  classification/   <chunk>.csv        image,<class1>,...,top_class,...
  ecotaxa/          <chunk>.zip        ecotaxa_<chunk>.tsv + images
  summary/          chunks.csv, counts_per_second.csv
  plankline.log
  .plankline/done/<chunk>.json     written last: the chunk is complete
  .plankline/failed/<chunk>.json   the error, naming file and frame
```

A chunk is done only when its marker exists; every output is written
atomically under a deterministic name, so a killed run redoes a half-written
chunk by overwriting it, and nothing is ever duplicated.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plankline.imaging.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from plankline.outputs.tables import atomic_write


class ProjectLockedError(RuntimeError):
    """Another run holds the project."""


class Project:
    """Paths and markers of one project folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.raw = self.root / "raw"
        self.segmentation = self.root / "segmentation"
        self.measurements = self.root / "measurements"
        self.classification = self.root / "classification"
        self.ecotaxa = self.root / "ecotaxa"
        self.summary = self.root / "summary"
        self.log_file = self.root / "plankline.log"
        self._done = self.root / ".plankline" / "done"
        self._failed = self.root / ".plankline" / "failed"

    def check(self) -> None:
        """Fail before anything is written (a lock, a log) when raw/ is missing, saying
        what to run instead when the folder given is raw/ itself or holds the videos."""
        if self.raw.is_dir():
            return
        hint = "put the videos there"
        if self.root.is_dir() and any(_is_video(path) for path in self.root.iterdir()):
            hint = (
                f"{self.root} itself holds videos: run plankline on the folder above it "
                f"(plankline run {self.root.parent}) when it is the project's raw/, or move "
                "them into raw/"
            )
        raise FileNotFoundError(f"{self.raw}: no raw/ folder ({hint})")

    def create(self) -> None:
        """Make the output folders and drop temp files a killed run left behind."""
        self.check()
        for folder in (
            self.segmentation,
            self.measurements,
            self.classification,
            self.ecotaxa,
            self.summary,
            self._done,
            self._failed,
        ):
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the project for one run; a second run on it fails at once, clearly."""
        path = self.root / ".plankline" / "lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ProjectLockedError(
                    f"{self.root}: another plankline run is using this project"
                ) from None
            handle.write(str(os.getpid()))
            handle.flush()
            yield

    def videos(self) -> list[Path]:
        """Videos in raw/, and sub-folders holding frame images, sorted by name."""
        return [path for path in sorted(self.raw.iterdir()) if _is_video(path)]

    def not_videos(self) -> list[Path]:
        """What else raw/ holds (left alone; the run names them so none goes unnoticed)."""
        return [p for p in sorted(self.raw.iterdir()) if not _is_video(p) and p.name[0] != "."]

    def outputs(self, chunk: str) -> dict[str, Path]:
        return {
            "rois": self.segmentation / f"{chunk}.tar",
            "measurements": self.measurements / f"{chunk}.csv",
            "classification": self.classification / f"{chunk}.csv",
            "ecotaxa": self.ecotaxa / f"{chunk}.zip",
        }

    def is_done(self, chunk: str) -> bool:
        return (self._done / f"{chunk}.json").is_file()

    def done_record(self, chunk: str) -> dict[str, Any] | None:
        """The chunk's done marker (None when it is not done)."""
        path = self._done / f"{chunk}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def has_failed(self, chunk: str) -> bool:
        return (self._failed / f"{chunk}.json").is_file()

    def mark_done(self, chunk: str, record: dict[str, Any]) -> None:
        _write_json(self._done / f"{chunk}.json", record)
        (self._failed / f"{chunk}.json").unlink(missing_ok=True)

    def mark_failed(self, chunk: str, record: dict[str, Any]) -> None:
        _write_json(self._failed / f"{chunk}.json", record)

    def done_records(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self._done.glob("*.json")):
            yield json.loads(path.read_text())

    def failed_records(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self._failed.glob("*.json")):
            yield json.loads(path.read_text())


def _is_video(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in VIDEO_SUFFIXES
    return path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())


def _write_json(path: Path, record: dict[str, Any]) -> None:
    with atomic_write(path, "w") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
