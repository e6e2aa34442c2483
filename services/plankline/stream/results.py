"""Job status and results: what ``plankline results`` prints and downloads.

Status comes from S3 only (the manifest's planned chunks, the collector's
``done.json`` and the segmenter's ``failed.json`` markers), so it survives any
restart and needs no Kafka.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from plankline.stream import contracts
from plankline.stream.jobs import read_manifest
from plankline.stream.store import S3Store


@dataclass
class JobStatus:
    """Chunks planned, done and failed (with their errors) for one job."""

    job: str
    planned: int = 0
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # chunk name -> error
    rois: int = 0

    @property
    def pending(self) -> int:
        return self.planned - self.done

    @property
    def finished(self) -> bool:
        """Every chunk is done (a failed chunk is done too: its ROIs before the bad frame)."""
        return self.planned > 0 and self.done >= self.planned


def job_status(store: S3Store, job: str) -> JobStatus:
    """Count the job's chunks by state from the markers in S3."""
    manifest = read_manifest(store, job, cached=False)
    status = JobStatus(job)
    keys = set(store.list(contracts.job_prefix(job) + "videos/"))
    for video in manifest["videos"]:
        for chunk in video["chunks"]:
            status.planned += 1

            def key(artifact: str, chunk: dict = chunk, video: dict = video) -> str:
                return contracts.chunk_key(job, video["video_id"], chunk["index"], artifact)

            if key("done.json") in keys:
                status.done += 1
                status.rois += json.loads(store.get_bytes(key("done.json"))).get("rois", 0)
            if key("failed.json") in keys:
                status.failed[chunk["name"]] = json.loads(store.get_bytes(key("failed.json")))[
                    "error"
                ]
    return status


def download_results(store: S3Store, job: str, out_dir: Path) -> list[Path]:
    """Copy the job's final outputs into ``out_dir`` in the batch layout; returns the files."""
    prefix = contracts.job_prefix(job) + "results/"
    files = []
    for key in store.list(prefix):
        files.append(store.get_file(key, Path(out_dir) / key[len(prefix) :]))
    return files
