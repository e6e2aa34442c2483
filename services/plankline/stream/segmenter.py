"""Segmenter service: VideoChunk -> flat-field + segment (``pipeline.find_rois``) -> RoiBatch.

Reads the chunk's frames (by frame index from the whole video object, with ranged
GETs of only the bytes they need; or a frame folder's tar), runs the very function
the batch CLI runs, and writes the ROI images (the output tar), the raw crops +
masks and the positions table to S3 before returning the RoiBatch message. A
chunk with an unreadable frame keeps the ROIs found before it (as batch does):
they go on downstream, and the handler raises ``PartialFailure`` with them: the
runner publishes them, then dead-letters the chunk (an error naming the video and
frame) and ``ServiceBase`` records it failed (``failed.json``).

Run: ``python -m plankline.stream.runner plankline.stream.segmenter:from_env``.
"""

from __future__ import annotations

import io
import logging
import tarfile
import time
from dataclasses import replace
from pathlib import Path

from plankline.imaging.video import VideoError, probe_video
from plankline.pipeline import PartialChunkError, find_rois
from plankline.stream import contracts
from plankline.stream._service import ServiceBase
from plankline.stream.jobs import (
    SEGMENT_FRAMES_TAR,
    SEGMENT_WHOLE_VIDEO,
    SegmentReader,
    chunk_of,
    job_settings,
    rois_to_objects,
)
from plankline.stream.runner import Incoming, Outgoing, PartialFailure

log = logging.getLogger("plankline.stream.segmenter")


class Segmenter(ServiceBase):
    """Handler of ``plankline.chunks``.

    ``source_reads`` counts, per source object (``bucket/key``), the bytes it read
    with ranged GETs and the GETs: about each chunk's own frames, not the whole object.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.source_reads: dict[str, list[int]] = {}

    def _reader(self, message: contracts.VideoChunk, folder: Path) -> SegmentReader:
        """The chunk's frames by global index: ranged reads of the whole video object, or
        the chunk's tar of frame files unpacked into ``folder``."""
        video, n = message.video_name, int(message.video_n_frames)
        if message.segment_format == SEGMENT_WHOLE_VIDEO:
            source = self.store.open_object(
                message.video_key,
                bucket=message.bucket or None,
                block_size=self.settings.s3_read_block_bytes,
                readahead_bytes=self.settings.s3_readahead_bytes,
            )
            return SegmentReader(source, video, 0, n, n)
        if message.segment_format == SEGMENT_FRAMES_TAR:
            frames = folder / "frames"
            frames.mkdir()
            data = self.store.get_bytes(message.video_key)
            with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
                tar.extractall(frames, filter="data")
            first, planned = int(message.segment_first_frame), int(message.segment_n_frames)
            return SegmentReader(frames, video, first, planned, n)
        raise ValueError(
            f"{video}: unknown segment format {message.segment_format!r} "
            f"(this segmenter reads {SEGMENT_WHOLE_VIDEO!r} and {SEGMENT_FRAMES_TAR!r})"
        )

    def process(self, message: Incoming, msg: contracts.VideoChunk) -> list[Outgoing]:  # type: ignore[override]
        ref = msg.chunk
        settings = job_settings(self.store, ref.job_id)
        chunk = chunk_of(msg)
        began = time.perf_counter()
        error: str | None = None
        with self.scratch() as tmp:
            folder = Path(tmp)
            read = self._reader(msg, folder)
            try:
                if not isinstance(read.path, Path):  # probe once, not on every read
                    try:
                        info = probe_video(read.path, n_frames=read.video_frames)
                    except VideoError as unreadable:
                        raise VideoError(chunk.video, None, unreadable.reason) from unreadable
                    read = replace(read, info=info)
                rois, warning = find_rois(read, chunk, settings)
            except PartialChunkError as partial:
                rois, warning, error = partial.rois, None, str(partial)
            except VideoError as bad:  # the segment itself does not open
                from plankline.imaging.segment import Rois

                rois, warning, error = Rois(), None, str(bad)
            finally:
                read.close()
            paths = rois_to_objects(chunk, rois, settings, folder)
            keys = {
                name: contracts.chunk_key(ref.job_id, ref.video_id, ref.chunk_index, name)
                for name in paths
            }
            for name, path in paths.items():
                self.store.put_file(keys[name], path)
        read_bytes, requests = (
            getattr(read.path, "bytes_fetched", 0),
            getattr(read.path, "requests", 0),
        )
        if requests:
            total = self.source_reads.setdefault(f"{msg.bucket}/{msg.video_key}", [0, 0])
            total[0] += read_bytes
            total[1] += requests
        out = [
            Outgoing.of(
                contracts.TOPIC_ROIS,
                contracts.RoiBatch(
                    chunk=ref,
                    roi_archive_key=keys["rois.npz"],
                    positions_key=keys["positions.csv"],
                    n_rois=len(rois),
                    bucket=self.store.bucket,
                    error=error or "",
                ),
            )
        ]
        if error is None:
            self.store.delete(self.failed_key(ref))  # a resubmitted chunk that now reads fine
        if warning:
            log.warning("chunk %s: %s", chunk.name, warning)
        log.info(
            "chunk %s: %d ROIs in %.2f s (read %d bytes of the source in %d requests)",
            chunk.name,
            len(rois),
            time.perf_counter() - began,
            read_bytes,
            requests,
        )
        if error is not None:  # the ROIs before the bad frame go on; the runner dead-letters
            raise PartialFailure(f"VideoError: {error} ({len(rois)} ROIs kept)", out)
        return out


def from_env() -> Segmenter:
    """Factory for the shared runner (settings from ``PLANKLINE_*``)."""
    return Segmenter()
