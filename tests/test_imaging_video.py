"""Video I/O: exact round trips, exact seeks, clear errors naming file and frame."""

from __future__ import annotations

import io
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from plankline.imaging.video import VideoError, iter_frames, probe_video, write_video


def _frames(n: int = 12, h: int = 48, w: int = 64) -> list[np.ndarray]:
    """Smooth texture plus a dark square that moves with the frame index, so even lossy
    codecs leave each frame closest to its own reference."""
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(60, 200, (h, w), dtype=np.uint8), (0, 0), 2)
    frames = []
    for i in range(n):
        f = base.copy()
        x, y = (3 * i) % (w - 8), (5 * i) % (h - 8)
        f[y : y + 8, x : x + 8] = 10
        frames.append(f)
    return frames


@pytest.mark.parametrize(("codec", "tolerance"), [("rawvideo", 0), ("ffv1", 0), ("mjpeg", 2)])
def test_write_then_read_roundtrip_per_codec(tmp_path, codec: str, tolerance: float) -> None:
    frames = _frames()
    path = tmp_path / f"v_{codec}.avi"
    write_video(path, iter(frames), fps=13.7, codec=codec)
    info = probe_video(path)
    assert (info.n_frames, info.width, info.height, info.dtype) == (12, 64, 48, "uint8")
    assert info.fps == pytest.approx(13.7, rel=1e-3)
    got = list(iter_frames(path))
    assert [i for i, _ in got] == list(range(12))
    for (_, frame), ref in zip(got, frames, strict=True):
        assert frame.dtype == np.uint8 and frame.shape == (48, 64)
        assert np.abs(frame.astype(int) - ref).mean() <= tolerance


@pytest.mark.parametrize("codec", ["rawvideo", "ffv1", "mjpeg", "h264"])
def test_iter_frames_start_stop_seeks_to_exact_frames(tmp_path, codec: str) -> None:
    frames = _frames(20)
    path = tmp_path / ("v.mp4" if codec == "h264" else "v.avi")
    write_video(path, frames, fps=10, codec=codec)
    got = list(iter_frames(path, start=13, stop=17))
    assert [i for i, _ in got] == [13, 14, 15, 16]
    for i, frame in got:
        errors = [np.abs(frame.astype(int) - ref).mean() for ref in frames]
        assert int(np.argmin(errors)) == i


def test_sixteen_bit_ffv1_roundtrip_is_lossless(tmp_path) -> None:
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 65535, (32, 40), dtype=np.uint16) for _ in range(4)]
    write_video(tmp_path / "v16.avi", frames, fps=5, codec="ffv1")
    assert probe_video(tmp_path / "v16.avi").dtype == "uint16"
    got = [f for _, f in iter_frames(tmp_path / "v16.avi")]
    assert all(
        g.dtype == np.uint16 and np.array_equal(g, r) for g, r in zip(got, frames, strict=True)
    )


@pytest.mark.parametrize(
    ("suffix", "dtype"), [(".png", np.uint8), (".tif", np.uint16), (".png", np.uint16)]
)
def test_folder_of_frames_is_read_in_name_order(tmp_path, suffix: str, dtype: type) -> None:
    rng = np.random.default_rng(2)
    top = 255 if dtype == np.uint8 else 65535
    frames = [rng.integers(0, top, (30, 20), dtype=dtype) for _ in range(5)]
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"frame_{i:04d}{suffix}"), f)
    (tmp_path / "notes.txt").write_text("not a frame")
    info = probe_video(tmp_path)
    assert (info.n_frames, info.fps, info.width, info.height) == (5, None, 20, 30)
    assert info.dtype == np.dtype(dtype).name
    got = list(iter_frames(tmp_path, start=1, stop=4))
    assert [i for i, _ in got] == [1, 2, 3]
    assert all(np.array_equal(f, frames[i]) for i, f in got)


def test_unpadded_frame_numbers_are_read_in_number_order(tmp_path) -> None:
    """``f2`` before ``f10``: by text, a camera's unpadded counter read f1, f10, f11, f2."""
    frames = _frames(12)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"cam1_f{i + 1}.png"), frame)
    got = list(iter_frames(tmp_path))
    assert [i for i, _ in got] == list(range(12))
    assert all(np.array_equal(f, frames[i]) for i, f in got)


def test_colour_frames_become_gray(tmp_path) -> None:
    bgr = np.zeros((10, 12, 3), np.uint8)
    bgr[..., 1] = 200  # pure green
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    ((_, gray),) = list(iter_frames(tmp_path / "c.png"))
    assert gray.shape == (10, 12)
    assert gray.mean() == pytest.approx(0.587 * 200, abs=1.5)


def _truncated_avi(tmp_path, frames: list[np.ndarray]) -> Path:
    """``cut.avi``: an uncompressed AVI of 10 frames cut in the middle of its frames."""
    path = tmp_path / "x.avi"
    write_video(path, frames, fps=10)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    frame_bytes = 48 * 64
    cut.write_bytes(data[: len(data) - (len(data) - 10 * frame_bytes) // 2 - 4 * frame_bytes - 100])
    return cut


def test_truncated_avi_yields_good_frames_then_names_the_bad_one(tmp_path) -> None:
    frames = _frames(10)
    cut = _truncated_avi(tmp_path, frames)
    seen = []
    with pytest.raises(VideoError) as err:
        for i, frame in iter_frames(cut):
            seen.append(i)
            assert np.array_equal(frame, frames[i])
    assert seen == list(range(len(seen))) and 3 <= len(seen) <= 9
    assert err.value.frame == len(seen)
    assert err.value.path == str(cut)
    assert f"cut.avi: frame {len(seen)}:" in str(err.value)


def test_empty_and_missing_files_raise_video_error(tmp_path) -> None:
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe_video(empty)
    with pytest.raises(VideoError):
        list(iter_frames(empty))
    with pytest.raises(VideoError, match="no such"):
        probe_video(tmp_path / "missing.avi")
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoError) as err:
        probe_video(junk)
    assert err.value.frame is None and "junk.avi" in str(err.value)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(VideoError, match="no image frames"):
        probe_video(tmp_path / "nothing")


#: (codec, container, keyframe_every): every codec the batch reads, in each container that
#: holds it; FFV1 and H.264 with keyframes every 4 frames, as the ffmpeg tool writes them;
#: MPEG transport and program streams, read from the first frame (their times after a
#: seek are guessed: frames came out twice, late, or not at all).
CONTAINERS = [
    ("rawvideo", ".avi", None),
    ("rawvideo", ".mkv", None),
    ("ffv1", ".avi", 4),
    ("ffv1", ".mkv", 4),
    ("mjpeg", ".avi", None),
    ("mjpeg", ".mp4", None),
    ("mjpeg", ".mkv", None),
    ("h264", ".avi", 4),
    ("h264", ".mp4", 4),
    ("h264", ".mkv", 4),
    ("h264", ".ts", 4),
    ("h264", ".m2ts", None),
    ("mpeg2video", ".mpg", 4),
    ("mpeg2video", ".vob", 4),
    ("mpeg2video", ".m2v", 4),  # raw MPEG video: no times of its own, read by counting
]


@pytest.mark.parametrize(("codec", "suffix", "gop"), CONTAINERS)
def test_every_frame_comes_out_at_its_own_index_in_every_container(
    tmp_path, codec: str, suffix: str, gop: int | None
) -> None:
    """Whole reads and reads starting between keyframes give each frame its own index (an
    H.264 AVI, which stores decode times, once gave every frame the next one's index)."""
    frames = _frames(14)
    path = tmp_path / f"v{suffix}"
    write_video(path, frames, fps=10, codec=codec, keyframe_every=gop)
    assert probe_video(path).n_frames == 14
    for start, stop in ((0, None), (6, 11), (13, 14)):
        got = list(iter_frames(path, start, stop))
        assert [i for i, _ in got] == list(range(start, stop or 14))
        for i, frame in got:
            errors = [np.abs(frame.astype(int) - ref).mean() for ref in frames]
            assert int(np.argmin(errors)) == i


@pytest.mark.parametrize(("codec", "suffix", "gop"), CONTAINERS)
def test_a_read_from_any_frame_starts_at_that_frame(
    tmp_path, codec: str, suffix: str, gop: int | None
) -> None:
    """Every start, not only some: an H.264 AVI's index is in decode order, so the seek for
    frame 13 landed on the keyframe of frame 14, and a read from 13 silently began at 14."""
    frames = _frames(28)
    path = tmp_path / f"v{suffix}"
    write_video(path, frames, fps=10, codec=codec, keyframe_every=gop)
    for start in range(26):
        got = list(iter_frames(path, start, start + 3))
        assert [i for i, _ in got] == [start, start + 1, start + 2], start
        for i, frame in got:
            errors = [np.abs(frame.astype(int) - ref).mean() for ref in frames]
            assert int(np.argmin(errors)) == i


@pytest.mark.parametrize(("codec", "suffix", "gop"), [*CONTAINERS, ("ffv1", ".mkv", 12)])
def test_an_open_file_gives_the_frames_of_the_path(
    tmp_path, codec: str, suffix: str, gop: int | None
) -> None:
    """The stream reads videos through file objects over S3: same decoder, same frames."""
    import dataclasses
    import io

    frames = _frames(10)
    if codec == "ffv1" and gop == 12:
        frames = [f.astype(np.uint16) * 257 + 3 for f in frames]  # 16-bit
    path = tmp_path / f"v{suffix}"
    write_video(path, frames, fps=10, codec=codec, keyframe_every=gop)
    data = io.BytesIO(path.read_bytes())
    info = probe_video(data)
    assert info == dataclasses.replace(probe_video(path), path=info.path)
    for start, stop in ((0, None), (5, 9)):
        a = list(iter_frames(path, start, stop))
        b = list(iter_frames(data, start, stop, info=info))
        assert [i for i, _ in a] == [i for i, _ in b] == list(range(start, stop or 10))
        assert all(
            x.dtype == y.dtype and np.array_equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True)
        )


def test_a_video_cut_between_keyframes_names_the_frame_it_cannot_seek_to(tmp_path) -> None:
    """Packets copied from the middle of an FFV1 group of frames cannot be decoded alone:
    a clear error naming the file and frame, not FFmpeg's bare 'Operation not permitted'."""

    path = tmp_path / "v.avi"
    write_video(path, _frames(12), fps=10, codec="ffv1", keyframe_every=12)
    cut = tmp_path / "cut.avi"
    with av.open(str(path)) as src, av.open(str(cut), "w") as out:
        stream = src.streams.video[0]
        target = out.add_stream_from_template(stream)
        for k, packet in enumerate(p for p in src.demux(stream) if p.size):
            if k >= 2:
                packet.stream, packet.pts, packet.dts = target, k - 2, k - 2
                packet.time_base = stream.time_base
                out.mux(packet)
    with pytest.raises(VideoError) as err:
        list(iter_frames(cut, 3, 6))
    assert err.value.path == str(cut) and err.value.frame is not None
    assert "cut.avi: frame" in str(err.value)


#: reads as consecutive chunks of 8 frames make them (prime 3 frames before, then the chunk
#: from one frame before its start to 2 frames past its stop, left unfinished), then reads
#: that must seek (back before the frames kept, forward past the decoder) and one that
#: continues from there to the end
CHUNK_READS = [(0, 3), (0, 10), (5, 8), (7, 18), (13, 16), (15, 26), (2, 4), (20, 22), (22, None)]


@pytest.mark.parametrize(("codec", "suffix", "gop"), [*CONTAINERS, ("frames", "", None)])
def test_continuous_reader_gives_iter_frames_frames_with_one_seek_per_run(
    tmp_path, codec: str, suffix: str, gop: int | None
) -> None:
    """Chunk after chunk through one decoder: every read gives exactly what iter_frames
    gives for it, and only the reads outside the frames kept seek."""
    from plankline.imaging.video import ContinuousReader

    frames = _frames(28)
    if codec == "frames":
        path = tmp_path / "frames"
        path.mkdir()
        for i, f in enumerate(frames):
            cv2.imwrite(str(path / f"f{i:03d}.png"), f)
    else:
        path = tmp_path / f"v{suffix}"
        write_video(path, frames, fps=10, codec=codec, keyframe_every=gop)
    read = ContinuousReader(path, keep=6)
    seeks = []
    for start, stop in CHUNK_READS:
        it = read(start, stop)
        want = list(iter_frames(path, start, stop))
        got = [next(it) for _ in want]  # and left unfinished, as a chunk leaves its read
        assert [i for i, _ in got] == [i for i, _ in want]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))
        seeks.append(read.seeks)
    # one seek for the three chunks, one back to frame 2, one forward past the decoder (20)
    # (where seeks work: else it decodes on) and none to go on from there
    forward = 1 if read.info is None or read.info.seekable else 0
    assert seeks == [1, 1, 1, 1, 1, 1, 2, 2 + forward, 2 + forward]
    read.close()


def test_continuous_reader_reraises_a_bad_frame_and_reads_before_it_again(tmp_path) -> None:
    """A read that meets damaged data fails as iter_frames does (after the good frames,
    naming the frame); the decoder is dropped and a later read of good frames seeks."""
    from plankline.imaging.video import ContinuousReader

    frames = _frames(10)
    cut = _truncated_avi(tmp_path, frames)
    with pytest.raises(VideoError) as want:
        list(iter_frames(cut))
    read = ContinuousReader(cut)
    seen = []
    with pytest.raises(VideoError) as err:
        for i, frame in read(0, None):
            seen.append(i)
            assert np.array_equal(frame, frames[i])
    assert str(err.value) == str(want.value) and seen == list(range(want.value.frame))
    assert [i for i, _ in read(1, 3)] == [1, 2] and read.seeks == 2
    with pytest.raises(ValueError, match="start"):
        read(5, 4)


def test_a_frame_of_another_size_is_a_frame_error_naming_its_file(tmp_path) -> None:
    """One image of another size (or type) in a frame folder fails as that frame, naming the
    file, after the good frames; the frames after it are read from the next one on."""
    from plankline.imaging.video import FrameError

    frames = _frames(5)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), frame)
    cv2.imwrite(str(tmp_path / "f2.png"), frames[2][:20])
    seen = []
    with pytest.raises(FrameError) as err:
        for i, _ in iter_frames(tmp_path):
            seen.append(i)
    assert seen == [0, 1] and err.value.frame == 2
    why = "64x20 uint8 frame, unlike the first frame (64x48 uint8)"
    assert str(err.value) == f"{tmp_path / 'f2.png'}: frame 2: {why}"
    assert [i for i, _ in iter_frames(tmp_path, 3)] == [3, 4]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_variable_frame_rate_video_gives_every_frame_once_in_order(tmp_path, suffix) -> None:
    """A recorder that dropped 3 frames leaves a gap in the times: numbered by its times,
    an MKV's frames ran to 22 of 20 (the last 3 never read) and an MP4 had two frames 3.
    Such a video is numbered by counting, from its first frame."""
    from fractions import Fraction

    frames = _frames(20)
    path = tmp_path / f"vfr{suffix}"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 10)
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="gray").reformat(format="yuv420p")
            picture.pts, picture.time_base = (i if i < 10 else i + 3), Fraction(1, 10)
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    info = probe_video(path)
    assert info.n_frames == 20 and not info.seekable
    for start in (0, 15):
        got = list(iter_frames(path, start))
        assert [i for i, _ in got] == list(range(start, 20))
        for i, frame in got:
            errors = [np.abs(frame.astype(int) - ref).mean() for ref in frames]
            assert int(np.argmin(errors)) == i


def test_continuous_reader_keeps_frames_within_its_byte_budget(tmp_path) -> None:
    """Big frames (a 4096 x 4096 16-bit camera) are kept within ``keep_bytes``: fewer kept,
    the next chunk's frames are read again (a seek), the same frames."""
    from plankline.imaging.video import ContinuousReader

    frames = _frames(28)
    path = tmp_path / "v.avi"
    write_video(path, frames, fps=10)
    tight = ContinuousReader(path, keep=6, keep_bytes=3 * frames[0].nbytes)
    roomy = ContinuousReader(path, keep=6)
    for read in (tight, roomy):
        for start, stop in CHUNK_READS:
            got = [f for _, f in read(start, stop)]
            want = [f for _, f in iter_frames(path, start, stop)]
            assert len(got) == len(want) and all(map(np.array_equal, got, want))
        assert len(read._recent) <= (3 if read is tight else 6)
    assert tight.seeks > roomy.seeks == 3


class _CountingFile(io.RawIOBase):
    """A video's bytes as an open file that counts what is read; ``identity`` names the
    version, as the stream's ranged S3 reader does, so a reader may cache what it learnt."""

    def __init__(self, data: bytes, identity: tuple[object, ...] | None) -> None:
        self.data, self.pos, self.bytes_read = data, 0, 0
        self.identity = identity
        self.name = "counted.ts"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: len(self.data)}[whence]
        self.pos += offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        chunk = self.data[self.pos : self.pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        self.bytes_read += len(chunk)
        return len(chunk)


@pytest.mark.parametrize(("codec", "suffix"), [("h264", ".ts"), ("mpeg2video", ".mpg")])
def test_mpeg_streams_are_read_from_a_keyframe_near_the_start_not_from_the_first_frame(
    tmp_path, codec: str, suffix: str
) -> None:
    """A transport or program stream was decoded from its first frame at every read: its
    chunks cost the square of its length. Its frame index (one pass over its packets,
    made once per version of the file) lets a read start at a keyframe before its first
    frame: reading 3 frames at the end of 600 reads a small part of the file (opening it
    reads the first ~100 frames), and the frames are those of decoding it all."""
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (48, 64), dtype=np.uint8) for _ in range(600)]
    path = tmp_path / f"v{suffix}"
    write_video(path, frames, fps=10, codec=codec, keyframe_every=6)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    data = path.read_bytes()
    source = _CountingFile(data, identity=("test", suffix))
    info = probe_video(source)  # one pass over the packets, the index kept
    assert info.n_frames == 600 and info.seekable
    source.bytes_read = 0
    got = list(iter_frames(source, 595, 598, info=info))
    assert [i for i, _ in got] == [595, 596, 597]
    assert all(np.array_equal(frame, decoded[i]) for i, frame in got)
    assert source.bytes_read < len(data) / 3
    for start in range(0, 598, 23):  # and from anywhere, exactly
        got = list(iter_frames(path, start, start + 3))
        assert [i for i, _ in got] == [start, start + 1, start + 2]
        assert all(np.array_equal(frame, decoded[i]) for i, frame in got), start


def test_damaged_frames_of_an_mpeg_stream_are_named_not_skipped(tmp_path) -> None:
    """Frames the decoder cannot give (zeroed bytes mid-file) end the read with an error
    naming the first of them, after every good frame before; frames after the damage
    read fine. Numbered by their times, they would otherwise be a silent gap."""
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (48, 64), dtype=np.uint8) for _ in range(200)]
    path = tmp_path / "v.ts"
    write_video(path, frames, fps=10, codec="h264", keyframe_every=6)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 20000] = bytes(20000)
    path.write_bytes(bytes(data))
    got = []
    with pytest.raises(VideoError, match="damaged") as error:
        got.extend(i for i, _ in iter_frames(path))
    assert got == list(range(len(got))) and error.value.frame == len(got)
    assert 60 < len(got) < 140
    after = [i for i, _ in iter_frames(path, 160, 170)]
    assert after == list(range(160, 170))
