"""Job status and results: what ``plankline results`` prints and downloads.

Status comes from S3 only (the manifest's planned chunks, the collector's
``done.json``, the ``failed.json`` markers and ``cancelled.json``), so it survives any restart and
needs no Kafka. ``failed.json`` is written by the segmenter for an unreadable
frame (the chunk still finishes with the ROIs before it, as in batch) and by any
service that dead-letters a chunk's message (a bug, a poison message, a model
mismatch): such a chunk never gets ``done.json`` and counts as failed, not
pending, so ``results --wait`` ends.

The downloaded folder has the batch layout, ``summary/`` included: the same
``pipeline.write_summary`` the batch CLI calls, fed the collector's done markers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from plankline import pipeline
from plankline.stream import contracts
from plankline.stream.store import S3Store


@dataclass
class JobStatus:
    """Chunks planned, done and failed (with their errors) for one job."""

    job: str
    planned: int = 0
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # chunk name -> error
    rois: int = 0
    abandoned: int = 0  # failed chunks without outputs (dead-lettered downstream)
    records: list[dict] = field(default_factory=list)  # the done markers
    cancelled: bool = False  # the services skip its remaining chunks (jobs.cancel_job)

    @property
    def pending(self) -> int:
        return self.planned - self.done - self.abandoned

    @property
    def finished(self) -> bool:
        """No chunk is still in flight: each is done (a chunk with a bad frame is done too:
        its ROIs before the frame) or was given up by a service, or the job was cancelled."""
        return self.cancelled or (self.planned > 0 and self.pending <= 0)


#: (bucket, key, etag) -> parsed marker: ``results --wait`` polls 4 times a second, and
#: fetching every done.json on every poll cost O(chunks) GETs each time (about as much CPU
#: in the CLI and SeaweedFS as the collector spent on the job). A marker is re-read only
#: when its ETag changes.
_markers: dict[tuple[str, str, str], dict] = {}


def _marker(store: S3Store, key: str, etag: str) -> dict:
    cached = _markers.get((store.bucket, key, etag)) if etag else None
    if cached is None:
        cached = json.loads(store.get_bytes(key))
        if etag:
            _markers[(store.bucket, key, etag)] = cached
    return cached


def job_status(store: S3Store, job: str) -> JobStatus:
    """Count the job's chunks by state from the markers in S3.

    One LIST of the job's keys per call; the manifest and the markers are fetched only
    when their ETags change (``results --wait`` calls this 4 times a second).
    """
    keys = store.list_etags(contracts.job_prefix(job))
    manifest_key = contracts.manifest_key(job)
    if manifest_key not in keys:
        raise KeyError(f"job {job!r} has no manifest: was it submitted?")
    manifest = _marker(store, manifest_key, keys[manifest_key])
    status = JobStatus(job, cancelled=contracts.cancel_key(job) in keys)
    for video in manifest["videos"]:
        for chunk in video["chunks"]:
            status.planned += 1

            def key(artifact: str, chunk: dict = chunk, video: dict = video) -> str:
                return contracts.chunk_key(job, video["video_id"], chunk["index"], artifact)

            done = key("done.json") in keys
            if done:
                record = _marker(store, key("done.json"), keys[key("done.json")])
                status.done += 1
                status.rois += record.get("rois", 0)
                status.records.append(record)
            if key("failed.json") in keys:
                failure = _marker(store, key("failed.json"), keys[key("failed.json")])
                status.failed[chunk["name"]] = failure["error"]
                # a chunk with a bad frame goes on with the ROIs before it: pending until
                # its done.json; a chunk given up never gets there (records written before
                # ``outputs_follow`` said ``dead_lettered`` for the latter)
                follow = failure.get("outputs_follow", not failure.get("dead_lettered", False))
                status.abandoned += not done and not follow
    return status


#: ``wait_for_job``'s pause between two polls: a tenth of the time waited so far, within these
#: bounds. One poll is a LIST of the job's keys (~14 per chunk): on the 4-chunk job of
#: ``scripts/bench_stack.py`` about 25 CPU ms between the CLI and SeaweedFS, so polling 4 times
#: a second cost more CPU than the collector. Backing off keeps the first answers quick and
#: costs a long job at most ``WAIT_MAX_S`` of extra latency.
WAIT_MIN_S, WAIT_MAX_S = 0.25, 2.0


def wait_for_job(store: S3Store, job: str, timeout_s: float) -> JobStatus:
    """Poll :func:`job_status` until the job is finished or ``timeout_s`` passed; the last status.

    The pause between polls grows with the time waited (see :data:`WAIT_MAX_S`).
    """
    began = time.monotonic()
    status = job_status(store, job)
    while not status.finished:
        waited = time.monotonic() - began
        if waited >= timeout_s:
            break
        pause = min(WAIT_MAX_S, max(WAIT_MIN_S, waited / 10), timeout_s - waited)
        time.sleep(pause)
        status = job_status(store, job)
    return status


def summary_files(store: S3Store, job: str, status: JobStatus | None = None) -> dict[str, bytes]:
    """The job's ``summary/`` files (name -> bytes) as :func:`download_results` writes them,
    fetching only what the summary reads (the done chunks' measurement and classification
    CSVs), not the ROI archives: what the gateway streams to a lab."""
    import tempfile

    status = status if status is not None else job_status(store, job)
    prefix = contracts.job_prefix(job) + "results/"
    with tempfile.TemporaryDirectory(prefix="plankline-summary-") as tmp:
        out_dir = Path(tmp)
        for record in status.records:
            for kind in ("measurements", "classification"):
                folder, ext = contracts.RESULT_KINDS[kind]
                name = f"{folder}/{record['name']}{ext}"
                if store.exists(prefix + name):
                    store.get_file(prefix + name, out_dir / name)

        def outputs(chunk: str) -> dict[str, Path]:
            return {
                kind: out_dir / f"{f}/{chunk}{e}" for kind, (f, e) in contracts.RESULT_KINDS.items()
            }

        pipeline.write_summary(out_dir / "summary", status.records, outputs)
        return {name: (out_dir / "summary" / name).read_bytes() for name in pipeline.SUMMARY_FILES}


def download_results(
    store: S3Store, job: str, out_dir: Path, status: JobStatus | None = None
) -> list[Path]:
    """Copy the job's final outputs into ``out_dir`` in the batch layout, and write its
    ``summary/`` from the done chunks (``status``, read now if not given); returns the files.
    """
    status = status if status is not None else job_status(store, job)
    out_dir = Path(out_dir)
    prefix = contracts.job_prefix(job) + "results/"
    files = []
    for key in store.list(prefix):
        files.append(store.get_file(key, out_dir / key[len(prefix) :]))

    def outputs(chunk: str) -> dict[str, Path]:
        return {
            kind: out_dir / folder / f"{chunk}{ext}"
            for kind, (folder, ext) in contracts.RESULT_KINDS.items()
        }

    pipeline.write_summary(out_dir / "summary", status.records, outputs)
    return files + [out_dir / "summary" / name for name in pipeline.SUMMARY_FILES]
