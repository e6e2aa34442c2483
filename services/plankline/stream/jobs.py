"""What the services share about a job: its manifest, its chunks, and the bytes between steps.

A *job* is one ``plankline submit``: some videos, one ``PipelineSettings``. The
ingest writes ``jobs/<job>/manifest.json`` (the settings and every planned
chunk) before it publishes a single message; every service reads the job's
settings from there, so all replicas process a chunk exactly as
``plankline run`` would with the same settings.

Between the steps the chunk's data travels as S3 objects (keys from
:mod:`plankline.stream.contracts`):

- ``rois.tar``: the ROI images in the job's format, as the batch CLI's tar;
- ``rois.npz``: the same crops raw, with their masks (what measurer and
  classifier read); ``positions.csv``: ids and the integer fields of :class:`Rois`;
- ``measurements.npz`` / ``probabilities.npy``: the measurement table and the class
  probabilities, exact and typed; the collector joins them and writes the chunk's CSVs
  (once, under ``results/``) so its files equal batch's.

Sources: a video is one object (uploaded once, or already in the store and
submitted by reference); the segmenter reads the frames a chunk needs from it
by frame index through ranged GETs (``segment_format`` ``whole-video``). A
frame folder travels as one tar per chunk (``frames-tar``) covering frames
``[max(0, start - max(prime, 1)), min(n, max(stop + tail, prime_start + prime)))``
where ``tail = ceil(max_object_lines / frame_height) + 1``: the frames that
prime the flat-field, the one frame of context before the chunk, the chunk,
and enough frames after it to finish any object leaving it (the segmenter cuts
objects at ``max_object_lines``). :class:`SegmentReader` turns either back into
a ``FrameReader`` with GLOBAL frame indices and reports a truncated source as
:class:`VideoError` naming the source video and the first missing frame.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from plankline.config import PipelineSettings
from plankline.imaging.segment import POSITION_FIELDS, Rois
from plankline.imaging.video import ContinuousReader, VideoError, VideoInfo
from plankline.outputs.rois import iter_roi_tar_bytes, write_roi_tar
from plankline.outputs.tables import write_csv
from plankline.pipeline import Chunk, describe_rois, segment_params
from plankline.stream import contracts
from plankline.stream.store import S3Store

SEGMENT_FRAMES_TAR = "frames-tar"
SEGMENT_WHOLE_VIDEO = "whole-video"


# ---------------------------------------------------------------------------- manifest


def tail_frames(settings: PipelineSettings, frame_height: int) -> int:
    """Frames after a chunk that can hold the rest of an object leaving it."""
    return math.ceil(segment_params(settings).max_object_lines / frame_height) + 1


def segment_range(chunk: Chunk, n_frames: int, settings: PipelineSettings) -> tuple[int, int]:
    """Frames ``[first, stop)`` of the source that processing ``chunk`` reads (see module)."""
    prime = settings.prime_frames
    first = max(0, chunk.start - max(prime, 1))
    prime_stop = max(0, chunk.start - prime) + prime
    stop = min(n_frames, max(chunk.stop + tail_frames(settings, chunk.frame_height), prime_stop))
    return first, stop


def write_manifest(
    store: S3Store, job: str, settings: PipelineSettings, videos: list[dict]
) -> None:
    """Record the job: its settings and, per video, its planned chunks.

    Submitting to an existing job adds (or re-plans) videos, but only with the same
    settings: every chunk of a job is processed alike, so other settings need a new job.
    """
    body = {"job": job, "settings": settings.model_dump(mode="json"), "videos": videos}
    try:
        old = read_manifest(store, job, cached=False)
    except KeyError:
        old = None
    if old is not None:
        if old["settings"] != body["settings"]:
            changed = sorted(
                k for k in body["settings"] if old["settings"].get(k) != body["settings"][k]
            )
            raise ValueError(
                f"job {job!r} was submitted with other settings ({', '.join(changed)}); "
                "submit under a new --job name"
            )
        ids = {v["video_id"] for v in videos}
        body["videos"] = [v for v in old["videos"] if v["video_id"] not in ids] + videos
    store.put_bytes(
        contracts.manifest_key(job),
        json.dumps(body, indent=1).encode(),
        content_type="application/json",
    )


_manifests: dict[tuple[str, str], dict[str, Any]] = {}


def read_manifest(store: S3Store, job: str, *, cached: bool = True) -> dict[str, Any]:
    """The job manifest (cached per process: a job's manifest never changes once written)."""
    key = (store.bucket, job)
    if not cached or key not in _manifests:
        try:
            _manifests[key] = json.loads(store.get_bytes(contracts.manifest_key(job)))
        except KeyError as error:
            raise KeyError(f"job {job!r} has no manifest: was it submitted?") from error
    return _manifests[key]


def cancel_job(store: S3Store, job: str, *, by: str = "", reason: str = "") -> dict[str, Any]:
    """Cancel ``job``: write its marker (:func:`contracts.cancel_key`); returns the record.

    Every service checks the marker before it handles a message of the job
    (``ServiceBase.handle``), so the chunks already published are skipped, not
    processed: a cancel stops the job within one chunk per service. The marker is
    permanent; outputs already written stay. Cancelling twice keeps the first record.
    """
    key = contracts.cancel_key(job)
    try:
        return json.loads(store.get_bytes(key))
    except KeyError:
        pass
    record = {"job": job, "by": by, "reason": reason, "cancelled_unix_ms": int(time.time() * 1000)}
    store.put_bytes(key, json.dumps(record).encode(), content_type="application/json")
    return record


def job_cancelled(store: S3Store, job: str) -> bool:
    """Whether ``job`` was cancelled (one HEAD; a cancel is never undone, so ``True`` is cached)."""
    key = (store.bucket, job)
    if key in _cancelled:
        return True
    if store.exists(contracts.cancel_key(job)):
        _cancelled.add(key)
        return True
    return False


_cancelled: set[tuple[str, str]] = set()


def job_settings(store: S3Store, job: str) -> PipelineSettings:
    """The settings the job was submitted with (environment variables do not override them)."""
    return PipelineSettings(**read_manifest(store, job)["settings"])


def chunk_of(message: contracts.VideoChunk) -> Chunk:
    """The pipeline's Chunk from a VideoChunk message."""
    ref = message.chunk
    return Chunk(
        video=message.video_name,
        index=ref.chunk_index,
        start=int(message.first_frame),
        stop=int(message.first_frame + message.n_frames),
        name=ref.chunk_name,
        fps=message.fps or None,
        frame_height=message.frame_height,
    )


def chunk_from_manifest(store: S3Store, ref: contracts.ChunkRef) -> Chunk:
    """The Chunk a downstream message refers to, from the job manifest."""
    try:
        return _chunk_from_manifest(read_manifest(store, ref.job_id), ref)
    except KeyError:  # a video added to the job after we cached its manifest
        return _chunk_from_manifest(read_manifest(store, ref.job_id, cached=False), ref)


def _chunk_from_manifest(manifest: dict[str, Any], ref: contracts.ChunkRef) -> Chunk:
    for video in manifest["videos"]:
        if video["video_id"] != ref.video_id:
            continue
        for c in video["chunks"]:
            if c["index"] == ref.chunk_index:
                return Chunk(
                    video=video["video"],
                    index=c["index"],
                    start=c["start"],
                    stop=c["stop"],
                    name=c["name"],
                    fps=video["fps"],
                    frame_height=video["frame_height"],
                )
    raise KeyError(f"job {ref.job_id}: no chunk {ref.video_id}/{ref.chunk_index} in the manifest")


# ---------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class SegmentReader:
    """A ``FrameReader`` over a chunk's source that yields GLOBAL frame indices.

    ``path`` is a folder of frames holding source frames ``[first, first +
    n_planned)`` (fewer when the source is truncated there), or the whole video
    (``first`` 0): a file or an open ranged view of its object, with ``info``
    from one probe of it (so each read does not probe again).
    Reading past what the segment holds raises :class:`VideoError` naming the
    source video and frame, as the batch reader does on the whole video; reading
    past the planned segment inside the video is a planning bug and says so.
    """

    path: Path | BinaryIO
    video: str
    first: int
    n_planned: int
    video_frames: int
    info: VideoInfo | None = None
    #: one open decoder for all reads of the chunk (its priming frames, then itself)
    decoder: ContinuousReader = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", ContinuousReader(self.path, info=self.info))

    def close(self) -> None:
        """Release the decoder and the frames it keeps."""
        self.decoder.close()

    def __call__(self, start: int, stop: int | None) -> Iterator[tuple[int, np.ndarray]]:
        end = self.first + self.n_planned
        want = self.video_frames if stop is None else min(stop, self.video_frames)
        if start < self.first:
            raise ValueError(
                f"{self.video}: frame {start} requested but the segment starts at {self.first}"
            )
        nxt = start
        try:
            for local, frame in self.decoder(start - self.first, min(want, end) - self.first):
                nxt = self.first + local
                yield nxt, frame
                nxt += 1
        except VideoError as error:
            frame = None if error.frame is None else error.frame + self.first
            raise type(error)(self.video, frame, error.reason) from error  # FrameError stays one
        if nxt < min(want, end):
            raise VideoError(
                self.video, nxt, f"truncated: video ends after {nxt} of {self.video_frames} frames"
            )
        if want > end:
            raise RuntimeError(
                f"{self.video}: frame {end} is past the uploaded segment [{self.first}, {end}); "
                "the ingest's tail is too short for this chunk"
            )


# ---------------------------------------------------------------------------- ROIs in S3


def describe_ids(chunk: Chunk, rois: Rois) -> list[str]:
    """The ROI ids the batch CLI gives these ROIs (``pipeline.describe_rois``)."""
    return [str(i) for i in describe_rois(chunk, rois)["image"]]


def rois_to_objects(
    chunk: Chunk, rois: Rois, settings: PipelineSettings, folder: Path
) -> dict[str, Path]:
    """Write the segmenter's objects into ``folder``; returns artifact name -> path.

    ``rois.tar`` holds the ROI images exactly as the batch CLI's segmentation tar
    (encoded once, here; the collector reuses the bytes), ``rois.npz`` the raw
    crops and masks the measurer and classifier read (a copy to decode, where
    PNG cost ~0.2 ms per ROI in each of them), ``positions.csv`` the ids and
    the integer fields of :class:`Rois`.
    """
    ids = describe_ids(chunk, rois)
    paths = {name: folder / name for name in ("rois.tar", "rois.npz", "positions.csv")}
    write_roi_tar(paths["rois.tar"], ids, rois.crops, fmt=settings.image_format, mtime=0)
    paths["rois.npz"].write_bytes(pixels_to_bytes(rois.crops, rois.masks))
    write_csv(
        paths["positions.csv"],
        {"image": np.array(ids, dtype=object)}
        | {name: getattr(rois, name) for name in POSITION_FIELDS},
    )
    return paths


def pixels_to_bytes(crops: list[np.ndarray], masks: list[np.ndarray]) -> bytes:
    """2-D crops and their masks as one uncompressed ``.npz`` (pixels, packed mask bits)."""
    shapes = np.array([c.shape for c in crops], dtype=np.int64).reshape(-1, 2)
    dtype = crops[0].dtype if crops else np.uint8
    buffer = io.BytesIO()
    np.savez(
        buffer,
        shapes=shapes,
        pixels=np.concatenate([c.ravel() for c in crops]) if crops else np.empty(0, dtype),
        masks=np.packbits(np.concatenate([np.asarray(m, bool).ravel() for m in masks]))
        if masks
        else np.empty(0, np.uint8),
    )
    return buffer.getvalue()


def pixels_from_bytes(
    data: bytes, *, masks: bool = True
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Inverse of :func:`pixels_to_bytes`: crops (views of one buffer) and bool masks."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        shapes, pixels = z["shapes"], z["pixels"]
        bits = np.unpackbits(z["masks"]).astype(bool) if masks else None
    sizes = shapes[:, 0] * shapes[:, 1]
    if sizes.sum() != pixels.size:
        raise ValueError(f"ROI pixels: {pixels.size} values for shapes that need {sizes.sum()}")
    if bits is not None and bits.size < pixels.size:
        raise ValueError(f"ROI masks: {bits.size} bits for {pixels.size} pixels")
    starts = np.cumsum(sizes) - sizes

    def split(flat: np.ndarray) -> list[np.ndarray]:
        return [flat[a : a + h * w].reshape(h, w) for a, (h, w) in zip(starts, shapes, strict=True)]

    return split(pixels), [] if bits is None else split(bits)


def rois_from_objects(pixels: bytes, positions: bytes, *, masks: bool = True) -> Rois:
    """Rebuild the segmenter's :class:`Rois` (same order, same pixels) from ``rois.npz`` and
    ``positions.csv``; a mismatch between them is a ``ValueError`` (the step is retried)."""
    rows = list(csv.reader(io.StringIO(positions.decode())))
    header, body = rows[0], [r for r in rows[1:] if r]
    column = {name: header.index(name) for name in POSITION_FIELDS}
    table = {
        name: np.array([int(r[k]) for r in body], dtype=np.int64) for name, k in column.items()
    }
    crops, mask_list = pixels_from_bytes(pixels, masks=masks)
    if len(crops) != len(body):
        raise ValueError(f"ROI archive holds {len(crops)} crops, positions list {len(body)} ROIs")
    return Rois(**table, crops=crops, masks=mask_list)


def encoded_images(tar_bytes: bytes, ids: list[str]) -> list[bytes]:
    """The encoded images of ``ids`` from the segmenter's ``rois.tar``, in ``ids`` order."""
    found = {rid: data for rid, _, data in iter_roi_tar_bytes(io.BytesIO(tar_bytes))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValueError(f"ROI archive lacks {len(missing)} of {len(ids)} ROIs, e.g. {missing[0]}")
    return [found[i] for i in ids]


def table_to_bytes(table: dict[str, Any]) -> bytes:
    """A measurement table as ``.npz``, dtypes kept (text columns as unicode)."""
    buffer = io.BytesIO()
    arrays = {
        k: np.asarray(v, dtype=str) if np.asarray(v).dtype == object else np.asarray(v)
        for k, v in table.items()
    }
    np.savez(buffer, __order__=np.array(list(table), dtype=str), **arrays)
    return buffer.getvalue()


def table_from_bytes(data: bytes) -> dict[str, Any]:
    """Inverse of :func:`table_to_bytes` (text columns back to ``object``, column order kept)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        order = [str(k) for k in z["__order__"]]
        return {k: z[k].astype(object) if z[k].dtype.kind == "U" else z[k] for k in order}


def array_to_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def array_from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def frames_tar(files: list[Path]) -> bytes:
    """Frame files in one uncompressed tar, names kept (their sort order is the frame order)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in files:
            info = tarfile.TarInfo(path.name)
            info.size = path.stat().st_size
            info.mtime = 0
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return buffer.getvalue()
