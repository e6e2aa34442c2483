"""ROI archives: one uncompressed tar of PNG (or JPEG) crops per chunk.

Why tar: an hour of ISIIS gives ~14 million ROIs; millions of small files
cripple shared file systems and object stores, one tar per chunk does not, and
the seed's tools (``pull_images``, the classifier) read tars. Members are
``<roi_id>.png``; the PNGs are already compressed, so the tar itself is not
(the reader also accepts the seed's ``.tar.gz``). Optional masks are stored as
``<roi_id>_mask.png`` beside their crop.

Reading streams the archive member by member (``tarfile`` stream mode), never
extracting to disk and never seeking, so it also works on pipes and S3 bodies.
"""

from __future__ import annotations

import io
import itertools
import operator
import os
import re
import tarfile
import time
import warnings
from collections.abc import Container, Iterator, Sequence
from typing import IO, Any, Literal

import cv2
import numpy as np

from plankline.outputs.archives import plain_tar_files, write_tar
from plankline.outputs.tables import atomic_write

__all__ = [
    "MASK_SUFFIX",
    "encode_image",
    "encode_images",
    "iter_roi_tar",
    "iter_roi_tar_bytes",
    "write_roi_tar",
]

MASK_SUFFIX = "_mask"
_IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._+-]+$")
_SAFE_IDS = re.compile(r"[A-Za-z0-9._+-]+(?:\n[A-Za-z0-9._+-]+)*")
_SIGNATURES = {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff"}

Image = np.ndarray | bytes
"""A crop as pixels, or already encoded (e.g. copied out of a ROI tar)."""


def encode_image(
    img: np.ndarray,
    fmt: Literal["png", "jpg"] = "png",
    *,
    png_level: int = 1,
    png_fast: bool = True,
    jpeg_quality: int = 95,
) -> bytes:
    """Encode one crop with OpenCV.

    ``png_fast`` (default) uses zlib's Huffman-only strategy without a row
    filter (PNG filter type 0): camera crops are mostly sensor noise around the
    organism, which LZ77 string matching cannot compress, and a flat-fielded
    background clipped at the level (255) is a few grey values that a Huffman
    code packs well as they are, where differences between neighbours (the SUB
    filter) spread them over twice as many symbols. Measured on the 16,198
    crops ``plankline run`` cuts from 30 real ISIIS frames
    (``scripts/bench_outputs.py``, same run): no filter 380 B/crop at
    ~32 us/crop, SUB 429 B at ~37, ``cv2.imencode`` defaults 431 B at ~34. On
    hard synthetic crops the two filters are within 2 %; on raw, not
    flat-fielded windows of the camera frame SUB is 6 % smaller (no pipeline
    crop is raw). Lossless either way; 16-bit gray is kept by PNG; JPEG needs
    8-bit.
    """
    ok, buf = cv2.imencode("." + fmt, img, _params(fmt, png_level, png_fast, jpeg_quality))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {img.dtype} {img.shape} image as {fmt}")
    return buf.tobytes()


def _params(
    fmt: str, png_level: int = 1, png_fast: bool = True, jpeg_quality: int = 95
) -> list[int]:
    """``cv2.imencode`` parameters of :func:`encode_image`'s settings."""
    if fmt == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_level]
        if png_fast:
            params += [
                cv2.IMWRITE_PNG_STRATEGY,
                cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
                cv2.IMWRITE_PNG_FILTER,
                cv2.IMWRITE_PNG_FILTER_NONE,
            ]
        return params
    if fmt == "jpg":
        return [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    raise ValueError(f"fmt must be 'png' or 'jpg', got {fmt!r}")


def _check_image(kind: str, rid: str, img: Image, fmt: str) -> None:
    if isinstance(img, bytes):
        if not img.startswith(_SIGNATURES[fmt]):
            raise ValueError(f"{kind} for ROI {rid!r} is bytes but not {fmt} data")
        return
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or min(img.shape[:2]) < 1:
        shape = getattr(img, "shape", None)
        raise ValueError(
            f"{kind} for ROI {rid!r} must be a non-empty 2-D or 3-D array, got {shape}"
        )
    # dtype.char, not dtype.name: name is built in Python at ~1 us a call, per ROI
    if img.dtype.char not in ("B" if fmt == "jpg" else "BH"):
        allowed = ("uint8",) if fmt == "jpg" else ("uint8", "uint16")
        raise ValueError(
            f"{kind} for ROI {rid!r} has dtype {img.dtype}; {fmt} needs {' or '.join(allowed)}"
        )


def encode_images(
    ids: Sequence[str], images: Sequence[Image], fmt: Literal["png", "jpg"] = "png", **encoder: Any
) -> list[bytes]:
    """Check and encode crops once, so a tar and an EcoTaxa zip can share the bytes.

    Arrays are encoded with :func:`encode_image` (``encoder`` passed on); bytes
    are kept as they are once their signature matches ``fmt``. Errors name the ROI.
    """
    if fmt not in _SIGNATURES:
        raise ValueError(f"fmt must be 'png' or 'jpg', got {fmt!r}")
    if len(images) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(images)} images")
    # One parameter list and a direct cv2.imencode per crop, and bytes passed through
    # after one signature test: the tar and the EcoTaxa zip each call this again on the
    # bytes it returned (~20,000 ROIs a chunk), so its per-item Python is worth keeping low.
    params = _params(fmt, **encoder)
    ext, sig = "." + fmt, _SIGNATURES[fmt]
    if _all_encoded(images, sig):  # the tar and the EcoTaxa zip get encode_images' bytes
        return list(images)  # type: ignore[arg-type]
    imencode = cv2.imencode
    checked = _all_plain(images, "B" if fmt == "jpg" else "BH")
    out = []
    for rid, img in zip(ids, images, strict=True):
        if type(img) is bytes and img.startswith(sig):
            out.append(img)
            continue
        if not checked:
            _check_image("crop", rid, img, fmt)
            if isinstance(img, bytes):  # a bytes subclass
                out.append(img)
                continue
        ok, buf = imencode(ext, img, params)
        if not ok:
            raise ValueError(
                f"OpenCV could not encode crop {rid!r} ({img.dtype} {img.shape}) as {fmt}"
            )
        out.append(buf.tobytes())
    return out


def _all_encoded(images: Sequence[Image], sig: bytes) -> bool:
    """Every image is ``bytes`` starting with ``sig`` (C-level maps, no Python per image)."""
    return set(map(type, images)) <= {bytes} and all(
        map(bytes.startswith, images, itertools.repeat(sig))  # type: ignore[arg-type]
    )


def _all_plain(images: Sequence[Image], dtypes: str) -> bool:
    """Every image is a non-empty 2-D ``ndarray`` of one of ``dtypes`` (``dtype.char``):
    what :func:`_check_image` accepts, checked by C-level maps over the whole list (the
    pipeline's crops), so no image needs its own check."""
    if not images or set(map(type, images)) != {np.ndarray}:
        return False
    return (
        set(map(operator.attrgetter("ndim"), images)) == {2}
        and {d.char for d in set(map(operator.attrgetter("dtype"), images))} <= set(dtypes)
        and min(map(operator.attrgetter("size"), images)) > 0
    )


def write_roi_tar(
    path: str | os.PathLike[str],
    ids: Sequence[str],
    crops: Sequence[Image],
    *,
    fmt: Literal["png", "jpg"] = "png",
    masks: Sequence[np.ndarray] | None = None,
    png_level: int = 1,
    png_fast: bool = True,
    jpeg_quality: int = 95,
    mtime: float | None = None,
) -> None:
    """Write ROI crops into an uncompressed tar, atomically.

    Parameters
    ----------
    path : path-like
        Output ``.tar``; replaced atomically (temp file + ``os.replace``).
    ids : sequence of str
        One unique id per crop (see :func:`plankline.outputs.naming.roi_id`);
        member names are ``<id>.<fmt>``.
    crops : sequence of np.ndarray or bytes
        2-D gray (or 3-D colour) ``uint8``/``uint16`` (``uint8`` for JPEG), or
        bytes already encoded as ``fmt`` (see :func:`encode_images`), stored as is.
    fmt : {"png", "jpg"}
        Image encoding. PNG is lossless, the default.
    masks : sequence of np.ndarray, optional
        Binary masks, same shapes as the crops; written as ``<id>_mask.png``
        (always PNG, 0/255) only when given.
    png_level, png_fast, jpeg_quality
        Encoder settings, see :func:`encode_image`.
    mtime : float, optional
        Member modification time (default: now). Fix it for byte-identical
        archives across retries.

    The archive is the one ``tarfile`` (GNU format) writes, built by
    :func:`plankline.outputs.archives.write_tar` at a few us per member instead of
    ``tarfile``'s ~60-100 (which cost more than encoding the PNGs).

    Raises
    ------
    ValueError
        On length mismatch, repeated or unsafe ids, or bad image arrays; the
        message names the ROI. Nothing is written then.
    """
    n = len(ids)
    if len(crops) != n:
        raise ValueError(f"{path}: {n} ids but {len(crops)} crops")
    if masks is not None and len(masks) != n:
        raise ValueError(f"{path}: {n} ids but {len(masks)} masks")
    _check_ids(path, ids)
    if masks is not None:
        for rid, crop, mask in zip(ids, crops, masks, strict=True):
            shape = crop.shape[:2] if isinstance(crop, np.ndarray) else None
            if not isinstance(mask, np.ndarray) or (shape and mask.shape[:2] != shape):
                raise ValueError(
                    f"{path}: mask for ROI {rid!r} has shape {getattr(mask, 'shape', None)}, "
                    f"crop has {shape}"
                )
    encoded = encode_images(
        ids, crops, fmt, png_level=png_level, png_fast=png_fast, jpeg_quality=jpeg_quality
    )
    stamp = int(time.time() if mtime is None else mtime)
    names = [rid + "." + fmt for rid in ids]
    members: list[tuple[str, bytes]] = list(zip(names, encoded, strict=True))
    if masks is not None:  # each mask right after its crop
        members = []
        for name, rid, data, mask in zip(names, ids, encoded, masks, strict=True):
            # Masks are long runs of 0/255: there string matching pays, so zlib's default.
            m = (np.asarray(mask) > 0).astype(np.uint8) * 255
            mask_png = encode_image(m, "png", png_level=png_level, png_fast=False)
            members += ((name, data), (f"{rid}{MASK_SUFFIX}.png", mask_png))
    with atomic_write(path, "wb") as f:
        write_tar(f, members, mtime=stamp)


def _check_ids(path: object, ids: Sequence[str]) -> None:
    """Every id is a safe, unique member name: checked at once on the joined ids (the
    newline cannot be in a safe id), one by one only to name the offending id."""
    texts = set(map(type, ids)) <= {str}
    if texts and len(set(ids)) == len(ids) and _SAFE_IDS.fullmatch("\n".join(ids) or "x"):
        return
    seen: set[str] = set()
    for rid in ids:
        if not isinstance(rid, str) or not _SAFE_ID.match(rid):
            raise ValueError(f"{path}: ROI id {rid!r} must match [A-Za-z0-9._+-]+")
        if rid in seen:
            raise ValueError(f"{path}: ROI id {rid!r} is repeated")
        seen.add(rid)


def _member_id(name: str) -> str | None:
    """``dir/abc.png`` -> ``abc``; None for members that are not PNG/JPEG images."""
    base = name.rsplit("/", 1)[-1]
    stem, ext = os.path.splitext(base)
    if ext.lower() not in _IMAGE_EXTS or not stem or base.startswith("._"):
        return None
    return stem


def iter_roi_tar_bytes(
    path: str | os.PathLike[str] | IO[bytes],
    names: Container[str] | None = None,
    *,
    include_masks: bool = False,
) -> Iterator[tuple[str, str, bytes]]:
    """Stream ``(roi_id, member_name, encoded_bytes)`` from a ROI tar, without decoding.

    Used to copy ROIs out of archives without re-encoding (``pull-images``).

    Parameters
    ----------
    path : path-like or binary file object
        ``.tar``, ``.tar.gz``, ``.tar.bz2`` or ``.tar.xz`` (detected from content).
    names : container of str, optional
        Yield only members whose id (base name without extension), base name
        or full member name is in ``names``. When ``names`` is a ``set``/
        ``frozenset``/``dict`` the scan stops as soon as all are found.
    include_masks : bool
        Also yield ``<id>_mask`` members (default: skip them).

    Warns
    -----
    UserWarning
        For a truncated/corrupt archive (stops there) or an unreadable member
        (skipped). Images already yielded stay valid.
    """
    remaining: set[str] | None = set(names) if isinstance(names, (set, frozenset, dict)) else None
    for name, data in _tar_files(path):
        rid = _member_id(name)
        if rid is None or (not include_masks and rid.endswith(MASK_SUFFIX)):
            continue
        if names is not None:
            base = name.rsplit("/", 1)[-1]
            hit = next((k for k in (rid, base, name) if k in names), None)
            if hit is None:
                continue
            if remaining is not None:
                remaining.discard(hit)
        yield rid, name, data
        if remaining is not None and not remaining:
            return


def _tar_files(path: str | os.PathLike[str] | IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """``(member name, data)`` of the archive's regular files, in order; warns and stops at
    a corrupt or truncated one. An uncompressed archive in memory (``io.BytesIO``, as the
    stream's collector reads ``rois.tar``) is read by :func:`archives.plain_tar_files`,
    ~20x faster than ``tarfile``, which reads everything else."""
    if isinstance(path, io.BytesIO):
        files = plain_tar_files(path.getbuffer())
        if files is not None:
            yield from files
            return
    label = getattr(path, "name", path)
    try:
        source = {"fileobj": path} if hasattr(path, "read") else {"name": path}
        tar = tarfile.open(mode="r|*", **source)  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as e:
        warnings.warn(f"{label}: not a readable tar archive ({e}); skipped", stacklevel=3)
        return
    with tar:
        try:
            for member in tar:
                if not member.isfile() or _member_id(member.name) is None:
                    continue
                f = tar.extractfile(member)
                if f is None:
                    continue
                data = f.read()
                if len(data) != member.size:
                    warnings.warn(
                        f"{label}: member {member.name} is truncated; stopped", stacklevel=3
                    )
                    return
                yield member.name, data
        except (tarfile.TarError, OSError, EOFError) as e:
            warnings.warn(f"{label}: archive is corrupt or truncated ({e}); stopped", stacklevel=3)


def iter_roi_tar(
    path: str | os.PathLike[str] | IO[bytes],
    names: Container[str] | None = None,
    *,
    mode: Literal["gray", "unchanged"] = "gray",
    include_masks: bool = False,
) -> Iterator[tuple[str, np.ndarray]]:
    """Stream and decode ``(roi_id, image)`` pairs from a ROI tar.

    Parameters
    ----------
    path : path-like or binary file object
        ``.tar`` or ``.tar.gz`` (any tarfile compression, detected from content).
    names : container of str, optional
        Only these ids / member names (see :func:`iter_roi_tar_bytes`).
    mode : {"gray", "unchanged"}
        ``"gray"`` decodes to 2-D ``uint8`` (what the classifier eats);
        ``"unchanged"`` keeps depth and channels (16-bit PNGs stay 16-bit).
    include_masks : bool
        Also yield ``<id>_mask`` members.

    Warns
    -----
    UserWarning
        For a member that does not decode (skipped) or a corrupt archive.

    Examples
    --------
    >>> for rid, img in iter_roi_tar("chunk.tar"):  # doctest: +SKIP
    ...     print(rid, img.shape)
    """
    flag = {"gray": cv2.IMREAD_GRAYSCALE, "unchanged": cv2.IMREAD_UNCHANGED}.get(mode)
    if flag is None:
        raise ValueError(f"mode must be 'gray' or 'unchanged', got {mode!r}")
    for rid, member, data in iter_roi_tar_bytes(path, names, include_masks=include_masks):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if img is None:
            warnings.warn(
                f"{getattr(path, 'name', path)}: member {member} does not decode; skipped",
                stacklevel=2,
            )
            continue
        yield rid, img
