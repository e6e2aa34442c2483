"""One chunk of video, read as a method section: decode -> flat-field -> segment ->
measure -> classify -> write. The batch CLI and the streaming services both call
these steps, so the same video gives the same outputs either way.

A chunk is frames ``[start, stop)`` of one video. An object belongs to the chunk
holding its top line; finishing an object that leaves the chunk reads frames
past ``stop``, and one frame before ``start`` is read so objects reaching in
from above are recognised as the previous chunk's.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from plankline.config import PipelineSettings
from plankline.imaging.flatfield import FlatField
from plankline.imaging.measure import measure_rois
from plankline.imaging.segment import Rois, SegmentParams, segment_stream
from plankline.imaging.video import VIDEO_SUFFIXES, FrameError, VideoError
from plankline.outputs.ecotaxa import write_ecotaxa_zip
from plankline.outputs.naming import chunk_name, parse_timestamp, roi_ids, safe_stem
from plankline.outputs.rois import Image, encode_images, write_roi_tar
from plankline.outputs.tables import write_csv

FrameReader = Callable[[int, int | None], Iterator[tuple[int, np.ndarray]]]
"""``read(start, stop)`` yields ``(frame_index, frame)`` of one video (stop None = to the end)."""

OUTPUT_KINDS = ("rois", "measurements", "classification", "ecotaxa")
STAGES = ("decode", "flatfield", "segment", "measure", "encode", "classify", "write")


@dataclass
class StageTimes:
    """Seconds spent in each step of the method, each step counted without the steps
    it calls (segmentation pulls flat-fielded frames, flat-fielding pulls decoded ones).

    The steps are lazy generators feeding each other, so a plain timer around
    ``find_rois`` could not tell decoding from segmentation; a stack of open
    stages charges every interval to the innermost one. Cost: two ``perf_counter``
    calls per stage entry (a few per frame, none per ROI).

    Examples
    --------
    >>> times = StageTimes()
    >>> with times.stage("decode"):
    ...     pass
    >>> sorted(times.seconds) == sorted(STAGES)
    True
    """

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    _open: list[str] = field(default_factory=list)
    _mark: float = 0.0

    def _charge(self) -> None:
        now = time.perf_counter()
        if self._open:
            self.seconds[self._open[-1]] += now - self._mark
        self._mark = now

    def stage(self, name: str) -> AbstractContextManager[None]:
        """Context manager charging the time inside it (less nested stages) to ``name``."""
        if name not in self.seconds:
            raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
        return _Stage(self, name)

    def iterate(self, name: str, items: Iterable[Any]) -> Iterator[Any]:
        """Yield from ``items``, charging the time spent producing each item to ``name``."""
        it = iter(items)
        while True:
            with self.stage(name):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    def add(self, other: StageTimes) -> None:
        """Add another run's seconds (e.g. the next chunk's) into these."""
        for k, v in other.seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v


class _Stage:
    __slots__ = ("name", "times")

    def __init__(self, times: StageTimes, name: str) -> None:
        self.times, self.name = times, name

    def __enter__(self) -> None:
        self.times._charge()
        self.times._open.append(self.name)

    def __exit__(self, *exc: object) -> None:
        self.times._charge()
        self.times._open.pop()


def _stage(times: StageTimes | None, name: str) -> AbstractContextManager[None]:
    return nullcontext() if times is None else times.stage(name)


def one_core() -> None:
    """Keep this process on one core: OpenCV and the BLAS library single-threaded.

    A chunk is one core's work (the batch runs one process per core, the stream one
    service replica per core). Left alone, OpenBLAS spreads even the flat-field's tiny
    row-block products (64 x 3 by 3 x 2048) over every core: on a loaded 2-core
    machine that made the ``both`` flat-field 10x slower (2.5 vs 25 frames/s, same
    run), the threads waiting for each other and for the other workers.
    """
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    global _ONE_CORE
    if not _ONE_CORE:
        threadpool_limits(limits=1, user_api="blas")
        _ONE_CORE = True


_ONE_CORE = False


@dataclass(frozen=True)
class Chunk:
    """Frames [start, stop) of the video ``video`` (its file or folder name)."""

    video: str
    index: int
    start: int
    stop: int
    name: str
    fps: float | None
    frame_height: int


def plan_chunks(
    video: str, n_frames: int, frame_height: int, fps: float | None, chunk_frames: int
) -> list[Chunk]:
    """Split a video of ``n_frames`` into chunks named by their own start time."""
    stem = video_stem(video)
    return [
        Chunk(
            video,
            index,
            start,
            min(start + chunk_frames, n_frames),
            chunk_name(stem, index, start, fps),
            fps,
            frame_height,
        )
        for index, start in enumerate(range(0, n_frames, chunk_frames))
    ]


def video_stem(video: str) -> str:
    """``20180706170805.476.avi`` -> ``20180706170805.476``; a frame folder keeps its name;
    what ids cannot hold is replaced (:func:`~plankline.outputs.naming.safe_stem`)."""
    path = Path(video)
    return safe_stem(path.stem if path.suffix.lower() in VIDEO_SUFFIXES else path.name)


def claim_output_names(named: dict[str, str], video: str, name: str) -> str:
    """The stem of video file ``name`` (its outputs' names), recorded in ``named`` (stem ->
    the file that has it); a stem already there raises ``VideoError`` naming both files,
    so no video's outputs are written over another's (batch and stream)."""
    stem = video_stem(name)
    if stem in named:
        raise VideoError(
            video,
            None,
            f"its outputs would be named {stem!r} as those of {named[stem]}: rename one of them",
        )
    named[stem] = name
    return stem


def segment_params(settings: PipelineSettings) -> SegmentParams:
    """SegmentParams from the settings; unset fields keep the library's defaults."""
    names = (
        "method",
        "threshold",
        "k_high",
        "k_low",
        "min_area_px",
        "max_area_px",
        "pixel_size_um",
        "min_esd_um",
        "max_esd_um",
        "padding",
    )
    chosen = {n: getattr(settings, n) for n in names if getattr(settings, n) is not None}
    return SegmentParams(**chosen)


# --- decode, flat-field, segment -------------------------------------------------


def flatfielded_frames(
    read: FrameReader,
    chunk: Chunk,
    settings: PipelineSettings,
    times: StageTimes | None = None,
    flat: FlatField | None = None,
    skipped: list[VideoError] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The chunk's frames flat-fielded, from one frame before it on, read lazily.

    The background estimate is primed from the frames just before the chunk (or
    its own first frames for chunk 0), so its first frame is corrected as well
    as its tenth. ``flat``: a new ``FlatField`` of the settings' mode to use (the
    caller keeps it to read its artefact counts); default, one made here.
    Frames that cannot be read are stepped over (see :func:`_readable_frames`) and
    appended to ``skipped``; segmentation closes its objects at the gap.
    """
    if times is not None:
        read = _timed_reader(read, times)
    if flat is None:
        flat = new_flatfield(settings)
    if settings.prime_frames:
        prime_start = max(0, chunk.start - settings.prime_frames)
        with _stage(times, "flatfield"):
            flat.prime(_good_frames(read, prime_start, prime_start + settings.prime_frames))
    before = max(0, chunk.start - 1)
    frames = _readable_frames(read, before, None, [] if skipped is None else skipped, before)
    for index, frame in frames:
        flat.count_artefacts = chunk.start <= index < chunk.stop
        with _stage(times, "flatfield"):
            corrected = flat.correct(frame)
        yield index, corrected


def new_flatfield(settings: PipelineSettings) -> FlatField:
    """The settings' flat-field (mode and polarity), fresh for one chunk."""
    return FlatField(mode=settings.flatfield, polarity=settings.polarity)


def _timed_reader(read: FrameReader, times: StageTimes) -> FrameReader:
    def timed(start: int, stop: int | None) -> Iterator[tuple[int, np.ndarray]]:
        return times.iterate("decode", read(start, stop))

    return timed


def _readable_frames(
    read: FrameReader, start: int, stop: int | None, skipped: list[VideoError], context: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Frames ``[start, stop)``, stepping over those that cannot be read, each appended to
    ``skipped``: a frame folder's file (:class:`FrameError`: the next file is its own),
    and the frame before the chunk (``context``) of any source, which the previous chunk
    reports as its own; without it the chunk drops the objects touching its top edge
    (``segment_stream``), as a first chunk would. Any other error ends the read."""
    nxt = start
    while stop is None or nxt < stop:
        try:
            for index, frame in read(nxt, stop):
                nxt = index + 1
                yield index, frame
            return
        except VideoError as error:
            bad = error.frame
            if bad is None or bad < nxt or not (isinstance(error, FrameError) or bad == context):
                raise
            skipped.append(error)
            nxt = bad + 1


def _good_frames(read: FrameReader, start: int, stop: int) -> Iterator[np.ndarray]:
    """Frames up to the first one that stops the read: priming must not fail a chunk for
    a frame it does not own (the chunk owning that frame reports it)."""
    try:
        for _, frame in _readable_frames(read, start, stop, [], -1):
            yield frame
    except VideoError:
        return


def find_rois(
    read: FrameReader,
    chunk: Chunk,
    settings: PipelineSettings,
    times: StageTimes | None = None,
) -> tuple[Rois, str | None]:
    """The chunk's ROIs, and a warning when data ended inside an object leaving the chunk
    or frames of a frame folder it owns could not be read (left out, each named).

    Runs on one core (:func:`one_core`). Raises ``PartialChunkError`` (holding the ROIs
    found before it) when a frame the chunk owns cannot be decoded, so nothing already
    found is lost. ``times``, when given, receives the seconds of decode, flat-field
    and segmentation.
    """
    one_core()
    found: list[Rois] = []
    flat = new_flatfield(settings)
    skipped: list[VideoError] = []
    frames = flatfielded_frames(read, chunk, settings, times, flat, skipped)
    batches = segment_stream(
        frames, segment_params(settings), first_owned=chunk.start, stop_owned=chunk.stop
    )
    if times is not None:
        batches = times.iterate("segment", batches)
    warnings = []
    try:
        for rois in batches:
            found.append(rois)
    except VideoError as error:
        if error.frame is None or error.frame < chunk.stop:
            raise PartialChunkError(str(error), _with_flat(Rois.concat(found), flat)) from error
        warnings.append(str(error))
    lost = [e for e in skipped if e.frame is not None and chunk.start <= e.frame < chunk.stop]
    if lost:  # each named, up to a few: a folder of 500 broken files is one line, not 500
        named = "; ".join(map(str, lost[:NAMED_LOST]))
        more = f"; and {len(lost) - NAMED_LOST} more" if len(lost) > NAMED_LOST else ""
        warnings.insert(0, f"{len(lost)} unreadable frame(s) left out: {named}{more}")
    return _with_flat(Rois.concat(found), flat), "; ".join(warnings) or None


def _with_flat(rois: Rois, flat: FlatField) -> Rois:
    """``rois`` with the flat-field's artefact counts beside the segmentation's."""
    rois.artefacts = {**rois.artefacts, **flat.artefacts()}
    return rois


NAMED_LOST = 5
"""Unreadable frames a chunk's warning names (it counts them all)."""


class PartialChunkError(ValueError):
    """A frame of the chunk is unreadable; ``rois`` holds what was found before it."""

    def __init__(self, message: str, rois: Rois) -> None:
        super().__init__(message)
        self.rois = rois


# --- measure, classify -------------------------------------------------------------


def measure_chunk(chunk: Chunk, rois: Rois, settings: PipelineSettings) -> dict[str, Any]:
    """One row per ROI: identity, position, time, and the measurement features."""
    table = describe_rois(chunk, rois)
    table.update(measure_rois(rois.crops, rois.masks, pixel_size_um=settings.pixel_size_um))
    return table


def describe_rois(chunk: Chunk, rois: Rois) -> dict[str, Any]:
    """Identity and position columns that tie every ROI to video, frame, line and time."""
    n = len(rois)
    ids = np.empty(n, dtype=object)
    ids[:] = roi_ids(chunk.name, rois.frame, rois.line, rois.column)
    columns: dict[str, Any] = {
        "image": ids,
        "video": np.full(n, chunk.video, dtype=object),
        "chunk": np.full(n, chunk.name, dtype=object),
        "frame": rois.frame,
        "line": rois.line,
        "row": rois.row,
        "column": rois.column,
        "bbox_height": rois.height,
        "bbox_width": rois.width,
    }
    if chunk.fps:
        seconds = rois.line / (chunk.frame_height * chunk.fps)
        columns["seconds"] = seconds
        start = parse_timestamp(video_stem(chunk.video))
        if start is not None:
            columns["time"] = iso_times(start, seconds)
    return columns


def iso_times(start: datetime, seconds: np.ndarray) -> np.ndarray:
    """``(start + seconds).isoformat(timespec="milliseconds")`` of every value, at once.

    numpy's datetime64 does the arithmetic and the text for the whole chunk (20x faster
    than a ``timedelta`` per ROI); offsets are rounded to the microsecond as
    ``timedelta(seconds=s)`` rounds them, and the milliseconds truncated as
    ``isoformat`` truncates them.
    """
    micros = np.round(np.asarray(seconds, np.float64) * 1e6).astype(np.int64)
    stamps = np.datetime64(start, "us") + micros.astype("timedelta64[us]")
    out = np.empty(len(micros), dtype=object)
    out[:] = np.datetime_as_string(stamps, unit="ms").tolist()
    return out


def capture_stamps(start: datetime, seconds: np.ndarray) -> np.ndarray:
    """:func:`capture_times` as a ``datetime64[us]`` array (what the EcoTaxa writer formats
    once per distinct second)."""
    micros = np.round(np.asarray(seconds, np.float64) * 1e6).astype(np.int64)
    return np.datetime64(start, "us") + micros.astype("timedelta64[us]")


def capture_times(start: datetime, seconds: np.ndarray) -> list[datetime]:
    """``start + timedelta(seconds=s)`` of every value, at once (the EcoTaxa export's
    ``object_date``/``object_time``): numpy's datetime64 arithmetic, rounded to the
    microsecond as :func:`iso_times` (and ``timedelta``) rounds, turned into ``datetime``
    objects by one ``tolist`` instead of a ``timedelta`` and an addition per ROI."""
    micros = np.round(np.asarray(seconds, np.float64) * 1e6).astype(np.int64)
    stamps = np.datetime64(start, "us") + micros.astype("timedelta64[us]")
    return stamps.tolist()


def load_classifier(settings: PipelineSettings) -> Any:
    """The settings' model, loaded once per process, one thread (one process per core)."""
    from plankline.model.infer import shared_classifier

    return shared_classifier(settings.model, threads=1)


def size_gate(model: Any, settings: PipelineSettings) -> int:
    """The size gate in force: ``classify_min_px``, or when unset the model's own
    (:attr:`plankline.model.card.ModelCard.min_object_px`). ``model``: a loaded
    classifier, the stream's Triton client or a model card."""
    if settings.classify_min_px is not None:
        return settings.classify_min_px
    return getattr(model, "card", model).min_object_px


def classify_rois(model: Any, rois: Rois, settings: PipelineSettings) -> np.ndarray:
    """Class probabilities of a chunk's ROIs, those under the size gate (:func:`size_gate`)
    left out of the network (class ``below_model_size``,
    :func:`plankline.model.infer.predict_gated`).

    ``model``: a loaded classifier or the stream's Triton client; the batch CLI and the
    stream's classifier both call this, so their tables are the same.
    """
    from plankline.model.infer import predict_gated

    gate = size_gate(model, settings)
    return predict_gated(model, rois.crops, rois.height, rois.width, gate)


def class_columns(
    model: Any, settings: PipelineSettings
) -> tuple[list[str], dict[str, float | None] | None]:
    """Class names and thresholds of :func:`classify_rois`'s columns (the model's, and
    ``below_model_size`` when the size gate is on)."""
    from plankline.model.infer import gated_classes

    return gated_classes(model.class_names, model.thresholds, size_gate(model, settings))


# --- write -------------------------------------------------------------------------


def write_outputs(
    paths: Mapping[str, Path],
    chunk: Chunk,
    images: Sequence[Image],
    table: Mapping[str, Any],
    settings: PipelineSettings,
    probs: np.ndarray | None = None,
    class_names: list[str] | None = None,
    thresholds: Mapping[str, float | None] | None = None,
    times: StageTimes | None = None,
) -> None:
    """The chunk's ROI tar, measurements CSV, classification CSV and EcoTaxa zip.

    ``images`` are the crops in ``table`` order, as pixels or already encoded in
    ``settings.image_format`` (the stream's collector passes the segmenter's
    bytes); each is encoded once for both the tar and the zip. ``times``, when
    given, receives the seconds of encoding and of writing.
    """
    ids = list(table["image"])
    imaged = archive_time(chunk)
    with _stage(times, "encode"):
        images = encode_images(ids, images, settings.image_format)
    with _stage(times, "write"):
        write_roi_tar(
            paths["rois"],
            ids,
            images,
            fmt=settings.image_format,
            mtime=None if imaged is None else imaged.replace(tzinfo=UTC).timestamp(),
        )
        write_csv(paths["measurements"], table)
        predicted = None
        if probs is not None and class_names is not None:
            from plankline.model.infer import write_classification_csv

            write_classification_csv(
                paths["classification"], ids, probs, class_names, thresholds=thresholds
            )
            predicted = [class_names[k] for k in probs.argmax(axis=1)] if len(ids) else []
        start = parse_timestamp(video_stem(chunk.video))
        write_ecotaxa_zip(
            paths["ecotaxa"],
            object_ids=ids,
            images=images,
            measurements={
                k: v for k, v in table.items() if k not in ("image", "video", "chunk", "time")
            },
            datetimes=capture_stamps(start, table["seconds"])
            if start is not None and "seconds" in table
            else None,
            lat=settings.lat,
            lon=settings.lon,
            depth=settings.depth_m,
            sample_id=video_stem(chunk.video),
            acq_id=chunk.name,
            predicted=predicted,
            pixel_size_um=settings.pixel_size_um,
            image_format=settings.image_format,
            member_time=imaged,
        )


def archive_time(chunk: Chunk) -> datetime | None:
    """The time the chunk's ROI tar and EcoTaxa zip give their members: when its first frame
    was imaged (the timestamp in its name, taken as UTC), so the same video gives the same
    bytes on every run, resumed or not, and from the stream. None (the time of writing) for
    names without a timestamp or one a zip cannot hold (before 1980)."""
    stamp = parse_timestamp(chunk.name)
    return stamp if stamp is not None and 1980 <= stamp.year <= 2107 else None


def process_chunk(
    read: FrameReader,
    chunk: Chunk,
    settings: PipelineSettings,
    paths: Mapping[str, Path],
    times: StageTimes | None = None,
    artefacts: dict[str, int] | None = None,
) -> tuple[int, dict[str, int], str | None]:
    """The whole method on one chunk; returns (ROIs, counts per class, warning).

    Raises ``PartialChunkError`` after writing the outputs of the ROIs found before
    an unreadable frame the chunk owns. ``times``, when given, receives the seconds
    of every stage (:data:`STAGES`); ``scripts/bench_cli.py`` prints them.
    ``artefacts``, when given, receives the sensor artefacts recognised and left out
    (column streaks and flicker bands dropped by the segmentation, stuck columns and
    flickering lines repaired by the flat-field, priming frames included) for the
    batch's log and done marker.
    """
    partial: PartialChunkError | None = None
    try:
        rois, warning = find_rois(read, chunk, settings, times)
    except PartialChunkError as error:
        partial, rois, warning = error, error.rois, None
    if artefacts is not None:
        artefacts.update({k: int(v) for k, v in rois.artefacts.items() if v})
    with _stage(times, "measure"):
        table = measure_chunk(chunk, rois, settings)
    counts: dict[str, int] = {}
    if settings.classify:
        with _stage(times, "classify"):
            classifier = load_classifier(settings)
            probs = classify_rois(classifier, rois, settings)
        class_names, thresholds = class_columns(classifier, settings)
        write_outputs(
            paths, chunk, rois.crops, table, settings, probs, class_names, thresholds, times
        )
        names, tally = np.unique(probs.argmax(axis=1), return_counts=True)
        counts = {class_names[k]: int(c) for k, c in zip(names, tally, strict=True)}
    else:
        write_outputs(paths, chunk, rois.crops, table, settings, times=times)
    if partial is not None:
        raise partial
    return len(rois), counts, warning


# --- summary -------------------------------------------------------------------------

SUMMARY_FILES = ("chunks.csv", "counts_per_second.csv")

ChunkMap = Callable[..., Iterable[Any]]
"""``map``, or a process pool's ``map``: how the summary reads the chunks' tables."""


def write_summary(
    folder: Path,
    records: Iterable[Mapping[str, Any]],
    outputs: Callable[[str], Mapping[str, Path]],
    map_chunks: ChunkMap = map,
) -> None:
    """``chunks.csv`` and ``counts_per_second.csv`` of finished chunks into ``folder``.

    The batch CLI (from its done markers and project folders) and ``plankline
    results`` (from the collector's ``done.json`` and the downloaded files) both
    call this, so the two summaries are the same files for the same video.

    Parameters
    ----------
    folder : Path
        Where the two CSVs go (created if missing).
    records : iterable of mapping
        One per finished chunk: ``name, video, start, stop, rois, seconds`` and
        ``fps`` (the done marker); order does not matter, rows are sorted by
        video and first frame.
    outputs : callable
        Chunk name -> its output paths (``measurements``, ``classification``...).
    map_chunks : callable
        ``map`` or a pool's: see :func:`counts_per_second`.
    """
    rows = sorted(records, key=lambda r: (Path(r["video"]).name, r["start"]))
    chunks = {
        "chunk": [r["name"] for r in rows],
        "video": [Path(r["video"]).name for r in rows],
        "start_frame": [r["start"] for r in rows],
        "stop_frame": [r["stop"] for r in rows],
        "rois": [r["rois"] for r in rows],
        "seconds_to_process": [round(r["seconds"], 3) for r in rows],
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "chunks.csv", chunks)
    write_csv(folder / "counts_per_second.csv", counts_per_second(rows, outputs, map_chunks))


def counts_per_second(
    records: Iterable[Mapping[str, Any]],
    outputs: Callable[[str], Mapping[str, Path]],
    map_chunks: ChunkMap = map,
) -> dict[str, list[Any]]:
    """Counts of the ROIs' top classes (``top_class`` of the classification tables, from
    the exact probabilities, as the run's class table) in each whole second of each video,
    and how many of them are ``confident``: their ``thresholded_class`` is that class (the
    top probability reached the class's threshold for 95 % precision), what an ecologist
    counts as identified; the rest are the model's best guesses.

    ``map_chunks`` maps :func:`chunk_counts_per_second` over the chunks: reading the tables
    costs ~15 us a ROI, hours on one core for a cruise's billion ROIs, so the batch CLI
    hands it its worker pool's ``map``.
    """
    timed = [r for r in records if r.get("fps")]
    videos = [Path(r["video"]).name for r in timed]
    paths = [dict(outputs(r["name"])) for r in timed]
    rows: Counter[tuple[str, int, str]] = Counter()
    sure: Counter[tuple[str, int, str]] = Counter()
    counted = map_chunks(chunk_counts_per_second, paths)
    for video, chunk_rows in zip(videos, counted, strict=True):
        for second, name, count, confident in chunk_rows:
            rows[(video, second, name)] += count
            sure[(video, second, name)] += confident
    keys = sorted(rows)
    return {
        "video": [k[0] for k in keys],
        "second": [k[1] for k in keys],
        "time": [str(timedelta(seconds=k[1])) for k in keys],
        "class": [k[2] for k in keys],
        "count": [rows[k] for k in keys],
        "confident": [sure[k] for k in keys],
    }


def chunk_counts_per_second(paths: Mapping[str, Path]) -> list[tuple[int, str, int, int]]:
    """One chunk's ``(second, class, count, confident)`` rows for :func:`counts_per_second`,
    from its measurements and classification tables; none when it has no classes or no
    capture times."""
    from plankline.model.infer import read_top_classes
    from plankline.outputs.tables import read_csv, read_header

    if not paths["classification"].is_file() or "seconds" not in read_header(paths["measurements"]):
        return []
    # only the column it needs: the whole table (~60 columns, types inferred) cost
    # ~30 us a ROI, ten times the counting
    measured = read_csv(paths["measurements"], usecols=["seconds"], dtypes={"seconds": float})
    if len(measured["seconds"]) == 0:
        return []
    top, thresholded = read_top_classes(paths["classification"])
    if len(top) != len(measured["seconds"]):
        raise ValueError(
            f"{paths['classification']}: {len(top)} ROIs, but "
            f"{paths['measurements']} has {len(measured['seconds'])}"
        )
    top = top.astype(str)
    names, k = np.unique(top, return_inverse=True)
    key = np.stack([measured["seconds"].astype(np.int64), k.ravel()])
    pairs, which, counts = np.unique(key, axis=1, return_inverse=True, return_counts=True)
    sure = np.bincount(which.ravel(), weights=top == thresholded.astype(str), minlength=len(counts))
    return [
        (second, str(names[c]), count, int(n))
        for (second, c), count, n in zip(pairs.T.tolist(), counts.tolist(), sure, strict=True)
    ]
