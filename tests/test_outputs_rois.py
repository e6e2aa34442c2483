"""ROI tar archives: round trip, filters, masks, robustness."""

from __future__ import annotations

import io
import tarfile

import cv2
import numpy as np
import pytest
from plankline.outputs.naming import roi_id
from plankline.outputs.rois import (
    encode_image,
    encode_images,
    iter_roi_tar,
    iter_roi_tar_bytes,
    write_roi_tar,
)


def _crops(n: int, seed: int = 0) -> tuple[list[str], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    ids = [roi_id("20180706170805.476", i, i * 2048 + 7, 3 * i, i) for i in range(n)]
    crops = [
        rng.integers(0, 256, (int(rng.integers(5, 40)), int(rng.integers(5, 40))), dtype=np.uint8)
        for _ in range(n)
    ]
    return ids, crops


def test_png_tar_round_trip_is_lossless_and_ordered(tmp_path):
    ids, crops = _crops(30)
    p = tmp_path / "20180706170805.476.tar"
    write_roi_tar(p, ids, crops)
    got = list(iter_roi_tar(p))
    assert [r for r, _ in got] == ids
    for (_, img), crop in zip(got, crops, strict=True):
        assert img.dtype == np.uint8 and np.array_equal(img, crop)
    with tarfile.open(p) as t:
        assert t.getnames() == [f"{i}.png" for i in ids]


def test_uint16_crops_survive_in_unchanged_mode(tmp_path):
    crop = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    write_roi_tar(tmp_path / "a.tar", ["r1"], [crop])
    ((_, img),) = iter_roi_tar(tmp_path / "a.tar", mode="unchanged")
    assert img.dtype == np.uint16 and np.array_equal(img, crop)


def test_jpeg_tar_is_close_to_the_original(tmp_path):
    crop = cv2.GaussianBlur(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)), (5, 5), 0)
    write_roi_tar(tmp_path / "j.tar", ["a"], [crop], fmt="jpg")
    ((rid, img),) = iter_roi_tar(tmp_path / "j.tar")
    assert rid == "a" and np.abs(img.astype(int) - crop).mean() < 2


def test_names_filter_reads_only_wanted_members(tmp_path):
    ids, crops = _crops(20)
    write_roi_tar(tmp_path / "c.tar", ids, crops)
    want = {ids[3], ids[17] + ".png"}  # by id or by member name
    got = dict(iter_roi_tar(tmp_path / "c.tar", want))
    assert sorted(got) == sorted([ids[3], ids[17]])
    assert np.array_equal(got[ids[17]], crops[17])


def test_gzipped_tar_is_read_too(tmp_path):
    ids, crops = _crops(5)
    plain = tmp_path / "c.tar"
    write_roi_tar(plain, ids, crops)
    gz = tmp_path / "c.tar.gz"
    with tarfile.open(gz, "w:gz") as out, tarfile.open(plain) as src:
        for m in src:
            out.addfile(m, src.extractfile(m))
    assert [r for r, _ in iter_roi_tar(gz)] == ids


def test_masks_are_written_only_when_asked(tmp_path):
    ids, crops = _crops(3)
    masks = [(c > 128) for c in crops]
    write_roi_tar(tmp_path / "m.tar", ids, crops, masks=masks)
    assert [r for r, _ in iter_roi_tar(tmp_path / "m.tar")] == ids
    got = dict(iter_roi_tar(tmp_path / "m.tar", include_masks=True))
    assert np.array_equal(got[ids[1] + "_mask"] > 0, masks[1])
    with tarfile.open(tmp_path / "m.tar") as t:  # each mask right after its crop
        assert t.getnames() == [f"{r}{s}.png" for r in ids for s in ("", "_mask")]
    write_roi_tar(tmp_path / "n.tar", ids, crops)
    with tarfile.open(tmp_path / "n.tar") as t:
        assert not any("_mask" in n for n in t.getnames())


def test_bad_member_is_warned_and_skipped(tmp_path):
    ids, crops = _crops(2)
    p = tmp_path / "b.tar"
    write_roi_tar(p, ids, crops)
    with tarfile.open(p, "a") as t:
        info = tarfile.TarInfo("broken.png")
        info.size = 4
        t.addfile(info, io.BytesIO(b"junk"))
    with pytest.warns(UserWarning, match="broken.png"):
        got = [r for r, _ in iter_roi_tar(p)]
    assert got == ids


@pytest.mark.parametrize("in_memory", [False, True])
def test_truncated_tar_warns_and_keeps_earlier_members(tmp_path, in_memory):
    """Also from memory (the stream's collector), where a plain archive has a fast reader."""
    ids, crops = _crops(10)
    p = tmp_path / "t.tar"
    write_roi_tar(p, ids, crops)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    source = io.BytesIO(p.read_bytes()) if in_memory else p
    with pytest.warns(UserWarning, match="truncated|corrupt"):
        got = [r for r, _ in iter_roi_tar(source)]
    assert 0 < len(got) < 10 and got == ids[: len(got)]


def test_write_rejects_bad_inputs_and_writes_nothing(tmp_path):
    ids, crops = _crops(2)
    p = tmp_path / "x.tar"
    with pytest.raises(ValueError, match="repeated"):
        write_roi_tar(p, [ids[0], ids[0]], crops)
    with pytest.raises(ValueError, match="2 ids but 1 crops"):
        write_roi_tar(p, ids, crops[:1])
    with pytest.raises(ValueError, match="float64"):
        write_roi_tar(p, ids[:1], [np.zeros((4, 4))])
    with pytest.raises(ValueError, match="must match"):
        write_roi_tar(p, ["a b"], crops[:1])
    assert list(tmp_path.iterdir()) == []


def test_fixed_mtime_gives_byte_identical_archives(tmp_path):
    ids, crops = _crops(4)
    write_roi_tar(tmp_path / "a.tar", ids, crops, mtime=0)
    write_roi_tar(tmp_path / "b.tar", ids, crops, mtime=0)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_bytes_iterator_returns_encoded_members(tmp_path):
    ids, crops = _crops(2)
    write_roi_tar(tmp_path / "a.tar", ids, crops)
    ((rid, member, data),) = iter_roi_tar_bytes(tmp_path / "a.tar", {ids[1]})
    assert rid == ids[1] and member == ids[1] + ".png" and data.startswith(b"\x89PNG")


def test_encoded_bytes_are_stored_as_they_are_and_checked(tmp_path):
    ids, crops = _crops(3)
    encoded = encode_images(ids, crops, "png")
    write_roi_tar(tmp_path / "arrays.tar", ids, crops, mtime=0)
    write_roi_tar(tmp_path / "bytes.tar", ids, encoded, mtime=0)
    assert (tmp_path / "arrays.tar").read_bytes() == (tmp_path / "bytes.tar").read_bytes()
    with pytest.raises(ValueError, match=f"{ids[1]}.*not jpg"):
        encode_images(ids, [crops[0], encoded[1], crops[2]], "jpg")
    with pytest.raises(ValueError, match="not png"):
        write_roi_tar(tmp_path / "bad.tar", ids[:1], [b"GIF89a"])
    assert not (tmp_path / "bad.tar").exists()


def test_png_crops_are_lossless_with_no_row_filter():
    """Default PNG crops: every row unfiltered (filter type 0, smaller than SUB on
    flat-fielded crops: see encode_image) and the pixels decode back exactly."""
    import struct
    import zlib

    rng = np.random.default_rng(4)
    crop = np.clip(rng.normal(250, 6, (23, 31)), 0, 255).astype(np.uint8)
    crop[5:15, 8:20] = 90
    data = encode_image(crop)
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(23, 32)
    assert (rows[:, 0] == 0).all()
    np.testing.assert_array_equal(rows[:, 1:], crop)
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), -1), crop)
