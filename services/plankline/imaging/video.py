"""Video and frame-folder I/O: the only module of :mod:`plankline.imaging` that touches files.

ISIIS writes AVI (uncompressed or lightly compressed gray line-scan frames); other
instruments and archives give MP4/MKV or folders of TIFF/PNG/JPEG frames (the OSU pipeline
"destacks" AVIs into TIFFs). All of them come out of :func:`iter_frames` the same way: a
stream of ``(index, frame)`` with 2-D gray uint8 (or uint16 for 16-bit sources) frames,
decoded one at a time so a 10 GB video never sits in memory. A video may also be given
as an open seekable binary file (the stream passes a ranged-read view of an object in
S3): the same decoder and seek run on the same bytes, so the frames are the file's.

Errors are :class:`VideoError` naming the file and, when known, the frame, because the
batch pipeline reports them per chunk and a cruise has thousands of videos.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, TypeAlias

import av
import cv2
import numpy as np

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")

#: Video files a project's raw/ folder holds (anything FFmpeg reads would do; these are the
#: containers cameras and archives write): AVI, MP4/MOV/M4V, MKV/WebM, MPEG transport and
#: program streams, and NUT (16-bit uncompressed, :func:`write_video`).
VIDEO_SUFFIXES = (
    ".avi", ".mp4", ".mov", ".m4v", ".mkv", ".webm", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg",
    ".vob", ".nut",
)  # fmt: skip

#: A video file or folder path, or an open seekable binary file holding a video (e.g. a
#: ranged-read view of an object in S3: only the bytes the frames need are read). A file
#: whose ``identity`` attribute names the object and its version lets a process keep
#: what it learnt about the video between reads (an MPEG stream's frame index).
Source: TypeAlias = str | Path | BinaryIO

#: Codecs whose every frame is a keyframe: seeking lands exactly, no decode-and-skip.
#: (FFV1 is intra-coded but may carry range-coder state between frames until the next
#: keyframe, so it seeks to a keyframe like inter codecs; our writer makes every frame one.)
_INTRA_ONLY = {"rawvideo", "mjpeg", "png", "tiff"}

#: Containers whose frame times after a seek cannot be trusted: MPEG program and transport
#: streams (``.mpg``, ``.vob``, ``.ts``, ``.m2ts``) are seeked by byte position and the
#: times of the frames after it are guessed (an MPEG-2 ``.mpg`` read from frame 18 gave
#: frames 18, 20, 20, 22, ... with the wrong pictures; an H.264 ``.ts`` read from frame 31
#: found no frame at all). They are read through a :class:`_FrameIndex` (one demux pass),
#: or, where it cannot be made, from the first frame, counting frames.
_UNSEEKABLE_FORMATS = {"mpeg", "mpegts", "mpegvideo"}
#: Those of them whose packets carry their own times (raw MPEG video's are made up by
#: the parser, and wrong after a seek): read through a :class:`_FrameIndex`.
_INDEXED_FORMATS = {"mpeg", "mpegts"}


def _seekable(container: av.container.InputContainer) -> bool:
    return not _UNSEEKABLE_FORMATS.intersection(container.format.name.split(","))


@dataclass(frozen=True)
class _FrameIndex:
    """Where the frames of an MPEG program or transport stream lie, from one pass over its
    packets (no decoding, ~1 GB/s): frame ``k`` is the one with the ``k``-th smallest
    presentation time, and a read from frame ``k`` starts at the byte position of a
    keyframe before it.

    Without it such a video was read from its first frame at every read: a chunk of an
    hour of camcorder ``.mts`` decoded on average half the video, each of the stream's
    chunks too, so processing grew with the square of the length (1,200 frames of
    512 x 512 H.264 in chunks of 50, two workers: 48.6 CPU s as ``.ts``, 33.2 as
    ``.mp4``).
    """

    pts: np.ndarray  # presentation times, ascending: frame k's is pts[k]
    keys: np.ndarray  # keyframe packets: (frame number, byte position, pts, size) rows

    @classmethod
    def of(cls, container: av.container.InputContainer) -> _FrameIndex | None:
        """The index from ``container``'s packets (read to the end); None when a packet
        has no time, two share one, or keyframes' times run against their order in the
        file (a damaged stream; a transport stream's clock wrapping after 26.5 hours):
        such a video is read from its first frame, counting. Keyframes without a byte
        position (packed behind another frame in a program stream's pack) are no place
        to start."""
        stream = container.streams.video[0]
        times: list[int] = []
        keys: list[tuple[int, int, int]] = []
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if packet.pts is None:
                return None
            times.append(packet.pts)
            if packet.is_keyframe and packet.pos is not None and packet.pos >= 0:
                keys.append((packet.pos, packet.pts, packet.size))
        pts = np.sort(np.asarray(times, np.int64))
        if not len(pts) or np.any(np.diff(pts) == 0):
            return None
        rows = np.asarray(keys, np.int64).reshape(-1, 3)
        rows = rows[np.argsort(rows[:, 1], kind="stable")]
        if np.any(np.diff(rows[:, 0]) <= 0):
            return None  # keyframes out of time order in the file (times that wrap around)
        frames = np.searchsorted(pts, rows[:, 1])
        return cls(pts, np.column_stack([frames, rows]))

    def frame_of(self, pts: int | None) -> int | None:
        """The frame number of a decoded frame's time; None for a time not in the index."""
        if pts is None:
            return None
        k = int(np.searchsorted(self.pts, pts))
        return k if k < len(self.pts) and self.pts[k] == pts else None

    def key_at(self, packet: av.Packet) -> int | None:
        """The frame number of the keyframe ``packet`` is, exactly as indexed (time, byte
        position and size); None for any other packet."""
        if packet.pos is None or packet.pts is None:
            return None
        row = int(np.searchsorted(self.keys[:, 1], packet.pos))
        if row < len(self.keys) and tuple(self.keys[row, 1:]) == (
            packet.pos,
            packet.pts,
            packet.size,
        ):
            return int(self.keys[row, 0])
        return None

    def seek_bytes(self, start: int) -> Iterator[int | None]:
        """Where to start reading for frame ``start``, nearest first: the last keyframe at
        or before it, then ever further back; None: the first frame."""
        last = int(np.searchsorted(self.keys[:, 0], start, side="right")) - 1
        back = 0
        while last - back >= 0:
            yield int(self.keys[last - back, 1])
            back = 2 * back + 1
        yield None


_INDEXES: OrderedDict[tuple[object, ...], _FrameIndex | None] = OrderedDict()
_KEPT_INDEXES = 32  # videos whose index a process keeps: ~1 MB for an hour at 30 frames/s;
# a segmenter serving chunks of many videos at once must not make it again per chunk


def _frame_index(
    source: Source, container: av.container.InputContainer
) -> tuple[_FrameIndex | None, bool]:
    """``source``'s :class:`_FrameIndex` (None for other containers), and whether it was
    made now from ``container`` (freshly opened), which is then read to its end. It is
    made once per process for a file (its path, size and time) or an object whose reader
    names its version (``identity``: the stream's ranged S3 reader), so every chunk a
    worker or segmenter reads pays one packet pass, not one per read."""
    if not _INDEXED_FORMATS.intersection(container.format.name.split(",")):
        return None, False
    key = _identity(source)
    if key is not None and key in _INDEXES:
        _INDEXES.move_to_end(key)
        return _INDEXES[key], False
    index = _FrameIndex.of(container)
    if key is not None:
        _INDEXES[key] = index
        while len(_INDEXES) > _KEPT_INDEXES:
            _INDEXES.popitem(last=False)
    return index, True


def _identity(source: Source) -> tuple[object, ...] | None:
    if _is_file(source):
        identity = getattr(source, "identity", None)
        return ("object", *identity) if identity else None
    stat = os.stat(source)
    return (os.path.realpath(source), stat.st_size, stat.st_mtime_ns)


def _steady(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, n: int | None
) -> bool:
    """Whether frame times map to frame numbers: the duration times the frame rate gives
    the frame count (to a frame and 2 %). A variable-rate video (frames dropped by the
    recorder, a phone's clip) does not: read by its times, an MKV with 3 frames dropped
    numbered its frames up to 22 of 20 and lost the last three, an MP4 numbered two
    frames 3 and two 17. Such a video is read from its first frame, counting frames."""
    rate = stream.guessed_rate or stream.base_rate
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / 1e6
    else:
        return True  # nothing says otherwise
    if not n or not rate or seconds <= 0:
        return True
    return abs(seconds * float(rate) - n) <= 1 + 0.02 * n


class VideoError(ValueError):
    """A video or frame folder that cannot be read, with the file and frame at fault."""

    def __init__(self, path: str | Path, frame: int | None, reason: str) -> None:
        self.path = str(path)
        self.frame = frame
        self.reason = reason
        where = f"{self.path}: frame {frame}" if frame is not None else self.path
        super().__init__(f"{where}: {reason}")


class FrameError(VideoError):
    """One frame of a frame folder that cannot be read (or is of another size or type): its
    own file, so the frames after it can still be read."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds. ``n_frames``/``fps`` are None when the source does not say."""

    path: str
    n_frames: int | None
    fps: float | None
    width: int
    height: int
    dtype: str
    #: pts of the first frame shown, when the codec reorders frames and it differs from the
    #: stream's start time (an H.264 AVI stores decode times: its first frame has pts 1).
    start_pts: int | None = None
    #: False for videos read from the first frame, counting frames: variable frame rates
    #: (``_steady``) and MPEG streams without a frame index (raw MPEG video, packets
    #: without times; ``_FrameIndex``).
    seekable: bool = True


# --------------------------------------------------------------------------- helpers


def _image_files(folder: Path) -> list[Path]:
    """A folder's frames in their numbers' order: ``f2.png`` before ``f10.png`` (cameras that
    do not pad their counters sorted ``f1, f10, f11, f2``, cutting the tape at every
    power of ten); zero-padded names keep the order of their text."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=_in_number_order)


def _in_number_order(path: Path) -> tuple[list[int | str], str]:
    parts = re.split(r"(\d+)", path.name)  # text, digits, text, ...: alike at each place
    return [int(t) if i % 2 else t for i, t in enumerate(parts)], path.name


def _to_gray(img: np.ndarray, path: Path, index: int) -> np.ndarray:
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.shape[2] in (3, 4):
            code = cv2.COLOR_BGR2GRAY if img.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
            img = cv2.cvtColor(img, code)
        else:
            raise VideoError(path, index, f"unsupported channel count {img.shape[2]}")
    if img.dtype not in (np.uint8, np.uint16):
        raise VideoError(path, index, f"unsupported pixel type {img.dtype} (need 8 or 16 bit)")
    return np.ascontiguousarray(img)


def _read_image(path: Path, index: int) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise VideoError(path, index, "cannot decode image")
    return _to_gray(img, path, index)


def _is_16bit(stream: av.video.stream.VideoStream) -> bool:
    fmt = stream.codec_context.format
    if fmt is None:
        return False
    return max((c.bits for c in fmt.components), default=8) > 8


def _is_file(source: Source) -> bool:
    return not isinstance(source, str | Path)


def _name(source: Source) -> str:
    return str(getattr(source, "name", "<stream>")) if _is_file(source) else str(source)


def _open(source: Source) -> av.container.InputContainer:
    path = _name(source)
    try:
        if _is_file(source):
            source.seek(0)  # type: ignore[union-attr]
            container = av.open(source)
        else:
            container = av.open(str(source))
    except (av.FFmpegError, OSError) as error:
        raise VideoError(path, None, f"cannot open ({error})") from error
    if not container.streams.video:
        container.close()
        raise VideoError(path, None, "no video stream")
    return container


#: Most frames a decoder may hold back to reorder them (H.264's limit is 16).
_MAX_REORDER = 16


def _scan_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, count: bool
) -> tuple[int | None, int | None]:
    """Demux (no decoding): the frame count when ``count``, and, for codecs that reorder
    frames (B-frames), the smallest pts among the first packets: the first frame's."""
    reorders = bool(stream.codec_context.has_b_frames)
    if not count and not reorders:
        return None, None
    n, first_pts = 0, None
    for packet in container.demux(stream):
        if not packet.size:
            continue
        if reorders and n <= _MAX_REORDER and packet.pts is not None:
            first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
        n += 1
        if not count and n > _MAX_REORDER:
            break
    return (n if count else None), first_pts


# --------------------------------------------------------------------------- public API


def probe_video(path: Source, *, n_frames: int | None = None) -> VideoInfo:
    """Frame count, rate, size and pixel type of a video, frame folder or single image.

    Parameters
    ----------
    path : path or seekable binary file
        AVI/MP4/MKV (anything FFmpeg reads), a folder of TIFF/PNG/JPEG frames (in their
        names' number order, ``f2`` before ``f10``; ``fps`` None), one image file, or an
        open video file.
    n_frames : int, optional
        The frame count when already known (from an earlier probe): skips counting by
        demuxing the whole file for containers whose header lacks it (MKV), which on
        an object store would read every byte to process one chunk.

    Raises
    ------
    VideoError
        Missing, empty or unreadable.
    """
    if _is_file(path):
        return _probe_av(path, n_frames)
    p = Path(path)
    if not p.exists():
        raise VideoError(p, None, "no such file or folder")
    if p.is_dir():
        files = _image_files(p)
        if not files:
            raise VideoError(p, None, f"no image frames ({', '.join(IMAGE_SUFFIXES)})")
        first = _read_image(files[0], 0)
        return VideoInfo(str(p), len(files), None, first.shape[1], first.shape[0], first.dtype.name)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        img = _read_image(p, 0)
        return VideoInfo(str(p), 1, None, img.shape[1], img.shape[0], img.dtype.name)
    if p.stat().st_size == 0:
        raise VideoError(p, None, "empty file")
    return _probe_av(p, n_frames)


def _probe_av(source: Source, n_frames: int | None) -> VideoInfo:
    p = _name(source)
    container = _open(source)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise VideoError(p, None, "video stream has no frame size")
        dtype = "uint16" if _is_16bit(stream) else "uint8"
        index, made = _frame_index(source, container)
        if index is not None:  # every frame's time is known: reads start anywhere
            n = n_frames or len(index.pts)
            return VideoInfo(p, n, fps, ctx.width, ctx.height, dtype, int(index.pts[0]), True)
        if made:  # the packets were read: again, to count them
            container.close()
            container = _open(source)
            stream = container.streams.video[0]
        n = n_frames or stream.frames or None
        counted, start_pts = _scan_packets(container, stream, count=n is None)
        n = n or counted or None
        seekable = _seekable(container) and _steady(container, stream, n)
        return VideoInfo(p, n, fps, ctx.width, ctx.height, dtype, start_pts, seekable)
    except av.FFmpegError as error:
        raise VideoError(p, None, f"cannot read ({error})") from error
    finally:
        container.close()


def iter_frames(
    path: Source,
    start: int = 0,
    stop: int | None = None,
    *,
    info: VideoInfo | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream ``(index, frame)`` for frames ``start <= index < stop``, one decoded at a time.

    Frames are 2-D gray: uint8, or uint16 when the source is more than 8 bits per sample;
    colour is converted to gray (luma). Seeking is exact: for intra-only codecs (rawvideo,
    MJPEG) the container index jumps straight to ``start``; for others (FFV1, whose frames
    may depend on the previous one up to the next keyframe, H.264, MPEG-4) it lands on an
    earlier keyframe and decodes forward.

    ``path`` may be an open seekable binary file (a view of an object in S3): the same
    decoder and seek run on the same bytes, so the frames equal those of the file on
    disk. ``info`` (from :func:`probe_video` on the same video) saves probing it again.

    Raises
    ------
    VideoError
        Unreadable input; corrupt or missing data mid-video is raised *after* every good
        frame before it has been yielded, naming the first bad frame (:class:`FrameError`
        for a frame folder's file: a read from the next frame on can go on). A video that ends
        before the frame count in its header says is reported as truncated the same way.
        Limitation: damage that the decoder conceals (e.g. a bad FFV1 slice CRC, or garbage
        inside an uncompressed frame) yields a damaged frame without an error.
    """
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
    info = info or probe_video(path)
    if not _is_file(path):
        p = Path(path)
        if p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES:
            yield from _iter_images(p, info, start, stop)
            return
    container = _open(path)
    try:
        index, made = _frame_index(path, container)
        if made:  # read to its end making the index
            container.close()
            container = _open(path)
        if index is not None:
            yield from _iter_indexed(container, _name(path), info, start, stop, index)
            return
        yield from _iter_av(container, _name(path), info, start, stop)
    finally:
        container.close()


KEEP_BYTES = 256 << 20
"""Most frame bytes a :class:`ContinuousReader` keeps: 16 frames of 2048 x 2048 8-bit (64 MB)
fit, 8 of a 4096 x 4096 16-bit camera (a worker per core would otherwise hold 512 MB of
them); with fewer kept, the next chunk's priming frames are read again (a seek)."""


class ContinuousReader:
    """``read(start, stop)`` over one video that keeps its decoder open between reads.

    A chunk reads its priming frames, then itself from one frame before its start, and
    the next chunk of the same video starts where it stopped: with :func:`iter_frames`
    each read seeks anew, and for inter-frame codecs (H.264, MPEG-4, FFV1 with groups of
    frames) a seek lands on the keyframe before and decodes forward to the frame wanted.
    On a 2048 x 2048 H.264 video with a keyframe every 250 frames (x264's default) and
    chunks of 100 frames, that decoded each frame ~3 times. This reader serves a read
    from the last ``keep`` frames it decoded and continues decoding from there; only a
    read before them, or past the decoder's position, seeks (opens a fresh decode). In
    videos read from the first frame (``VideoInfo.seekable`` False: variable frame rates,
    raw MPEG video), a read past the decoder decodes on to it
    instead: a worker decodes such a video about once, not once per read.
    The frames are those of :func:`iter_frames`, and so are its errors: a read that
    fails drops the decoder, and the next read seeks again and meets the same error.

    It keeps at most ``keep`` frames and :data:`KEEP_BYTES` of them (``keep_bytes``).
    One read at a time: a read left unfinished (a consumer that stops early) may be
    dropped, but not resumed after a later read. :meth:`close` releases the file.
    """

    def __init__(
        self,
        path: Source,
        *,
        info: VideoInfo | None = None,
        keep: int = 16,
        keep_bytes: int = KEEP_BYTES,
    ) -> None:
        if keep < 1 or keep_bytes < 1:
            raise ValueError(f"keep and keep_bytes must be >= 1, got {keep} and {keep_bytes}")
        self.path = path
        self.info = info
        self.keep_bytes = keep_bytes
        self.seeks = 0  # fresh decodes opened (for tests and benchmarks)
        self._recent: deque[tuple[int, np.ndarray]] = deque(maxlen=keep)
        self._live: Iterator[tuple[int, np.ndarray]] | None = None
        self._next = 0  # index of the frame the live decoder yields next

    def __call__(self, start: int, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        first = self._recent[0][0] if self._recent else self._next
        # past the decoder: seek, or decode on to it where every seek starts from frame 0
        ahead = start > self._next and (self.info is None or self.info.seekable)
        if self._live is None or start < first or ahead:
            self._open(start)
        return self._frames(start, stop)

    def _open(self, start: int) -> None:
        self.close()
        if self.info is None:
            self.info = probe_video(self.path)  # once, not at every seek
        self._live = iter_frames(self.path, start, None, info=self.info)
        self._next = start
        self.seeks += 1

    def _frames(self, start: int, stop: int | None) -> Iterator[tuple[int, np.ndarray]]:
        for index, frame in list(self._recent):
            if index >= start and (stop is None or index < stop):
                yield index, frame
        while stop is None or self._next < stop:
            try:
                index, frame = next(self._live)  # type: ignore[arg-type]
            except StopIteration:
                self._live = iter(())  # the end: later reads get the kept frames only
                return
            except BaseException:
                self.close()
                raise
            if not self._recent:  # within the byte budget, whatever the frame size
                fit = max(2, self.keep_bytes // max(frame.nbytes, 1))
                if fit < (self._recent.maxlen or fit):
                    self._recent = deque(maxlen=fit)
            self._recent.append((index, frame))
            self._next = index + 1
            if index >= start:
                yield index, frame

    def close(self) -> None:
        """Release the decoder and the frames kept."""
        live, self._live = self._live, None
        self._recent.clear()
        if hasattr(live, "close"):
            live.close()  # type: ignore[union-attr]


def _iter_images(
    p: Path, info: VideoInfo, start: int, stop: int | None
) -> Iterator[tuple[int, np.ndarray]]:
    files = _image_files(p) if p.is_dir() else [p]
    for i in range(start, min(len(files), stop if stop is not None else len(files))):
        try:
            frame = _same_as_first(_read_image(files[i], i), info, files[i], i)
        except VideoError as error:
            raise FrameError(error.path, error.frame, error.reason) from error
        yield i, frame


def _same_as_first(frame: np.ndarray, info: VideoInfo, path: str | Path, index: int) -> np.ndarray:
    """``frame``, unless its size or pixel type differs from the video's first frame: a
    frame folder holding one image of another camera (or a stream changing resolution)
    must fail as that frame, naming it, not as an OpenCV size error in every chunk that
    reads it."""
    if frame.shape != (info.height, info.width) or frame.dtype.name != info.dtype:
        raise VideoError(
            path,
            index,
            f"{frame.shape[1]}x{frame.shape[0]} {frame.dtype.name} frame, unlike the first "
            f"frame ({info.width}x{info.height} {info.dtype})",
        )
    return frame


def _iter_av(
    container: av.container.InputContainer, p: str, info: VideoInfo, start: int, stop: int | None
) -> Iterator[tuple[int, np.ndarray]]:
    stream, fmt = _gray_decoder(container, info)
    fps = info.fps or 1.0
    tb = stream.time_base
    t0 = info.start_pts if info.start_pts is not None else (stream.start_time or 0)

    def index_of(frame: av.VideoFrame, fallback: int) -> int:
        if frame.pts is None or tb is None:
            return fallback
        return round(float((frame.pts - t0) * tb) * fps)

    codec = stream.codec_context.name
    expected = info.n_frames
    # AVI stores no presentation times: with B-frames the demuxer's pts are decode-order
    # counters, right only for a keyframe (the first frame shown of its group). Count
    # frames in output order from there.
    # The same from the first frame in videos whose times are not trusted at all.
    seekable = info.seekable
    counted = not seekable or (
        bool(stream.codec_context.has_b_frames) and "avi" in container.format.name
    )
    seek_to = start  # seek to the keyframe at or before this frame
    index = 0
    try:
        while True:
            index = 0
            if seek_to > 0 and seekable and (codec in _INTRA_ONLY or codec == "ffv1" or start > 8):
                _seek(container, stream, p, start, t0 + math.floor(seek_to / fps / tb) if tb else 0)
                index = -1  # unknown until the first frame's pts
            elif seek_to < start:  # backing off to the first frame
                _seek(container, stream, p, start, None)
            located = landed_past = False
            for frame in container.decode(stream):
                if not (counted and located):
                    index = index_of(frame, index if index >= 0 else 0) if seekable else 0
                    if not located and index > start and seek_to > 0:
                        # The seek landed past the start: an AVI's index is in decode order,
                        # so with B-frames the keyframe found for a frame's time may be the
                        # one after it (an H.264 AVI lost frame 13 of a read from 13 this
                        # way). Seek again before the frame the seek found.
                        seek_to = max(0, seek_to - (index - start) - 1)
                        landed_past = True
                        break
                    located = True
                if index < start:
                    index += 1
                    continue
                if stop is not None and index >= stop:
                    return
                yield index, _same_as_first(frame.to_ndarray(format=fmt), info, p, index)
                index += 1
            if not landed_past:
                break
    except av.FFmpegError as error:
        raise VideoError(p, max(index, start), f"cannot decode ({error})") from error
    if expected is not None:
        _check_not_short(p, index, start, stop, expected)


def _gray_decoder(
    container: av.container.InputContainer, info: VideoInfo
) -> tuple[av.video.stream.VideoStream, str]:
    """The video stream decoding on this thread only (one core per worker; the batch
    runner parallelises videos), and the gray format its frames are converted to."""
    stream = container.streams.video[0]
    stream.thread_type = "NONE"
    return stream, "gray16le" if info.dtype == "uint16" else "gray"


def _check_not_short(p: str, reached: int, start: int, stop: int | None, total: int) -> None:
    """A read that ended at frame ``reached`` before ``stop`` (or the video's ``total``
    frames) met the end of the data: truncated, named from the first frame missing."""
    if reached < (total if stop is None else min(stop, total)):
        raise VideoError(
            p, max(reached, start), f"truncated: video ends after {reached} of {total} frames"
        )


def _iter_indexed(
    container: av.container.InputContainer,
    p: str,
    info: VideoInfo,
    start: int,
    stop: int | None,
    index: _FrameIndex,
) -> Iterator[tuple[int, np.ndarray]]:
    """Frames ``[start, stop)`` of an MPEG program or transport stream: from a keyframe's
    byte position before ``start``, each decoded frame named by its time in ``index``.

    After a byte seek the first packets may be cut or carry the next packet's time (a
    program stream read from frame 1's pack gave a 1,605-byte piece of it, then its
    picture with frame 2's time): packets are fed to the decoder from the first that is
    a keyframe exactly as indexed. When that keyframe is past ``start`` (the keyframe at
    the seek position was cut), the read starts again further back. Frames that never
    come out of the decoder (damaged data) end the read with an error naming the first.
    """
    stream, fmt = _gray_decoder(container, info)
    nxt = start  # the next frame due

    def frames(decoded: Iterator[av.VideoFrame], anchor: int) -> Iterator[tuple[int, np.ndarray]]:
        nonlocal nxt
        for frame in decoded:
            k = index.frame_of(frame.pts)
            if k is None or k < max(start, anchor, nxt):  # and frames shown before it
                continue
            if k > nxt and (stop is None or nxt < stop):  # never came out of the decoder
                last = k if stop is None else min(k, stop)
                raise VideoError(p, nxt, f"cannot decode: frames {nxt} to {last - 1} damaged")
            if stop is not None and k >= stop:
                return
            yield k, _same_as_first(frame.to_ndarray(format=fmt), info, p, k)
            nxt = k + 1

    try:
        for at in index.seek_bytes(start):
            container.seek(at or 0, stream=stream, unsupported_byte_offset=True)
            packets = container.demux(stream)
            anchor = -1 if at is None else None
            if anchor is None:
                for packet in packets:
                    anchor = index.key_at(packet)
                    if anchor is not None:
                        break
                if anchor is None or anchor > start:
                    continue  # no whole keyframe at or before the start: further back
                packets = itertools.chain([packet], packets)
            # (demux ends with an empty packet: decoding it flushes the decoder)
            yield from frames(itertools.chain.from_iterable(map(stream.decode, packets)), anchor)
            break
    except av.FFmpegError as error:
        raise VideoError(p, nxt, f"cannot decode ({error})") from error
    _check_not_short(p, nxt, start, stop, len(index.pts))


def _seek(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    p: str,
    start: int,
    target: int | None,
) -> None:
    """Seek to the keyframe at or before ``target`` (pts; None: the first frame)."""
    codec = stream.codec_context.name
    try:
        if target is None:
            container.seek(0, stream=stream)
        else:
            container.seek(target, stream=stream, backward=True, any_frame=codec in _INTRA_ONLY)
    except av.FFmpegError:
        try:
            container.seek(0, stream=stream)
        except av.FFmpegError as error:
            # e.g. EPERM: no keyframe at or before the start (a file cut mid-GOP)
            raise VideoError(
                p, start, f"cannot seek to frame {start} ({codec}): {error}"
            ) from error


CODECS = ("rawvideo", "ffv1", "mjpeg", "h264", "mpeg4", "mpeg2video")
"""What :func:`write_video` writes."""


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    codec: str = "rawvideo",
    *,
    keyframe_every: int | None = None,
) -> None:
    """Write 2-D gray frames to a video file (AVI for rawvideo/ffv1/mjpeg, MP4/MKV for h264).

    Parameters
    ----------
    path : path
        Output file; the container follows the suffix.
    frames : iterable of (H, W) uint8 arrays (uint16 allowed for rawvideo/ffv1)
        All the same shape; consumed lazily.
    fps : float
        Frame rate (ISIIS: ~13.7).
    codec : {"rawvideo", "ffv1", "mjpeg", "h264", "mpeg4", "mpeg2video"}
        ``rawvideo`` is uncompressed gray8 (what ISIIS records); ``ffv1`` lossless;
        ``mjpeg`` lossy intra-only (quality ~95); ``h264``/``mpeg4``/``mpeg2video``
        lossy inter-frame (MPEG-2 for ``.mpg``/``.ts`` program and transport streams; it
        takes rates such as 10, 25 or 30 frames/s, not ISIIS's 13.7).
    keyframe_every : int, optional
        Frames between keyframes for ``ffv1`` (default 1: exact, cheap seeks; FFmpeg's
        own default is 12, as in archives made with the ``ffmpeg`` tool) and the lossy
        inter-frame codecs (default: the encoder's).
    """
    if keyframe_every is not None and keyframe_every < 1:
        raise ValueError(f"keyframe_every must be >= 1, got {keyframe_every}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    p = Path(path)
    container = av.open(str(p), "w")
    stream = None
    try:
        for i, frame in enumerate(frames):
            if frame.ndim != 2 or frame.dtype not in (np.uint8, np.uint16):
                raise ValueError(
                    f"{p}: frame {i}: need 2-D uint8/uint16, got {frame.dtype} {frame.shape}"
                )
            sixteen = frame.dtype == np.uint16
            if stream is None:
                stream = _add_stream(container, codec, fps, frame.shape, sixteen, keyframe_every)
            elif (frame.shape[0], frame.shape[1]) != (stream.height, stream.width):
                raise ValueError(
                    f"{p}: frame {i}: shape {frame.shape} differs from the first frame"
                )
            src = av.VideoFrame.from_ndarray(frame, format="gray16le" if sixteen else "gray")
            if stream.pix_fmt not in ("gray", "gray16le"):
                src = src.reformat(format=stream.pix_fmt)
            src.pts = i
            for packet in stream.encode(src):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"{p}: no frames to write")
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()


def _add_stream(
    container: av.container.OutputContainer,
    codec: str,
    fps: float,
    shape: tuple[int, ...],
    sixteen: bool,
    keyframe_every: int | None = None,
) -> av.video.stream.VideoStream:
    rate = Fraction(fps).limit_denominator(1001)
    name = {"h264": "libx264"}.get(codec, codec)
    stream = container.add_stream(name, rate=rate)
    stream.height, stream.width = int(shape[0]), int(shape[1])
    stream.time_base = 1 / rate
    if sixteen and codec not in ("rawvideo", "ffv1"):
        raise ValueError(f"codec {codec} cannot store 16-bit frames; use rawvideo or ffv1")
    if codec == "rawvideo" and Path(container.name).suffix.lower() in (".mov", ".mp4"):
        raise ValueError("rawvideo gray in MOV/MP4 reads back wrong; use AVI or MKV")
    if sixteen and codec == "rawvideo" and Path(container.name).suffix.lower() != ".nut":
        # AVI/MKV cannot label raw gray16 (readers see rgb555); NUT can, FFV1 anywhere.
        raise ValueError("16-bit rawvideo needs a .nut file; use codec='ffv1' for AVI")
    if codec in ("rawvideo", "ffv1"):
        stream.pix_fmt = "gray16le" if sixteen else "gray"
        if codec == "ffv1":
            # every frame a keyframe by default: exact, cheap seeks
            stream.codec_context.gop_size = keyframe_every or 1
            # Version 3 with per-slice CRCs (FFmpeg logs mismatches; decoding still conceals
            # them, see iter_frames), and slices that decode in parallel where allowed.
            stream.options = {"level": "3", "slicecrc": "1"}
    elif codec == "mjpeg":
        stream.pix_fmt = "yuvj444p"
        stream.options = {"qscale": "2"}
        stream.codec_context.qmin = stream.codec_context.qmax = 2
    elif codec == "h264":
        stream.pix_fmt = (
            "gray" if "gray" in [f.name for f in stream.codec.video_formats] else "yuv420p"
        )
        stream.options = {"crf": "12", "preset": "veryfast"}
    else:
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 40_000_000
    if keyframe_every is not None and codec in ("h264", "mpeg4", "mpeg2video"):
        stream.codec_context.gop_size = keyframe_every
    return stream
