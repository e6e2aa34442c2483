"""The batch run, read as a method section: decode -> flat-field -> segment ->
measure -> classify -> write, one chunk of frames at a time, chunks spread over
all cores. Progress, logging and resume wrap the steps; they are not woven in.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from plankline.batch.project import Chunk, Project, chunk_record
from plankline.config import BatchSettings
from plankline.imaging.flatfield import FlatField
from plankline.imaging.measure import measure_rois
from plankline.imaging.segment import Rois, SegmentParams, segment_stream
from plankline.imaging.video import VideoError, iter_frames, probe_video
from plankline.outputs.ecotaxa import write_ecotaxa_zip
from plankline.outputs.naming import chunk_name, frame_time, roi_id
from plankline.outputs.rois import write_roi_tar
from plankline.outputs.tables import write_csv

log = logging.getLogger("plankline.batch")


# --- planning -----------------------------------------------------------------


def plan_chunks(video: Path, settings: BatchSettings) -> list[Chunk]:
    """Split one video into chunks of ``chunk_frames`` frames (raises VideoError)."""
    info = probe_video(video)
    if not info.n_frames:
        raise VideoError(str(video), None, f"{video}: no frames")
    fps = settings.fps or info.fps
    stem = video.stem if video.is_file() else video.name
    return [
        Chunk(
            video,
            index,
            start,
            min(start + settings.chunk_frames, info.n_frames),
            chunk_name(stem, index, start, fps),
            fps,
            info.height,
        )
        for index, start in enumerate(range(0, info.n_frames, settings.chunk_frames))
    ]


def segment_params(settings: BatchSettings) -> SegmentParams:
    """SegmentParams from the settings; unset fields keep the library's defaults."""
    chosen = {
        name: getattr(settings, name)
        for name in (
            "method",
            "threshold",
            "min_area_px",
            "max_area_px",
            "pixel_size_um",
            "min_esd_um",
            "max_esd_um",
            "padding",
        )
        if getattr(settings, name) is not None
    }
    return SegmentParams(**chosen)


# --- the steps ------------------------------------------------------------------


@dataclass
class ChunkResult:
    """What a worker sends back: enough for progress, summary and the failure list."""

    chunk: Chunk
    frames: int = 0
    rois: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    warning: str | None = None


def flatfielded_frames(chunk: Chunk, settings: BatchSettings) -> Iterator[tuple[int, np.ndarray]]:
    """Decode and flat-field the chunk's frames, then any frames after it (read lazily).

    The background estimate is primed from the frames just before the chunk (or
    its own first frames for chunk 0), so its first frame is corrected as well
    as its tenth.
    """
    flat = FlatField(mode=settings.flatfield)
    if settings.prime_frames:
        prime_start = max(0, chunk.start - settings.prime_frames)
        flat.prime(_good_frames(chunk.video, prime_start, prime_start + settings.prime_frames))
    # one frame of context before the chunk: objects reaching into its first frame from
    # above are recognised as the previous chunk's, and crops keep their top padding.
    for index, frame in iter_frames(chunk.video, max(0, chunk.start - 1)):
        yield index, flat.correct(frame)


def _good_frames(video: Path, start: int, stop: int) -> Iterator[np.ndarray]:
    """Frames up to the first undecodable one: priming must not fail a chunk for a frame
    it does not own (the chunk owning that frame reports it)."""
    try:
        for _, frame in iter_frames(video, start, stop):
            yield frame
    except VideoError:
        return


def segment_chunk(chunk: Chunk, settings: BatchSettings, partial: list[Rois]) -> None:
    """Collect the chunk's ROIs into ``partial`` (so a decode error keeps what came before)."""
    frames = flatfielded_frames(chunk, settings)
    for rois in segment_stream(
        frames, segment_params(settings), first_owned=chunk.start, stop_owned=chunk.stop
    ):
        partial.append(rois)


def describe_rois(chunk: Chunk, rois: Rois) -> dict[str, Any]:
    """Identity and position columns that tie every ROI to video, frame, line and time."""
    ids = [
        roi_id(chunk.name, int(f), int(li), int(c), i)
        for i, (f, li, c) in enumerate(zip(rois.frame, rois.line, rois.column, strict=True))
    ]
    stem = chunk.video.stem if chunk.video.is_file() else chunk.video.name
    columns: dict[str, Any] = {
        "image": np.array(ids, dtype=object),
        "video": np.full(len(rois), chunk.video.name, dtype=object),
        "chunk": np.full(len(rois), chunk.name, dtype=object),
        "frame": rois.frame,
        "line": rois.line,
        "row": rois.row,
        "column": rois.column,
        "bbox_height": rois.height,
        "bbox_width": rois.width,
    }
    if chunk.fps:
        columns["seconds"] = rois.line / (chunk.frame_height * chunk.fps)
        times = [frame_time(stem, int(f), chunk.fps) for f in rois.frame]
        if times and times[0] is not None:
            columns["time"] = np.array(
                [t.isoformat(timespec="milliseconds") for t in times], dtype=object
            )
    return columns


_classifier_cache: dict[str, Any] = {}


def classify_crops(crops: list[np.ndarray], settings: BatchSettings) -> tuple[Any, np.ndarray]:
    """Probabilities per ROI; the model is loaded once per worker process."""
    from plankline.model.infer import Classifier

    key = str(settings.model)
    if key not in _classifier_cache:
        _classifier_cache[key] = Classifier.load(settings.model)
    classifier = _classifier_cache[key]
    return classifier, classifier.predict(crops)


def write_chunk(
    project: Project, chunk: Chunk, rois: Rois, settings: BatchSettings
) -> dict[str, int]:
    """Measure, classify and write the chunk's outputs; returns counts per class."""
    paths = project.outputs(chunk.name)
    table = describe_rois(chunk, rois)
    table.update(measure_rois(rois.crops, rois.masks, pixel_size_um=settings.pixel_size_um))
    ids = list(table["image"])
    write_roi_tar(paths["rois"], ids, rois.crops, fmt=settings.image_format)
    write_csv(paths["measurements"], table)
    predicted = None
    counts: dict[str, int] = {}
    if settings.classify:
        from plankline.model.infer import write_classification_csv

        classifier, probs = classify_crops(rois.crops, settings)
        write_classification_csv(
            paths["classification"],
            ids,
            probs,
            classifier.class_names,
            thresholds=classifier.thresholds,
        )
        predicted = [classifier.class_names[k] for k in probs.argmax(axis=1)] if len(ids) else []
        counts = dict(Counter(predicted))
    stem = chunk.video.stem if chunk.video.is_file() else chunk.video.name
    write_ecotaxa_zip(
        paths["ecotaxa"],
        object_ids=ids,
        images=rois.crops,
        measurements={
            k: v for k, v in table.items() if k not in ("image", "video", "chunk", "time")
        },
        times=[frame_time(stem, int(f), chunk.fps) for f in rois.frame] if chunk.fps else None,
        lat=settings.lat,
        lon=settings.lon,
        depth=settings.depth_m,
        sample_id=stem,
        acq_id=chunk.name,
        predicted=predicted,
        pixel_size_um=settings.pixel_size_um,
    )
    return counts


def process_chunk(chunk: Chunk, settings: BatchSettings) -> ChunkResult:
    """One chunk end to end; never raises: errors come back in the result."""
    import cv2

    cv2.setNumThreads(1)
    project = Project(settings.project)
    began = time.perf_counter()
    result = ChunkResult(chunk)
    partial: list[Rois] = []
    try:
        segment_chunk(chunk, settings, partial)
    except VideoError as error:
        if error.frame is not None and error.frame >= chunk.stop:
            # read ahead only to finish objects leaving the chunk: the chunk owning the
            # frame reports it; the objects crossing into it end where the data ends.
            result.warning = str(error)
        else:
            result.error = str(error)
    except Exception as error:  # a bug or bad data: record it, keep the batch going
        result.error = f"{chunk.video}: chunk {chunk.index}: {error!r}\n{traceback.format_exc()}"
    try:
        rois = Rois.concat(partial)
        result.counts = write_chunk(project, chunk, rois, settings)
        result.rois = len(rois)
    except Exception as error:
        result.error = (result.error or "") + f"{chunk.video}: chunk {chunk.index}: {error!r}"
    result.frames = chunk.stop - chunk.start
    result.seconds = time.perf_counter() - began
    record = chunk_record(chunk) | {
        "warning": result.warning,
        "frames": result.frames,
        "rois": result.rois,
        "counts": result.counts,
        "seconds": result.seconds,
    }
    if result.error:
        project.mark_failed(chunk.name, record | {"error": result.error})
    else:
        project.mark_done(chunk.name, record)
    return result


# --- the loop -------------------------------------------------------------------


@dataclass
class BatchReport:
    chunks_done: int = 0
    chunks_skipped: int = 0
    frames: int = 0
    rois: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def run_batch(
    settings: BatchSettings,
    *,
    retry_failed: bool = False,
    on_progress: Callable[[ChunkResult, int], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
) -> BatchReport:
    """Process every chunk of every video in raw/ not yet done, on ``workers`` processes.

    ``on_plan(total_frames, frames_already_done)`` is called once; ``on_progress``
    after each chunk with the chunk result and the frames it covered.
    """
    project = Project(settings.project)
    with project.lock():
        project.create()
        return _run_locked(project, settings, retry_failed, on_progress, on_plan)


def _run_locked(
    project: Project,
    settings: BatchSettings,
    retry_failed: bool,
    on_progress: Callable[[ChunkResult, int], None] | None,
    on_plan: Callable[[int, int], None] | None,
) -> BatchReport:
    report = BatchReport()
    todo: list[Chunk] = []
    total_frames = done_frames = 0
    for video in project.videos():
        try:
            chunks = plan_chunks(video, settings)
        except Exception as error:  # unreadable/empty video: record, go on
            message = str(error) if isinstance(error, VideoError) else f"{video}: {error!r}"
            project.mark_failed(video.name, {"video": str(video), "error": message})
            report.failures.append(message)
            log.error(message)
            continue
        for chunk in chunks:
            total_frames += chunk.stop - chunk.start
            if project.is_done(chunk.name) or (project.has_failed(chunk.name) and not retry_failed):
                report.chunks_skipped += 1
                done_frames += chunk.stop - chunk.start
            else:
                todo.append(chunk)
    if on_plan:
        on_plan(total_frames, done_frames)
    began = time.perf_counter()
    for result in _map_chunks(todo, settings):
        report.chunks_done += 1
        report.frames += result.frames
        report.rois += result.rois
        if result.error:
            report.failures.append(result.error.splitlines()[0])
            log.error("chunk %s failed: %s", result.chunk.name, result.error)
        else:
            log.info(
                "chunk %s: %d frames, %d ROIs in %.1f s",
                result.chunk.name,
                result.frames,
                result.rois,
                result.seconds,
            )
        if on_progress:
            on_progress(result, result.frames)
    report.seconds = time.perf_counter() - began
    write_summary(project)
    return report


def _map_chunks(todo: list[Chunk], settings: BatchSettings) -> Iterator[ChunkResult]:
    """Results as chunks finish; one process per worker, a few chunks in flight each."""
    if settings.workers == 1 or len(todo) <= 1:
        for chunk in todo:
            yield process_chunk(chunk, settings)
        return
    # spawn, not fork: the parent runs a progress-bar thread, and a fork taken while a
    # thread holds a lock leaves the child waiting on it forever.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=settings.workers, mp_context=context) as pool:
        pending: set[Future[ChunkResult]] = set()
        queue = iter(todo)
        for chunk in queue:
            pending.add(pool.submit(process_chunk, chunk, settings))
            if len(pending) >= 2 * settings.workers:
                break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(process_chunk, nxt, settings))


def write_summary(project: Project) -> None:
    """Per-chunk table and counts per class per second of video, from the done markers."""
    records = list(project.done_records())
    chunks = {
        "chunk": [r["name"] for r in records],
        "video": [Path(r["video"]).name for r in records],
        "start_frame": [r["start"] for r in records],
        "stop_frame": [r["stop"] for r in records],
        "rois": [r["rois"] for r in records],
        "seconds_to_process": [round(r["seconds"], 3) for r in records],
    }
    write_csv(project.summary / "chunks.csv", chunks)
    write_csv(project.summary / "counts_per_second.csv", counts_per_second(project, records))


def counts_per_second(project: Project, records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Counts of each predicted class in each whole second of each video."""
    from plankline.model.infer import read_classification_csv
    from plankline.outputs.tables import read_csv

    rows: Counter[tuple[str, int, str]] = Counter()
    for record in records:
        paths = project.outputs(record["name"])
        if not paths["classification"].is_file() or not record.get("fps"):
            continue
        measured = read_csv(paths["measurements"])
        if "seconds" not in measured or len(measured["seconds"]) == 0:
            continue
        _, probs, names = read_classification_csv(paths["classification"])
        for second, k in zip(measured["seconds"].astype(int), probs.argmax(axis=1), strict=True):
            rows[(Path(record["video"]).name, int(second), names[k])] += 1
    keys = sorted(rows)
    return {
        "video": [k[0] for k in keys],
        "second": [k[1] for k in keys],
        "time": [str(timedelta(seconds=k[1])) for k in keys],
        "class": [k[2] for k in keys],
        "count": [rows[k] for k in keys],
    }


def configure_logging(project: Path) -> None:
    """Log to ``plankline.log`` in the project (the console shows the progress bar)."""
    project.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(project / "plankline.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("plankline")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.info("pid %d started", os.getpid())
