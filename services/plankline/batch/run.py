"""The batch run: every chunk of every video in raw/ through ``pipeline.process_chunk``,
chunks spread over all cores. Progress, logging and resume wrap the steps; they are
not woven into them.
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from plankline import pipeline
from plankline.batch.project import Project
from plankline.config import BatchSettings, PipelineSettings
from plankline.imaging.video import (
    VIDEO_SUFFIXES,
    ContinuousReader,
    Source,
    VideoError,
    probe_video,
)
from plankline.pipeline import (
    Chunk,
    FrameReader,
    PartialChunkError,
    plan_chunks,
    process_chunk,
)
from plankline.processes import worker_pool

log = logging.getLogger("plankline.batch")


# --- planning -----------------------------------------------------------------


def plan_video(
    video: Source, settings: PipelineSettings, *, name: str | None = None
) -> list[Chunk]:
    """Split one video into chunks of ``chunk_frames`` frames (raises VideoError).

    The one plan of batch and stream: ``stream.ingest`` passes a ranged reader of a
    video in the object store with its file ``name`` (default: ``video``'s own), from
    which the chunks are named, so both cut and name a video alike.
    """
    info = probe_video(video)
    if not info.n_frames:
        raise VideoError(name or str(video), None, "no frames")
    return plan_chunks(
        name or Path(video).name,  # type: ignore[arg-type]
        info.n_frames,
        info.height,
        settings.fps or info.fps,
        settings.chunk_frames,
    )


# --- one chunk ------------------------------------------------------------------


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
    artefacts: dict[str, int] = field(default_factory=dict)


def run_chunks(chunks: Sequence[Chunk], settings: BatchSettings) -> list[ChunkResult]:
    """:func:`iter_chunks` in a pool worker: the results of the whole run at once."""
    return list(iter_chunks(chunks, settings))


def iter_chunks(chunks: Sequence[Chunk], settings: BatchSettings) -> Iterator[ChunkResult]:
    """Consecutive chunks of one video through one open decoder: each chunk reads its
    priming frames and itself, and the next one starts where it stopped (see
    ``ContinuousReader``; an inter-frame codec's seek decodes from the keyframe before).
    Never raises: errors come back in the results."""
    project = Project(settings.project)
    read = ContinuousReader(project.raw / chunks[0].video, keep=settings.prime_frames + 8)
    try:
        for chunk in chunks:
            yield run_chunk(chunk, settings, read)
    finally:
        read.close()


def run_chunk(chunk: Chunk, settings: BatchSettings, read: FrameReader) -> ChunkResult:
    """One chunk end to end, frames from ``read``; never raises: errors come back in the
    result."""
    import cv2

    cv2.setNumThreads(1)
    project = Project(settings.project)
    video = project.raw / chunk.video
    began = time.perf_counter()
    result = ChunkResult(chunk, frames=chunk.stop - chunk.start)
    try:
        result.rois, result.counts, result.warning = process_chunk(
            read,
            chunk,
            settings,
            project.outputs(chunk.name),
            artefacts=result.artefacts,
        )
    except PartialChunkError as error:  # outputs hold the ROIs before the bad frame
        result.error = str(error)
    except Exception as error:  # a bug or bad data: record it, keep the batch going
        result.error = f"{video}: chunk {chunk.index}: {error!r}\n{traceback.format_exc()}"
    result.seconds = time.perf_counter() - began
    record = asdict(chunk) | {
        "warning": result.warning,
        "rois": result.rois,
        "counts": result.counts,
        "artefacts": result.artefacts,
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
    #: folders in raw/ left alone: neither frames nor read for videos (shown as warnings)
    left_alone: list[str] = field(default_factory=list)


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
    project.check()
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
    if settings.classify:
        _log_classifier(settings)
    others = project.not_videos()
    if others:
        log.info(
            "raw/: left alone, not a video (%s) or a folder of frames: %s",
            " ".join(VIDEO_SUFFIXES),
            ", ".join(p.name for p in others),
        )
    for folder in (p for p in others if p.is_dir()):  # e.g. raw/dive1/ holding videos
        report.left_alone.append(
            f"raw/{folder.name}/ holds no frames: left alone (videos are read from raw/ "
            "itself, one project per dive or folder)"
        )
        log.warning(report.left_alone[-1])
    todo: list[Chunk] = []
    total_frames = done_frames = 0
    named: dict[str, str] = {}  # output names' stem -> the video that has it
    for video in project.videos():
        try:
            pipeline.claim_output_names(named, str(video), video.name)
            chunks = plan_video(video, settings)
        except Exception as error:  # unreadable/empty video: record, go on
            message = str(error) if isinstance(error, VideoError) else f"{video}: {error!r}"
            project.mark_failed(video.name, {"video": str(video), "error": message})
            report.failures.append(message)
            log.error(message)
            continue
        for chunk in chunks:
            total_frames += chunk.stop - chunk.start
            if _skip(project, chunk, retry_failed):
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
            if result.warning:
                log.warning("chunk %s: %s", result.chunk.name, result.warning)
            log.info(
                "chunk %s: %d frames, %d ROIs in %.1f s%s",
                result.chunk.name,
                result.frames,
                result.rois,
                result.seconds,
                "; sensor artefacts left out: "
                + ", ".join(f"{k} {v}" for k, v in sorted(result.artefacts.items()))
                if result.artefacts
                else "",
            )
        if on_progress:
            on_progress(result, result.frames)
    report.seconds = time.perf_counter() - began
    write_summary(project, settings.workers)
    return report


def _log_classifier(settings: BatchSettings) -> None:
    """Which model classifies the run and the size gate in force (the log answers "why
    are these ROIs below_model_size?"); a bad model folder is reported by the chunks."""
    from plankline.model.card import read_model_card
    from plankline.model.infer import DEFAULT_MODEL_DIR

    try:
        card = read_model_card(settings.model or DEFAULT_MODEL_DIR)
    except (OSError, ValueError):
        return
    own = settings.classify_min_px is None
    log.info(
        "classifier %s: size gate %d px (%s)",
        card.folder,
        pipeline.size_gate(card, settings),
        "the model's own" if own else "classify_min_px",
    )


def _skip(project: Project, chunk: Chunk, retry_failed: bool) -> bool:
    """Whether a resumed run leaves ``chunk`` as it is.

    Done chunks are skipped, and failed ones unless ``retry_failed``. A retry also redoes a
    chunk done *with a warning*: its data ended (unreadable) inside an object leaving the
    chunk, so that object is missing from a chunk that is otherwise complete; once the
    video is repaired the retry finds it.
    """
    if project.is_done(chunk.name):
        return not (retry_failed and (project.done_record(chunk.name) or {}).get("warning"))
    return project.has_failed(chunk.name) and not retry_failed


MAX_RUN = 4
"""Most consecutive chunks a pool worker takes at once (:func:`run_chunks`): with H.264's
keyframe every 250 frames and chunks of 100, a run's one seek decodes ~125 frames for
400 (each chunk alone: ~250 for 100); more would coarsen progress and load balance."""


def chunk_runs(todo: Sequence[Chunk], longest: int) -> list[list[Chunk]]:
    """``todo`` cut into runs of consecutive chunks of one video (:func:`iter_chunks`), at
    most ``longest`` chunks each."""
    runs: list[list[Chunk]] = []
    for chunk in todo:
        last = runs[-1][-1] if runs else None
        if (
            last is None
            or len(runs[-1]) >= longest
            or (last.video, last.index + 1) != (chunk.video, chunk.index)
        ):
            runs.append([])
        runs[-1].append(chunk)
    return runs


def _map_chunks(todo: list[Chunk], settings: BatchSettings) -> Iterator[ChunkResult]:
    """Results as chunks finish; one process per worker, a few runs of consecutive chunks
    in flight each (results come per run)."""
    if settings.workers == 1 or len(todo) <= 1:
        for run in chunk_runs(todo, len(todo)):
            yield from iter_chunks(run, settings)
        return
    # at most MAX_RUN chunks a run, and every worker gets two runs
    longest = max(1, min(MAX_RUN, math.ceil(len(todo) / (2 * settings.workers))))
    # workers die with this process (kill -9 included): no idle orphans holding ~0.5 GB each
    with worker_pool(settings.workers) as pool:
        pending: set[Future[list[ChunkResult]]] = set()
        queue = iter(chunk_runs(todo, longest))
        for run in queue:
            pending.add(pool.submit(run_chunks, run, settings))
            if len(pending) >= 2 * settings.workers:
                break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield from future.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(run_chunks, nxt, settings))


SUMMARY_ROIS_PER_WORKER = 200_000
"""ROIs per worker from which the summary reads the chunks' tables in a pool: ~3 s of
reading each at ~15 us a ROI, against ~1 s to start a worker (16 chunks of 3,300 ROIs:
0.6 s inline, 1.4 s in a pool of 2; 16 of 55,000: 14.5-14.9 s inline, 9.1-9.8 s in a pool
of 2 on this 2-core machine)."""


def write_summary(project: Project, workers: int = 1) -> None:
    """Per-chunk table and counts per class per second of video, from the done markers and
    the chunks' tables, read by ``workers`` processes when there are enough ROIs."""
    records = list(project.done_records())
    rois = sum(int(r.get("rois", 0)) for r in records)
    if workers <= 1 or rois < SUMMARY_ROIS_PER_WORKER * workers:
        pipeline.write_summary(project.summary, records, project.outputs)
        return
    with worker_pool(workers) as pool:
        chunksize = max(1, len(records) // (4 * workers))
        pipeline.write_summary(
            project.summary, records, project.outputs, partial(pool.map, chunksize=chunksize)
        )


def configure_logging(project: Path) -> None:
    """Log to ``plankline.log`` in the project (the console shows the progress bar)."""
    project.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(project / "plankline.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("plankline")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.info("pid %d started", os.getpid())
