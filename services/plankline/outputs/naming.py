"""Deterministic names for chunks and ROIs, derived from the video's own timestamp.

ISIIS writes one AVI per ~minute, named by its start time with milliseconds,
e.g. ``20180706170805.476.avi``. The seed's ``pull_images`` matches a
classification CSV to its ROI tar by that numeric timestamp, so every chunk we
cut from a video is named by **its own** start time in the same format:

>>> chunk_name("20180706170805.476", 1, 411, 13.7)
'20180706170835.476'

Videos not named by a timestamp get ``<stem>-c<index:04d>`` for every chunk,
chunk 0 included, so that all chunks of such a video sort and glob alike
(``<stem>-c*.tar``).

ROI ids embed chunk, frame, line (row in the continuous line-scan image,
counted from the start of the video), column and index, so any ROI can be
traced back to the pixels it came from; they contain no spaces and are unique
within a chunk (and across a video). Names are pure functions of their inputs,
so a retried step overwrites instead of duplicating.
"""

from __future__ import annotations

import os
import re
import unicodedata
import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np

__all__ = [
    "RoiRef",
    "chunk_name",
    "date_time_texts",
    "format_timestamp",
    "frame_time",
    "parse_roi_id",
    "parse_timestamp",
    "roi_id",
    "roi_ids",
    "safe_stem",
]

#: ``YYYYmmddHHMMSS.mmm`` anywhere in a name, not glued to other digits.
_TS_SEARCH = re.compile(r"(?<![0-9])([0-9]{14})\.([0-9]{3})(?![0-9])")
_TS_FULL = re.compile(r"([0-9]{14})\.([0-9]{3})")
_ROI_ID = re.compile(
    r"^(?P<chunk>.+)_f(?P<frame>[0-9]{6,})_l(?P<line>[0-9]{8,})"
    r"_x(?P<column>[0-9]{5,})_r(?P<index>[0-9]{4,})$"
)
_BAD_NAME_CHARS = re.compile(r"[\s/\\]")


_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_STEM_MAX = 150  # a ROI id adds ~45 characters; S3 and Kafka keys stay short


def safe_stem(name: str) -> str:
    """A file name stem as chunk names and ROI ids can carry it.

    Ids hold ``[A-Za-z0-9._-]`` only (they become file names in tars and zips, S3 and
    Kafka keys and EcoTaxa object ids): accents are dropped (``Ü`` -> ``U``), every other
    run of characters becomes one ``_``, and a name left empty gets a hash of itself.
    ``Überfahrt Station #3 (tow 1)`` failed its whole video before; now it is
    ``Uberfahrt_Station_3_tow_1``. ISIIS stamps (digits and dots) pass unchanged.

    >>> safe_stem("cast[2]_20240611T101500")
    'cast_2_20240611T101500'
    """
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    # one "_" for a run, none beside an "_" already there
    safe = _UNSAFE_RUN.sub(lambda m: "_" * ("_" not in _beside(plain, m)), plain)
    safe = safe.strip("_.-")[:_SAFE_STEM_MAX].rstrip("_.-")
    return safe or f"video-{zlib.crc32(name.encode('utf-8', 'surrogateescape')):08x}"


def _beside(text: str, m: re.Match[str]) -> str:
    return text[max(m.start() - 1, 0) : m.start()] + text[m.end() : m.end() + 1]


def _to_datetime(digits: str, millis: str) -> datetime | None:
    try:
        return datetime.strptime(digits, "%Y%m%d%H%M%S") + timedelta(milliseconds=int(millis))
    except ValueError:  # e.g. month 13: digits that are not a date
        return None


def parse_timestamp(name: str | os.PathLike[str]) -> datetime | None:
    """Return the ISIIS timestamp (``%Y%m%d%H%M%S.%f``, milliseconds) found in a file name.

    Looks at the base name only and accepts anything around the stamp, so
    ``raw/20180706170805.476.avi``, ``20180706170805.476-library_bigcam.csv``
    and ``20180706170805.476.tar.gz`` all give 2018-07-06 17:08:05.476.

    Parameters
    ----------
    name : str or path-like
        File name, stem or path.

    Returns
    -------
    datetime or None
        None when the name holds no valid timestamp.
    """
    m = _TS_SEARCH.search(os.path.basename(os.fspath(name)))
    return _to_datetime(m.group(1), m.group(2)) if m else None


def format_timestamp(t: datetime) -> str:
    """Format a time as an ISIIS name stamp, ``YYYYmmddHHMMSS.mmm`` (rounded to ms)."""
    ms = round(t.microsecond / 1000)
    t = t.replace(microsecond=0) + timedelta(milliseconds=ms)
    return f"{t:%Y%m%d%H%M%S}.{t.microsecond // 1000:03d}"


def _stem_time(video_stem: str) -> datetime | None:
    m = _TS_FULL.fullmatch(video_stem)
    return _to_datetime(m.group(1), m.group(2)) if m else None


def _check_fps(fps: float | None) -> None:
    if fps is not None and not (fps > 0 and fps < float("inf")):
        raise ValueError(f"fps must be a positive finite number or None, got {fps!r}")


def chunk_name(video_stem: str, chunk_index: int, start_frame: int, fps: float | None) -> str:
    """Name a chunk of a video: its own start time for ISIIS names, else ``<stem>-c<index>``.

    Parameters
    ----------
    video_stem : str
        Video file name without extension, e.g. ``"20180706170805.476"``.
    chunk_index : int
        0-based chunk number within the video.
    start_frame : int
        Index of the chunk's first frame within the video.
    fps : float or None
        Frame rate; None when unknown (then timestamp arithmetic is impossible).

    Returns
    -------
    str
        ``video time + start_frame / fps`` formatted like the stem (chunk 0 is
        the stem itself) when the stem is exactly a timestamp and fps is known;
        otherwise ``f"{video_stem}-c{chunk_index:04d}"``.

    Examples
    --------
    >>> chunk_name("20180706170805.476", 0, 0, 13.7)
    '20180706170805.476'
    >>> chunk_name("dive3_cam1", 0, 0, 13.7)
    'dive3_cam1-c0000'
    """
    if not video_stem or _BAD_NAME_CHARS.search(video_stem):
        raise ValueError(
            f"video_stem must be a non-empty name without spaces or /, got {video_stem!r}"
        )
    if chunk_index < 0 or start_frame < 0:
        raise ValueError(
            f"chunk_index and start_frame must be >= 0, got {chunk_index} and {start_frame}"
        )
    _check_fps(fps)
    t0 = _stem_time(video_stem)
    if t0 is None or fps is None:
        return f"{video_stem}-c{chunk_index:04d}"
    # Integer milliseconds: no float drift over thousands of chunks.
    return format_timestamp(t0 + timedelta(milliseconds=round(start_frame * 1000 / fps)))


def frame_time(video_stem: str, frame: int, fps: float | None) -> datetime | None:
    """Wall-clock time of a frame: video start (from its ISIIS name) + frame / fps.

    Returns None when the stem is not a timestamp or fps is unknown. Used for
    ``object_date``/``object_time`` in EcoTaxa exports and counts per second.
    """
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}")
    _check_fps(fps)
    t0 = _stem_time(video_stem)
    if t0 is None or fps is None:
        return None
    return t0 + timedelta(microseconds=round(frame * 1_000_000 / fps))


def date_time_texts(stamps: np.ndarray) -> tuple[list[str], list[str]]:
    """``YYYYMMDD`` and ``HHMMSS`` of every ``datetime64`` stamp (NaT: empty), each distinct
    second formatted once.

    The text of ``f"{t:%Y%m%d}"`` and ``f"{t:%H%M%S}"`` per stamp (EcoTaxa's
    ``object_date``/``object_time``), without a ``datetime`` and two ``strftime`` calls per
    ROI: a chunk of real footage holds ~20,000 ROIs in a few seconds of video.

    >>> date_time_texts(np.array(["2018-07-06T17:08:05.476", "NaT"], "datetime64[ms]"))
    (['20180706', ''], ['170805', ''])
    """
    stamps = np.asarray(stamps)
    if stamps.ndim != 1 or stamps.dtype.kind != "M":
        raise ValueError(
            f"stamps must be a 1-D datetime64 array, got {stamps.dtype} {stamps.shape}"
        )
    seconds, inverse = np.unique(stamps.astype("datetime64[s]"), return_inverse=True)
    dates = np.empty(len(seconds) + 1, dtype=object)
    times = np.empty(len(seconds) + 1, dtype=object)
    for i, t in enumerate(seconds.tolist()):  # datetime, or None for NaT
        dates[i], times[i] = ("", "") if t is None else (f"{t:%Y%m%d}", f"{t:%H%M%S}")
    return dates[inverse].tolist(), times[inverse].tolist()


def roi_id(chunk: str, frame: int, line: int, column: int, index: int) -> str:
    """Identifier of one ROI, traceable to its pixels: ``<chunk>_f<frame>_l<line>_x<col>_r<idx>``.

    Parameters
    ----------
    chunk : str
        Chunk name (see :func:`chunk_name`); no spaces or slashes.
    frame : int
        Frame index within the video where the ROI's top edge lies.
    line : int
        Row of the ROI's top edge in the video's continuous line-scan image.
    column : int
        Column of the ROI's left edge.
    index : int
        Running ROI number within the chunk (makes the id unique even when two
        ROIs share a corner).

    Examples
    --------
    >>> roi_id("20180706170805.476", 12, 24576, 1234, 3)
    '20180706170805.476_f000012_l00024576_x01234_r0003'
    """
    if not chunk or _BAD_NAME_CHARS.search(chunk):
        raise ValueError(f"chunk must be a non-empty name without spaces or /, got {chunk!r}")
    for field, v in (("frame", frame), ("line", line), ("column", column), ("index", index)):
        if int(v) != v or v < 0:
            raise ValueError(f"roi_id: {field} must be a non-negative integer, got {v!r}")
    return f"{chunk}_f{int(frame):06d}_l{int(line):08d}_x{int(column):05d}_r{int(index):04d}"


def roi_ids(
    chunk: str,
    frame: np.ndarray | Sequence[int],
    line: np.ndarray | Sequence[int],
    column: np.ndarray | Sequence[int],
) -> list[str]:
    """:func:`roi_id` of every ROI of a chunk, indexed 0, 1, 2... in order.

    The same strings as calling :func:`roi_id` once per ROI, checked once for the
    whole chunk (a chunk of real footage has tens of thousands of ROIs, and the
    per-call checks cost more than the formatting).

    >>> roi_ids("20180706170805.476", [12, 12], [24576, 24580], [1234, 7])[1]
    '20180706170805.476_f000012_l00024580_x00007_r0001'
    """
    if not chunk or _BAD_NAME_CHARS.search(chunk):
        raise ValueError(f"chunk must be a non-empty name without spaces or /, got {chunk!r}")
    cols = {"frame": frame, "line": line, "column": column}
    values = {}
    for field, v in cols.items():
        a = np.asarray(v)
        if a.ndim != 1 or (a.size and (a.dtype.kind not in "iu" or a.min() < 0)):
            raise ValueError(f"roi_ids: {field} must be non-negative integers, got {a!r}")
        values[field] = a.tolist()
    n = {len(v) for v in values.values()}
    if len(n) > 1:
        raise ValueError(f"roi_ids: frame, line and column differ in length: {sorted(n)}")
    return [
        f"{chunk}_f{f:06d}_l{li:08d}_x{c:05d}_r{i:04d}"
        for i, (f, li, c) in enumerate(
            zip(values["frame"], values["line"], values["column"], strict=True)
        )
    ]


class RoiRef(NamedTuple):
    """The parts of a ROI id."""

    chunk: str
    frame: int
    line: int
    column: int
    index: int


def parse_roi_id(rid: str) -> RoiRef | None:
    """Split an id made by :func:`roi_id` (file names with extension too); None if not one."""
    base = os.path.basename(rid)
    stem, ext = os.path.splitext(base)
    m = _ROI_ID.match(stem if ext.lower() in {".png", ".jpg", ".jpeg"} else base)
    if m is None:
        return None
    return RoiRef(m["chunk"], int(m["frame"]), int(m["line"]), int(m["column"]), int(m["index"]))
