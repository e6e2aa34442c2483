"""Tar and zip writers for archives of many small members (ROI images), without the
per-member cost of ``tarfile``/``zipfile``.

A chunk of real ISIIS video holds ~20,000 ROIs of ~3 kB. ``tarfile.addfile`` spends
~60-100 us per member building its header in Python, and ``zipfile.writestr`` on a file
~60 us (a ``ZipInfo``, a ``localtime`` call, a seek back to patch the header, which
flushes the write buffer: one system call per member). Both were slower than encoding
the PNGs. Here a member costs a few microseconds: the headers are packed from a
template, the data are written once, and nothing seeks.

The output is the standard formats, byte for byte what ``tarfile`` (``GNU_FORMAT``) and
``zipfile`` write for the same members, dates and permissions (tests compare them), so
every reader, EcoTaxa's importer included, sees nothing new. Cases the fast path does
not cover (tar member names over 100 bytes or not ASCII; zips needing ZIP64: over
65,535 members or 4 GiB) are handed to ``tarfile``/``zipfile`` themselves.
"""

from __future__ import annotations

import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import IO

import numpy as np

__all__ = ["plain_tar_files", "tar_bytes", "write_tar", "write_zip"]

_BLOCK = 512
_RECORD = 20 * _BLOCK  # tarfile.RECORDSIZE: archives are padded to whole records
# The fixed part of a GNU tar header of a regular file (uid/gid 0, empty user names, no
# device numbers), with the checksum field blank (8 spaces, as the sum requires).
_TAR_MID = b"0000000\0" + b"0000000\0"  # uid, gid
_TAR_TAIL = (
    b"0"  # typeflag: regular file
    + b"\0" * 100  # linkname
    + b"ustar  \0"  # GNU magic + version
    + b"\0" * 64  # uname, gname
    + b"\0" * 183  # devmajor, devminor (empty for regular files), prefix, padding to 512
)
_TAR_CONST_SUM = sum(_TAR_TAIL) + 8 * ord(" ")  # + name and the numeric fields
_ZIP_LOCAL = struct.Struct("<4s2B4HL2L2H")
_ZIP_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_ZIP_END = struct.Struct("<4s4H2LH")
_ZIP_LIMIT = (1 << 31) - 1  # zipfile.ZIP64_LIMIT
_ZIP_MAX_MEMBERS = 0xFFFF


def _tar_header(name: str, size: int, mtime: int, mode: int) -> bytes:
    raw = name.encode("ascii", "surrogateescape") if name.isascii() else b""
    if not raw or len(raw) > 100 or size >= 8**11 or not 0 <= mtime < 8**11:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, mtime, mode
        return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    fields = b"%07o\0" % mode + _TAR_MID + b"%011o\0%011o\0" % (size, mtime)
    chk = _TAR_CONST_SUM + sum(raw) + sum(fields)
    return b"".join((raw, bytes(100 - len(raw)), fields, b"%06o\0 " % chk, _TAR_TAIL))


def tar_bytes(
    members: Iterable[tuple[str, bytes]], *, mtime: int, mode: int = 0o644
) -> list[bytes]:
    """The blocks of an uncompressed GNU tar of ``(name, data)`` members, in order.

    Joined (or written one after the other) they are exactly what ``tarfile.open(mode="w",
    format=tarfile.GNU_FORMAT)`` writes for ``TarInfo`` members with this ``mtime`` and
    ``mode`` (uid/gid 0, no user names), including the end-of-archive blocks and the
    padding to a whole 10 kB record.
    """
    members = list(members)
    if not 0 <= mtime < 8**11:  # tarfile's own headers
        headers: Iterable[bytes] = (_tar_header(n, len(d), mtime, mode) for n, d in members)
    else:
        bulk = _tar_headers_bulk(members, mtime, mode) if len(members) >= _BULK else None
        headers = bulk if bulk is not None else _tar_headers(members, mtime, mode)
    return _tar_blocks(members, headers)


def _tar_blocks(members: Sequence[tuple[str, bytes]], headers: Iterable[bytes]) -> list[bytes]:
    """Each member's header, data and padding, then the end-of-archive blocks padded to a
    whole record (the list filled by slice assignments and C-level maps, no Python loop
    per member)."""
    headers = list(headers)
    datas = [data for _, data in members]
    if len(headers) != len(datas):
        raise ValueError(f"{len(headers)} tar headers for {len(datas)} members")
    sizes = list(map(len, datas))
    pads = [-size % _BLOCK for size in sizes]
    out: list[bytes] = [b""] * (3 * len(datas))
    out[0::3], out[1::3], out[2::3] = headers, datas, map(_ZEROS.__getitem__, pads)
    # a long or non-ASCII name's header from tarfile is 3+ blocks
    total = sum(map(len, headers)) + sum(sizes) + sum(pads) + 2 * _BLOCK
    out.append(bytes(2 * _BLOCK + (-total % _RECORD)))
    return out


_ZEROS = [bytes(k) for k in range(_BLOCK)]  # the padding after a member's data


def _tar_headers(members: Sequence[tuple[str, bytes]], mtime: int, mode: int) -> Iterator[bytes]:
    """Per-member headers: the mode, uid/gid and mtime fields are the same for every member,
    packed and summed once; per member only the name and the size field are new."""
    mid = b"%07o\0" % mode + _TAR_MID
    stamp = b"%011o\0" % mtime
    base = _TAR_CONST_SUM + sum(mid) + sum(stamp)
    tail = b"%06o\0 "
    for name, data in members:
        size = len(data)
        raw = name.encode("ascii") if name.isascii() else b""
        if not raw or len(raw) > 100 or size >= 8**11:
            yield _tar_header(name, size, mtime, mode)
        else:
            size_field = b"%011o\0" % size
            chk = base + sum(raw) + sum(size_field)
            yield b"".join(
                (raw, bytes(100 - len(raw)), mid, size_field, stamp, tail % chk, _TAR_TAIL)
            )


_BULK = 64  # members from which the headers are built as one array


def _tar_headers_bulk(
    members: Sequence[tuple[str, bytes]], mtime: int, mode: int
) -> list[bytes] | None:
    """The 512-byte headers of all members at once: a template row per member, names and
    octal sizes written column-wise, checksums from one row sum; None when a member needs
    ``tarfile``'s own header (a name over 100 bytes, not ASCII, or holding NUL; a size over
    the octal field). The same bytes as the per-member path, without its ~4 us a member."""
    names = [name for name, _ in members]
    joined = "".join(names)
    sizes = np.fromiter(map(len, [data for _, data in members]), np.int64, len(members))
    if (
        not joined.isascii()
        or "\0" in joined
        or max(map(len, names)) > 100
        or min(map(len, names)) == 0
        or sizes.max() >= 8**11
    ):
        return None
    n = len(members)
    template = (
        bytes(100) + b"%07o\0" % mode + _TAR_MID + b"0" * 11 + b"\0" + b"%011o\0" % mtime
        + b" " * 8 + _TAR_TAIL
    )  # fmt: skip
    rows = np.empty((n, _BLOCK), np.uint8)
    rows[:] = np.frombuffer(template, np.uint8)
    rows[:, :100] = np.array(names, dtype="S100").view(np.uint8).reshape(n, 100)
    for k in range(11):  # size, 11 octal digits from offset 124
        rows[:, 134 - k] = 48 + ((sizes >> (3 * k)) & 7)
    chk = rows.sum(axis=1, dtype=np.int64)  # with the checksum field as 8 spaces
    for k in range(6):  # "%06o\0 " from offset 148
        rows[:, 153 - k] = 48 + ((chk >> (3 * k)) & 7)
    rows[:, 154], rows[:, 155] = 0, 32
    blob = rows.tobytes()
    return [blob[i : i + _BLOCK] for i in range(0, n * _BLOCK, _BLOCK)]


def plain_tar_files(data: bytes | memoryview) -> list[tuple[str, bytes]] | None:
    """The ``(name, data)`` of every regular file of an uncompressed tar held in memory, or
    None when the archive is anything else (compressed, pax or GNU long-name headers,
    links or folders, a bad checksum, truncated): ``tarfile`` then reads it and reports
    what is wrong.

    The reader of :func:`tar_bytes`' archives (the stream's ``rois.tar``): ``tarfile``
    builds a ``TarInfo`` per member in Python, ~75 us each, 0.5 s for a chunk's 6,500
    ROIs of real ISIIS footage, more than writing the chunk's outputs. Here a member
    costs a few microseconds: its name, size and checksum are read from the header.
    """
    buffer = bytes(data)
    end = len(buffer)
    names: list[bytes] = []
    starts: list[int] = []
    sizes: list[int] = []
    headers: list[bytes] = []
    checksums: list[int] = []
    at = 0
    while at + _BLOCK <= end:
        if buffer[at] == 0 and buffer.count(0, at, at + _BLOCK) == _BLOCK:  # end of archive
            if not _checksums_match(headers, checksums):
                return None
            return [
                (name.decode("utf-8", "surrogateescape"), buffer[start : start + size])
                for name, start, size in zip(names, starts, sizes, strict=True)
            ]
        header = buffer[at : at + _BLOCK]
        if header[156] not in b"0\0" or header[257:262] != b"ustar":
            return None  # not a plain regular file: links, folders, pax/long names
        try:
            size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
            checksums.append(int(header[148:156].rstrip(b"\0 "), 8))
        except ValueError:  # base-256 sizes, garbage
            return None
        name = header[:100].split(b"\0", 1)[0]
        if header[257:263] == b"ustar\0" and header[345] != 0:  # POSIX ustar: prefix/name
            name = header[345:500].split(b"\0", 1)[0] + b"/" + name
        at += _BLOCK
        if at + size > end:
            return None  # truncated
        names.append(name)
        starts.append(at)
        sizes.append(size)
        headers.append(header)
        at += size + (-size % _BLOCK)
    return None  # no end-of-archive blocks


def _checksums_match(headers: list[bytes], checksums: list[int]) -> bool:
    """Every header's checksum (the sum of its bytes, the checksum field read as spaces),
    all headers summed at once: one Python ``sum`` of 512 bytes per member cost more
    than the rest of reading it."""
    if not headers:
        return True
    rows = np.frombuffer(b"".join(headers), np.uint8).reshape(-1, _BLOCK)
    sums = rows.sum(axis=1, dtype=np.int64) - rows[:, 148:156].sum(axis=1, dtype=np.int64)
    return bool(np.array_equal(sums + 8 * 32, np.asarray(checksums, np.int64)))


def write_tar(
    f: IO[bytes], members: Iterable[tuple[str, bytes]], *, mtime: int, mode: int = 0o644
) -> None:
    """Write :func:`tar_bytes` of ``members`` to the open binary file ``f``."""
    _write_joined(f, tar_bytes(members, mtime=mtime, mode=mode))


def _write_joined(f: IO[bytes], parts: Sequence[bytes], batch: int = 4096) -> None:
    """Write ``parts`` joined a few thousand at a time: ``writelines`` on a buffered file
    makes one ``write`` call per part (~1 us; a ROI tar has three parts per member), and
    joining everything at once would hold a second copy of the archive."""
    for i in range(0, len(parts), batch):
        f.write(b"".join(parts[i : i + batch]))


def _dos_time(date_time: Sequence[int]) -> tuple[int, int]:
    y, mo, d, h, mi, s = date_time[:6]
    if not 1980 <= y <= 2107:
        raise ValueError(f"zip dates run from 1980 to 2107, got year {y}")
    return h << 11 | mi << 5 | s // 2, (y - 1980) << 9 | mo << 5 | d


def write_zip(
    f: IO[bytes],
    members: Sequence[tuple[str, bytes, bool]],
    *,
    date_time: Sequence[int],
    level: int = zlib.Z_DEFAULT_COMPRESSION,
) -> None:
    """Write a zip of ``(name, data, deflate)`` members to the open binary file ``f``.

    Byte for byte what ``zipfile.ZipFile(f, "w").writestr(info, data, compress_type,
    level)`` writes on a seekable file for ``ZipInfo(name, date_time)``
    members with ``external_attr = 0o600 << 16`` (``writestr``'s default for a name).
    ZIP64 archives go through ``zipfile``.

    Parameters
    ----------
    f : binary file
        Written from its current position, which must be 0 (offsets are absolute).
    members : sequence of (str, bytes, bool)
        Member name, data, and whether to deflate it (text) or store it (PNG/JPEG,
        already compressed).
    date_time : sequence of int
        ``(year, month, day, hour, minute, second)`` of every member.
    level : int
        zlib level of the deflated members (default: zlib's, 6; level 1 deflates a
        measurement table ~6x faster for ~14 % more bytes).
    """
    total = sum(len(d) + len(n) for n, d, _ in members)
    if len(members) > _ZIP_MAX_MEMBERS or total * 1.05 + 100 * len(members) > _ZIP_LIMIT:
        with zipfile.ZipFile(f, "w") as z:
            for name, data, deflate in members:
                info = zipfile.ZipInfo(name, tuple(date_time[:6]))  # type: ignore[arg-type]
                info.external_attr = 0o600 << 16
                method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
                z.writestr(info, data, compress_type=method, compresslevel=level)
        return
    dostime, dosdate = _dos_time(date_time)
    offset = 0
    central: list[bytes] = []
    local: list[bytes] = []  # written joined: no write call per member
    local_pack, central_pack, crc32 = _ZIP_LOCAL.pack, _ZIP_CENTRAL.pack, zlib.crc32
    for name, data, deflate in members:
        raw = name.encode("ascii") if name.isascii() else name.encode("utf-8")
        flags = 0 if name.isascii() else 0x800
        crc = crc32(data)
        if deflate:
            co = zlib.compressobj(level, zlib.DEFLATED, -15)
            body = co.compress(data) + co.flush()
            method = zipfile.ZIP_DEFLATED
        else:
            body, method = data, zipfile.ZIP_STORED
        head = local_pack(
            b"PK\003\004", 20, 0, flags, method, dostime, dosdate, crc, len(body),
            len(data), len(raw), 0,
        )  # fmt: skip
        local += (head, raw, body)
        entry = central_pack(
            b"PK\001\002", 20, 3, 20, 0, flags, method, dostime, dosdate, crc, len(body),
            len(data), len(raw), 0, 0, 0, 0, 0o600 << 16, offset,
        )  # fmt: skip
        central.append(entry + raw)
        offset += len(head) + len(raw) + len(body)
    _write_joined(f, local)
    _write_joined(f, central)
    size = sum(len(c) for c in central)
    n = len(members)
    f.write(_ZIP_END.pack(b"PK\005\006", 0, 0, n, n, size, offset, 0))
