"""The fast tar/zip writers give the bytes tarfile/zipfile write, so every reader agrees."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile

import numpy as np
import pytest
from plankline.outputs.archives import plain_tar_files, tar_bytes, write_tar, write_zip

STAMP = 1_530_896_885  # 2018-07-06 17:08:05 UTC


def _members(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 511, 512, 513, 1024, *rng.integers(1, 5000, max(0, n - 6)).tolist()][:n]
    return [
        (f"20180706170805.476_f{i:06d}_l{i * 37:08d}_x00012_r{i:04d}.png", rng.bytes(s))
        for i, s in enumerate(sizes)
    ]


def _tarfile_bytes(members: list[tuple[str, bytes]], mtime: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("n", [0, 1, 7, 40, 63, 64, 300])
def test_tar_is_byte_identical_to_tarfile_gnu_format(n: int) -> None:
    members = _members(n)
    assert b"".join(tar_bytes(members, mtime=STAMP)) == _tarfile_bytes(members, STAMP)


def test_tar_headers_built_as_one_array_keep_100_byte_names_and_sizes() -> None:
    members = [*_members(80), ("y" * 100, b"q" * 512), ("z", b""), ("w" * 99, b"r" * 8191)]
    assert b"".join(tar_bytes(members, mtime=STAMP)) == _tarfile_bytes(members, STAMP)


@pytest.mark.parametrize("many", [0, 100])
def test_tar_long_and_non_ascii_names_fall_back_to_tarfile_headers(many: int) -> None:
    """Also among enough members for the headers to be built as one array (>= 64)."""
    members = [("x" * 150 + ".png", b"abc"), ("copépode.png", b"\x00" * 700), ("a.png", b"z")]
    members += [*_members(many)[3:], ("y" * 100, b"q" * 512)]
    got = b"".join(tar_bytes(members, mtime=STAMP))
    assert got == _tarfile_bytes(members, STAMP)
    with tarfile.open(fileobj=io.BytesIO(got)) as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar] == members  # type: ignore[union-attr]


def _zipfile_bytes(
    members: list[tuple[str, bytes, bool]], date_time: tuple[int, ...], level: int | None = None
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data, deflate in members:
            info = zipfile.ZipInfo(name, date_time)  # type: ignore[arg-type]
            info.external_attr = 0o600 << 16
            method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            z.writestr(info, data, method, compresslevel=level)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("n", "level"), [(0, None), (1, None), (25, None), (25, 1), (63, 1), (64, 1), (300, None)]
)
def test_zip_is_byte_identical_to_zipfile(n: int, level: int | None) -> None:
    when = (2018, 7, 6, 17, 8, 5)
    members = [("ecotaxa_x.tsv", b"object_id\tobject_area\n[t]\t[f]\n" * 40, True)]
    members += [(name, data, False) for name, data in _members(n)]
    buf = io.BytesIO()
    write_zip(buf, members, date_time=when, **({} if level is None else {"level": level}))
    assert buf.getvalue() == _zipfile_bytes(members, when, level)
    with zipfile.ZipFile(buf) as z:
        assert z.testzip() is None
        assert [(i.filename, z.read(i)) for i in z.infolist()] == [(m, d) for m, d, _ in members]


def test_zip_of_many_members_with_names_of_any_length_and_deflated_ones_anywhere() -> None:
    """Names of 1 to 80 bytes, empty and deflated members among the stored ones: still
    zipfile's bytes."""
    rng = np.random.default_rng(3)
    members = [
        ("x" * (1 + i % 80) + f"{i}.png", rng.bytes(int(rng.integers(0, 3000))), i % 37 == 5)
        for i in range(200)
    ]
    members[17] = ("empty.png", b"", False)
    when = (2026, 12, 1, 4, 5, 6)
    buf = io.BytesIO()
    write_zip(buf, members, date_time=when, level=1)
    assert buf.getvalue() == _zipfile_bytes(members, when, 1)


def test_zip_with_more_members_than_the_zip_format_counts_goes_through_zipfile() -> None:
    members = [(f"{i}.png", b"\x89PNG", False) for i in range(70_000)]
    buf = io.BytesIO()
    write_zip(buf, members, date_time=(2020, 1, 1, 0, 0, 0))
    with zipfile.ZipFile(buf) as z:
        names = z.namelist()
    assert len(names) == 70_000 and names[-1] == "69999.png"


def test_write_tar_to_a_file_reads_back(tmp_path) -> None:
    members = _members(12, seed=3)
    with open(tmp_path / "a.tar", "wb") as f:
        write_tar(f, members, mtime=STAMP)
    with tarfile.open(tmp_path / "a.tar") as tar:
        got = [(m.name, tar.extractfile(m).read(), m.mtime, m.mode) for m in tar]  # type: ignore[union-attr]
    assert got == [(n, d, STAMP, 0o644) for n, d in members]


@pytest.mark.parametrize("mtime", [0, 1, STAMP, 8**11 - 1, 8**11])
def test_tar_headers_packed_once_per_archive_match_tarfile_for_any_mtime(mtime: int) -> None:
    """The per-archive fields (mode, ids, mtime) are packed and summed once; the headers
    still equal tarfile's, at the edges of the octal mtime field and past it (tarfile's
    GNU base-256 number)."""
    members = _members(9, seed=3)
    assert b"".join(tar_bytes(members, mtime=mtime)) == _tarfile_bytes(members, mtime)


def _tarfile_archive(members: list[tuple[str, bytes]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_plain_tar_files_reads_what_tarfile_reads(n: int) -> None:
    members = _members(n)
    assert plain_tar_files(b"".join(tar_bytes(members, mtime=STAMP))) == members
    # POSIX ustar (a long name split into prefix/name) and GNU archives of tarfile itself
    members += [("d" * 120 + "/" + "e" * 90 + ".png", b"x" * 700)]
    assert plain_tar_files(_tarfile_archive(members, tarfile.USTAR_FORMAT)) == members
    assert plain_tar_files(_tarfile_archive(members[:-1], tarfile.GNU_FORMAT)) == members[:-1]


def test_plain_tar_files_hands_everything_else_to_tarfile() -> None:
    """None, so ``tarfile`` reads (and names what is wrong): long names, pax headers,
    folders, a changed header byte, truncation, compression, no end blocks."""
    members = _members(5)
    plain = b"".join(tar_bytes(members, mtime=STAMP))
    long_name = [("x" * 150 + ".png", b"abc")]
    folder = tarfile.TarInfo("d")
    folder.type = tarfile.DIRTYPE
    with_folder = io.BytesIO()
    with tarfile.open(fileobj=with_folder, mode="w") as tar:
        tar.addfile(folder)
    corrupt = bytearray(plain)
    corrupt[1024] ^= 1  # the second member's one data byte: checksums cover headers only
    bad_header = bytearray(plain)
    bad_header[5] ^= 1  # a name byte of the first header
    others = [
        b"".join(tar_bytes(long_name, mtime=STAMP)),  # GNU long-name member
        _tarfile_archive(long_name, tarfile.PAX_FORMAT),
        with_folder.getvalue(),
        bytes(bad_header),
        plain[: 3 * 512 + 512 + 100],  # cut inside the third member's data
        plain[: 3 * 512],  # cut after two whole members: no end-of-archive blocks
        gzip.compress(plain),
    ]
    assert plain_tar_files(bytes(corrupt)) is not None
    assert [plain_tar_files(data) for data in others] == [None] * len(others)
