"""Ingest: plan videos into chunks, store each video once, publish VideoChunk messages.

``submit(videos, job, settings, store, bootstrap)`` is what ``plankline submit``
runs. Per video it plans chunks exactly as the batch CLI (``pipeline.plan_chunks``
with the same ``PipelineSettings``), writes the job manifest, then publishes one
message per chunk:

- a video file (any codec FFmpeg reads: uncompressed, FFV1, MJPEG, H.264... in
  AVI/MP4/MKV) is uploaded ONCE, whole (key ``videos/<id>/source``), and every
  segmenter reads the frames of its chunk from that object by frame index with
  ranged GETs (``S3Store.open_object``): the same decoder and seek as the batch
  CLI on the same bytes, hence the same frames. Cutting a compressed video into
  per-chunk files cannot work in general: an FFV1 or H.264 chunk that starts
  between keyframes cannot be decoded on its own (FFmpeg refuses to seek in it);
- a video already in the object store (``s3://bucket/key``) is not copied at all:
  it is planned and processed in place, by reference;
- a folder of frames: a tar of the frame files each chunk reads (see
  :mod:`plankline.stream.jobs` for the frames a chunk covers).

Keys are deterministic, so re-running a submit overwrites; chunks already
marked done are not published again, and a source already stored whole with the
same size is not uploaded again (idempotent).
"""

from __future__ import annotations

import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from plankline.config import PipelineSettings
from plankline.imaging.video import IMAGE_SUFFIXES, Source, VideoError
from plankline.pipeline import Chunk, claim_output_names, video_stem
from plankline.stream import contracts
from plankline.stream.jobs import (
    SEGMENT_FRAMES_TAR,
    SEGMENT_WHOLE_VIDEO,
    frames_tar,
    job_cancelled,
    segment_range,
    write_manifest,
)
from plankline.stream.store import S3Store

#: ``s3://bucket/key`` (inputs travel as text: a ``Path`` would collapse the ``//``).
_S3_URL = re.compile(r"^s3://([^/]+)/(.+)$")


@dataclass
class SubmitReport:
    """What a submit did: chunks published, chunks already done, videos it could not read."""

    job: str
    chunks: int = 0
    skipped: int = 0
    frames: int = 0
    uploaded_bytes: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VideoSource:
    """One input of a submit: a local video or frame folder, or an object by reference."""

    name: str  # file or folder name, as the batch CLI sees it (its chunk names come from it)
    path: Path | None = None  # local file or folder
    bucket: str = ""  # object by reference
    key: str = ""

    @classmethod
    def parse(cls, video: str | Path) -> VideoSource:
        """``s3://bucket/key`` (an object to process in place) or a local path."""
        match = _S3_URL.match(str(video))
        if match:
            bucket, key = match.groups()
            if key.endswith("/"):
                raise ValueError(
                    f"{video}: by reference only a video object can be read, not a prefix of "
                    "frames; submit the local frame folder instead"
                )
            return cls(PurePosixPath(key).name, bucket=bucket, key=key)
        path = Path(video)
        return cls(path.name, path=path)

    @property
    def is_frames(self) -> bool:
        return self.path is not None and (
            self.path.is_dir() or self.path.suffix.lower() in IMAGE_SUFFIXES
        )

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else f"s3://{self.bucket}/{self.key}"


def plan_video(
    video: Path | VideoSource, settings: PipelineSettings, store: S3Store | None = None
) -> tuple[list[Chunk], dict]:
    """The batch CLI's chunk plan of one video (``batch.run.plan_video``, the one plan),
    and its manifest entry.

    A video by reference is probed through ranged reads of its object (``store``):
    the header and index, or, for containers without a frame count (MKV), every
    packet once.
    """
    from plankline.batch.run import plan_video as plan

    source = video if isinstance(video, VideoSource) else VideoSource.parse(video)
    if source.path is not None:
        chunks = plan(source.path, settings, name=source.name)
    else:
        if store is None:
            raise ValueError(f"{source}: a video by reference needs the object store")
        try:
            reader = store.open_object(source.key, bucket=source.bucket)
        except KeyError as error:
            raise VideoError(str(source), None, "no such object") from error
        chunks = plan(reader, settings, name=source.name)
    video_id = video_stem(source.name)
    contracts.message_key(video_id, 0)  # validates the id early, naming it
    entry = {
        "video": source.name,
        "video_id": video_id,
        "source": str(source),
        "n_frames": chunks[-1].stop,
        "fps": chunks[0].fps,
        "frame_height": chunks[0].frame_height,
        "chunks": [
            {"index": c.index, "name": c.name, "start": c.start, "stop": c.stop} for c in chunks
        ],
    }
    return chunks, entry


def store_source(
    store: S3Store, job: str, source: VideoSource, video_id: str
) -> tuple[str, str, int]:
    """Where the segmenters read a video: ``(bucket, key, bytes uploaded)``.

    A local file is uploaded whole once (skipped when the key already holds as many
    bytes: a re-submit); an object by reference is used where it is.
    """
    if source.path is None:
        return source.bucket, source.key, 0
    key = contracts.source_key(job, video_id)
    size = source.path.stat().st_size
    try:
        if store.size(key) == size:
            return store.bucket, key, 0
    except KeyError:
        pass
    store.put_file(key, source.path)
    return store.bucket, key, size


def chunk_message(
    job: str,
    source: VideoSource,
    entry: dict,
    chunk: Chunk,
    *,
    bucket: str,
    key: str,
    mode: str,
    first: int,
    stop: int,
) -> contracts.VideoChunk:
    """The VideoChunk of one chunk whose frames ``[first, stop)`` are at ``bucket/key``."""
    return contracts.VideoChunk(
        chunk=contracts.chunk_ref(job, entry["video_id"], chunk.index, chunk.name),
        first_frame=chunk.start,
        n_frames=chunk.stop - chunk.start,
        fps=chunk.fps or 0.0,
        video_key=key,
        bucket=bucket,
        video_name=source.name,
        frame_height=chunk.frame_height,
        segment_first_frame=first,
        segment_n_frames=stop - first,
        video_n_frames=entry["n_frames"],
        segment_format=mode,
    )


def upload_frames_chunk(
    store: S3Store,
    job: str,
    source: VideoSource,
    entry: dict,
    chunk: Chunk,
    settings: PipelineSettings,
) -> contracts.VideoChunk:
    """Store the tar of the frame files one chunk of a frame folder reads; its message."""
    from plankline.imaging.video import _image_files

    assert source.path is not None
    first, stop = segment_range(chunk, entry["n_frames"], settings)
    key = contracts.chunk_key(job, entry["video_id"], chunk.index, "video")
    store.put_bytes(key, frames_tar(_image_files(source.path)[first:stop]))
    return chunk_message(
        job,
        source,
        entry,
        chunk,
        bucket=store.bucket,
        key=key,
        mode=SEGMENT_FRAMES_TAR,
        first=first,
        stop=stop,
    )


def _publish(producer: Any, topic: str, message: contracts.VideoChunk) -> Any:
    ref = message.chunk
    return producer.send(
        topic,
        key=contracts.message_key(ref.video_id, ref.chunk_index),
        value=contracts.encode(message),
    )


def submit(
    videos: list[Source] | list[Path] | list[str],
    job: str,
    settings: PipelineSettings,
    store: S3Store,
    bootstrap_servers: str,
    *,
    topic: str = contracts.TOPIC_CHUNKS,
    upload_threads: int = 2,
) -> SubmitReport:
    """Plan, store and publish every chunk of ``videos`` as job ``job`` (see module).

    ``videos`` holds local paths (video files, frame folders) and ``s3://bucket/key``
    references to videos already in the object store (read in place with this
    store's credentials).
    """
    from kafka import KafkaProducer

    contracts.job_prefix(job)  # validates the job name
    store.ensure_bucket()
    if job_cancelled(store, job):
        raise ValueError(f"job {job!r} was cancelled; submit under a new --job name")
    report = SubmitReport(job)
    plans: list[tuple[VideoSource, list[Chunk], dict]] = []
    named: dict[str, str] = {}  # video id -> the video that has it
    for video in videos:
        try:
            source = VideoSource.parse(str(video))
            claim_output_names(named, str(source), source.name)  # the entry's video_id
            chunks, entry = plan_video(source, settings, store)
        except (VideoError, ValueError) as error:
            report.failures.append(str(error))
            continue
        plans.append((source, chunks, entry))
    if not plans:  # nothing readable: no manifest, so no job that would never finish
        return report
    write_manifest(store, job, settings, [entry for _, _, entry in plans])
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers.split(","), acks="all", linger_ms=5, retries=5
    )
    sent = []
    try:
        with ThreadPoolExecutor(max_workers=upload_threads) as pool:
            for source, chunks, entry in plans:
                todo = [
                    c
                    for c in chunks
                    if not store.exists(
                        contracts.chunk_key(job, entry["video_id"], c.index, "done.json")
                    )
                ]
                report.skipped += len(chunks) - len(todo)
                report.chunks += len(todo)
                report.frames += sum(c.stop - c.start for c in todo)
                if not todo:
                    continue
                if not source.is_frames:
                    bucket, key, uploaded = store_source(store, job, source, entry["video_id"])
                    report.uploaded_bytes += uploaded
                    for chunk in todo:
                        message = chunk_message(
                            job,
                            source,
                            entry,
                            chunk,
                            bucket=bucket,
                            key=key,
                            mode=SEGMENT_WHOLE_VIDEO,
                            first=0,
                            stop=entry["n_frames"],
                        )
                        sent.append(_publish(producer, topic, message))
                    continue
                # Frame tars overlap (2 PUTs at once are ~1.7x faster than one after the
                # other); messages still go out in chunk order, each once its tar is stored.
                window: deque[Future[contracts.VideoChunk]] = deque()
                for chunk in todo:
                    window.append(
                        pool.submit(upload_frames_chunk, store, job, source, entry, chunk, settings)
                    )
                    if len(window) > upload_threads:
                        sent.append(_publish(producer, topic, window.popleft().result()))
                while window:
                    sent.append(_publish(producer, topic, window.popleft().result()))
        producer.flush()
        for future in sent:
            future.get(timeout=30)  # every chunk acknowledged by the broker
    finally:
        producer.close()
    return report
