"""Videos in the object store are read in place: ranged GETs of only the frames asked for.

Against the session's real SeaweedFS: ``S3Store.open_object`` gives a seekable file that
PyAV opens like a local one; the frames equal the file's on disk, and the bytes fetched
are those of the frames read (plus the container's header and index), not the object.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from plankline.imaging.synth import synth_frames
from plankline.imaging.video import iter_frames, probe_video, write_video

pytestmark = pytest.mark.integration

H, W, N = 192, 256, 40
BLOCK = 64 << 10


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(synth_frames(N, seed=4, height=H, width=W, density=14.0)[0])


def _upload(store, tmp_path: Path, frames, name: str, codec: str, gop: int | None = None):
    path = tmp_path / name
    write_video(path, frames, 10, codec, keyframe_every=gop)
    store.put_file(f"cruise/{name}", path)
    return path


def test_frames_read_by_range_equal_the_file_and_cost_only_their_bytes(
    s3_store, tmp_path: Path, frames
) -> None:
    path = _upload(s3_store, tmp_path, frames, "raw.avi", "rawvideo")
    reader = s3_store.open_object("cruise/raw.avi", block_size=BLOCK, readahead_bytes=4 * BLOCK)
    assert reader.size == path.stat().st_size and reader.name.endswith("/cruise/raw.avi")
    info = probe_video(reader)
    assert (info.n_frames, info.width, info.height) == (N, W, H)
    got = list(iter_frames(reader, 30, 34, info=info))
    assert [i for i, _ in got] == [30, 31, 32, 33]
    assert all(np.array_equal(f, frames[i]) for i, f in got)
    # header + index blocks, the first frame (the open reads it), frames 30-34 and the
    # read-ahead of sequential reads (4 blocks)
    budget = 8 * BLOCK + 5 * H * W
    assert reader.bytes_fetched <= budget < 0.4 * reader.size
    # opening again for the next read of the same chunk re-uses the cached blocks
    before = reader.bytes_fetched
    assert [i for i, _ in iter_frames(reader, 31, 33, info=info)] == [31, 32]
    assert reader.bytes_fetched == before


@pytest.mark.parametrize(
    ("codec", "name", "gop"),
    [("ffv1", "v.mkv", 10), ("h264", "v.mp4", 10), ("mjpeg", "v.avi", None)],
)
def test_compressed_videos_seek_by_range_from_their_keyframe(
    s3_store, tmp_path: Path, frames, codec: str, name: str, gop: int | None
) -> None:
    path = _upload(s3_store, tmp_path, frames * 4, name, codec, gop)  # 160 frames
    reader = s3_store.open_object(f"cruise/{name}", block_size=BLOCK, readahead_bytes=4 * BLOCK)
    want = list(iter_frames(path, 133, 137))
    got = list(iter_frames(reader, 133, 137, info=probe_video(reader, n_frames=4 * N)))
    assert [i for i, _ in got] == [i for i, _ in want] == [133, 134, 135, 136]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))
    assert reader.bytes_fetched < 0.5 * reader.size  # not the whole object


def test_reads_past_the_end_and_before_the_start_behave_like_a_file(s3_store) -> None:
    data = bytes(range(256)) * 1000
    s3_store.put_bytes("blob", data)
    reader = s3_store.open_object("blob", block_size=BLOCK, readahead_bytes=4 * BLOCK)
    local = io.BytesIO(data)
    for offset, whence, n in [(0, 0, 10), (70_000, 0, 200_000), (-5, 2, 100), (3, 1, -1)]:
        assert reader.seek(offset, whence) == local.seek(offset, whence)
        assert reader.read(n) == local.read(n)
    assert reader.read(10) == b""
    with pytest.raises(ValueError, match="before the start"):
        reader.seek(-1)
    with pytest.raises(KeyError, match="does not exist"):
        s3_store.open_object("missing")


def test_an_object_overwritten_mid_read_fails_instead_of_mixing_versions(s3_store) -> None:
    from minio.error import S3Error

    s3_store.put_bytes("video", b"a" * 300_000)
    reader = s3_store.open_object("video", block_size=BLOCK, readahead_bytes=4 * BLOCK)
    assert reader.read(10) == b"a" * 10
    s3_store.put_bytes("video", b"b" * 300_000)
    with pytest.raises(S3Error) as error:
        reader.seek(200_000)
        reader.read(10)
    assert error.value.code == "PreconditionFailed"
