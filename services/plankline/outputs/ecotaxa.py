"""EcoTaxa export: a zip with ``ecotaxa_<sample>.tsv`` and one PNG per object, and its checker.

EcoTaxa (https://ecotaxa.obs-vlfr.fr) is where plankton ecologists validate
and share classified ROIs. Its importer (``ecotaxa/ecotaxa_back``,
``py/BO/Bundle.py`` and ``py/BO/TSVFile.py``) is strict; the rules we follow,
and that :func:`validate_ecotaxa_zip` checks, are:

- only files named ``ecotaxa*.tsv`` are read; tab separated, read as latin-1;
- line 1 is the header, line 2 the types, each exactly ``[f]`` (float) or ``[t]``;
- every column is ``<table>_<field>`` with table ``object``, ``sample``,
  ``acq``, ``process`` or ``img``; the only ``img_`` columns are
  ``img_file_name`` and ``img_rank``;
- ``object_id`` is required with any ``object_`` column, ``sample_id`` with
  any ``sample_`` column, ``acq_id`` with ``acq_``, ``process_id`` with
  ``process_``; one acquisition belongs to one sample;
- ``object_date`` is ``YYYYMMDD``, ``object_time`` ``HHMMSS``; ``object_lat``
  within +-90, ``object_lon`` within +-180; ``[f]`` values parse as floats;
- each (``object_id``, ``img_file_name``) pair is unique and the image exists
  beside the TSV, as PNG or JPEG (TIFF is refused);
- predicted classes go in ``object_annotation_category`` with
  ``object_annotation_status`` ``predicted`` (other statuses: ``validated``,
  ``dubious``).

Column names are normalised like EcoTaxa does (lower case), and we restrict
them further to ``[a-z0-9_]`` so they survive every EcoTaxa export/import.

One ROI's value never costs a chunk its export: a measurement that is NaN or infinite is
written as an empty ``[f]`` field, and a text measurement holding a tab, a newline or a
character outside latin-1 is written with those replaced (space, ``?``); each such repair
is counted and logged as a warning naming the file and the column. Inputs that describe the
whole file (ids, sample/acquisition, coordinates, metadata) are still refused with a
``ValueError``: they are settings errors, not data.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import time
import zipfile
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Literal

import cv2
import numpy as np

from plankline import __version__
from plankline.outputs.archives import write_zip
from plankline.outputs.formatting import float_columns_chars, join_rows, text_chars
from plankline.outputs.naming import date_time_texts
from plankline.outputs.rois import Image, encode_images
from plankline.outputs.tables import atomic_write

__all__ = [
    "ANNOTATION_STATUSES",
    "annotate_ecotaxa_zip",
    "sanitize_name",
    "validate_ecotaxa_zip",
    "write_ecotaxa_zip",
]

log = logging.getLogger(__name__)

ANNOTATION_STATUSES = ("predicted", "validated", "dubious")
_PREFIXES = ("object", "sample", "acq", "process", "img")
_IMG_COLUMNS = ("img_file_name", "img_rank")
# Object columns with a fixed meaning in EcoTaxa: measurement names must not collide with them.
_RESERVED_OBJECT = {
    "object_id", "object_lat", "object_lon", "object_date", "object_time", "object_link",
    "object_depth_min", "object_depth_max", "object_annotation_category",
    "object_annotation_category_id", "object_annotation_date", "object_annotation_time",
    "object_annotation_person_name", "object_annotation_person_email",
    "object_annotation_status", "object_annotation_hierarchy",
}  # fmt: skip
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def sanitize_name(name: str) -> str:
    """Lower-case ``name`` and map every run of characters outside ``[a-z0-9_]`` to ``_``.

    >>> sanitize_name("Feret Diameter (px)")
    'feret_diameter_px'
    """
    s = re.sub(r"[^a-z0-9_]+", "_", str(name).strip().lower()).strip("_")
    if not s:
        raise ValueError(f"column name {name!r} has no usable characters [a-z0-9_]")
    return s


def _per_object(field: str, value: object, n: int) -> list:
    """Broadcast a scalar (or None) to n objects, or check a per-object sequence's length."""
    if value is None or isinstance(value, (str, int, float, datetime, date, np.generic)):
        return [value] * n
    seq = list(value)  # type: ignore[call-overload]
    if len(seq) != n:
        raise ValueError(f"{field} has {len(seq)} values for {n} objects")
    return seq


def _clean_text(field: str, value: object) -> str:
    s = "" if value is None else str(value)
    if any(c in s for c in "\t\r\n"):
        raise ValueError(f"{field}: value {s!r} contains a tab or newline")
    try:
        s.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{field}: value {s!r} is not latin-1, EcoTaxa would garble it") from None
    return s


def _clean_texts(field: str, values: Sequence[object]) -> list[str]:
    """:func:`_clean_text` of every value, checked at once: a chunk has ~20,000 ids."""
    texts = ["" if v is None else str(v) for v in values]
    joined = "".join(texts)
    if not any(c in joined for c in "\t\r\n") and joined.isascii():
        return texts
    return [_clean_text(field, t) for t in texts]  # names the offending value


def _fmt_float(field: str, v: object) -> str:
    if v is None:
        return ""
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{field}: {v!r} is not a number") from None
    if math.isnan(f):
        return ""
    if math.isinf(f):
        raise ValueError(f"{field}: infinite value")
    return f"{f:.9g}"


def _repair_text(value: object) -> tuple[str, bool]:
    """A text measurement made safe for the TSV: tabs/newlines -> space, non-latin-1 -> '?'."""
    s = "" if value is None else str(value)
    fixed = s.replace("\t", " ").replace("\r", " ").replace("\n", " ")
    fixed = fixed.encode("latin-1", errors="replace").decode("latin-1")
    return fixed, fixed != s


def _coords(field: str, values: list, limit: float) -> list[str]:
    if len(values) > 1 and all(v is values[0] for v in values):  # one for all: checked once
        return _coords(field, values[:1], limit) * len(values)
    out = []
    for i, v in enumerate(values):
        s = _fmt_float(field, v)
        if s and abs(float(s)) > limit:
            raise ValueError(f"{field}[{i}] = {v} is outside -{limit:g}..{limit:g}")
        out.append(s)
    return out


def _meta_columns(
    prefix: str, meta: Mapping[str, str | float], n: int
) -> dict[str, tuple[str, list[str]]]:
    cols: dict[str, tuple[str, list[str]]] = {}
    for key, value in meta.items():
        col = f"{prefix}_{sanitize_name(key)}"
        if col == f"{prefix}_id":
            raise ValueError(f"{prefix}_meta must not contain 'id'; pass {prefix}_id instead")
        if col in cols:
            raise ValueError(f"{prefix}_meta: {key!r} collides with another key as {col!r}")
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            cols[col] = ("[f]", [_fmt_float(col, value)] * n)
        else:
            cols[col] = ("[t]", [_clean_text(col, value)] * n)
    return cols


def write_ecotaxa_zip(
    path: str | os.PathLike[str],
    *,
    object_ids: Sequence[str],
    images: Sequence[Image],
    measurements: Mapping[str, np.ndarray | Sequence[float] | Sequence[str]],
    sample_id: str,
    acq_id: str,
    lat: float | Sequence[float] | None = None,
    lon: float | Sequence[float] | None = None,
    datetimes: datetime | Sequence[datetime | None] | None = None,
    depth: float | Sequence[float] | None = None,
    acq_meta: Mapping[str, str | float] | None = None,
    sample_meta: Mapping[str, str | float] | None = None,
    process_meta: Mapping[str, str | float] | None = None,
    process_id: str | None = None,
    predicted: Sequence[str] | None = None,
    pixel_size_um: float | None = None,
    image_format: Literal["png", "jpg"] = "png",
    member_time: datetime | None = None,
) -> None:
    """Write one sample/acquisition as a zip that EcoTaxa imports as is.

    Parameters
    ----------
    path : path-like
        Output ``.zip``, written atomically.
    object_ids : sequence of str
        Unique, non-empty ids (ROI ids); images are stored as ``<id>.png``.
    images : sequence of np.ndarray or bytes
        One ``uint8``/``uint16`` gray or colour crop per object, or its bytes
        already encoded as ``image_format`` (kept as they are).
    measurements : mapping
        Name -> per-object values. Numeric columns become ``[f]``, others
        ``[t]``; names become ``object_<sanitized name>``. NaN and infinite values
        become empty cells (infinities are logged as warnings), and text values lose
        tabs, newlines and non-latin-1 characters (logged): one object's bad value
        never fails the file.
    sample_id, acq_id : str
        The sample (e.g. tow/transect) and acquisition (e.g. video or
        instrument run). All objects of one zip share them.
    lat, lon, depth : float or sequence, optional
        Decimal degrees (lat within +-90, lon within +-180) and metres, one
        value for all or one per object. Depth fills ``object_depth_min`` and
        ``object_depth_max``.
    datetimes : datetime or sequence of (datetime or None), optional
        Capture time per object (see :func:`plankline.outputs.naming.frame_time`)
        -> ``object_date`` ``YYYYMMDD`` and ``object_time`` ``HHMMSS``.
    acq_meta, sample_meta, process_meta : mapping, optional
        Extra ``acq_*``/``sample_*``/``process_*`` columns (constant per file).
    process_id : str, optional
        Defaults to ``plankline_<version>`` so re-processings are told apart.
    predicted : sequence of str, optional
        Predicted class per object: ``object_annotation_category`` with
        ``object_annotation_status=predicted``.
    pixel_size_um : float, optional
        Recorded as ``process_pixel_size_um`` (EcoTaxa stores measurements in
        pixels; this is the factor users need to convert them).
    image_format : {"png", "jpg"}
        Image encoding inside the zip.
    member_time : datetime, optional
        The members' modification time (default: now). A fixed one (the pipeline
        gives the chunk's capture time) makes the same inputs give the same bytes.

    Raises
    ------
    ValueError
        On any input EcoTaxa would refuse; the message names the field.
    """
    # A chunk without ROIs still gets a (header-only) export, so every chunk has its files.
    n = len(object_ids)
    if len(images) != n:
        raise ValueError(f"images has {len(images)} items for {n} object_ids")
    ids = _clean_texts("object_id", object_ids)
    if any(not o for o in ids):
        raise ValueError("object_id must not be empty")
    if len(set(ids)) != n:
        dup = sorted({o for o in ids if ids.count(o) > 1})[:5]
        raise ValueError(f"object_id values must be unique, repeated: {dup}")
    if n and not re.fullmatch(r"[A-Za-z0-9._+-]+", "".join(ids)):
        raise ValueError("object_id must only hold [A-Za-z0-9._+-] (it names the image file)")
    for field, v in (("sample_id", sample_id), ("acq_id", acq_id)):
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{field} must be a non-empty string, got {v!r}")
        _clean_text(field, v)
    process_id = process_id or f"plankline_{__version__}"

    cols: dict[str, tuple[str, list[str] | _Floats]] = {}
    files = [f"{o}.{image_format}" for o in ids]
    cols["img_file_name"] = ("[t]", files)
    cols["img_rank"] = ("[f]", ["0"] * n)
    cols["object_id"] = ("[t]", ids)
    if lat is not None:
        cols["object_lat"] = ("[f]", _coords("lat", _per_object("lat", lat, n), 90))
    if lon is not None:
        cols["object_lon"] = ("[f]", _coords("lon", _per_object("lon", lon, n), 180))
    if isinstance(datetimes, np.ndarray) and datetimes.dtype.kind == "M":
        if datetimes.shape != (n,):
            raise ValueError(f"datetimes has shape {datetimes.shape} for {n} objects")
        dates, hms = date_time_texts(datetimes)  # each distinct second formatted once
        cols["object_date"], cols["object_time"] = ("[t]", dates), ("[t]", hms)
    elif datetimes is not None:
        dts = _per_object("datetimes", datetimes, n)
        for i, t in enumerate(dts):
            if t is not None and not isinstance(t, datetime):
                raise ValueError(
                    f"datetimes[{i}] must be a datetime or None, got {type(t).__name__}"
                )
        cols["object_date"] = ("[t]", ["" if t is None else f"{t:%Y%m%d}" for t in dts])
        cols["object_time"] = ("[t]", ["" if t is None else f"{t:%H%M%S}" for t in dts])
    if depth is not None:
        d = _coords("depth", _per_object("depth", depth, n), math.inf)
        cols["object_depth_min"] = ("[f]", d)
        cols["object_depth_max"] = ("[f]", d)
    if predicted is not None:
        cols.update(_annotation_columns(predicted, n))
    for name, values in measurements.items():
        col = f"object_{sanitize_name(name)}"
        if col in _RESERVED_OBJECT or col in cols:
            raise ValueError(
                f"measurement {name!r} maps to {col!r}, which is reserved or already used"
            )
        arr = np.asarray(values)
        if arr.shape != (n,):
            raise ValueError(f"measurement {name!r} has shape {arr.shape}, expected ({n},)")
        if arr.dtype.kind in "biuf":
            f = arr.astype(np.float64)
            bad = np.isinf(f)
            if bad.any():
                log.warning(
                    "%s: measurement %r: %d infinite value(s) written as empty fields "
                    "(objects %s)", path, name, int(bad.sum()),
                    ", ".join(ids[i] for i in np.flatnonzero(bad)[:3]),
                )  # fmt: skip
            cols[col] = ("[f]", _Floats(f))  # formatted with the TSV, NaN and inf empty
        else:
            texts = ["" if v is None else str(v) for v in arr.tolist()]
            joined = "".join(texts)
            clean = joined.isascii() and not any(c in joined for c in "\t\r\n")
            repaired = [(t, False) for t in texts] if clean else list(map(_repair_text, texts))
            n_fixed = sum(fixed for _, fixed in repaired)
            if n_fixed:
                log.warning(
                    "%s: measurement %r: %d value(s) held a tab, newline or non-latin-1 "
                    "character, replaced", path, name, n_fixed,
                )  # fmt: skip
            cols[col] = ("[t]", [text for text, _ in repaired])
    cols["sample_id"] = ("[t]", [sample_id] * n)
    cols.update(_meta_columns("sample", sample_meta or {}, n))
    cols["acq_id"] = ("[t]", [acq_id] * n)
    cols.update(_meta_columns("acq", acq_meta or {}, n))
    cols["process_id"] = ("[t]", [_clean_text("process_id", process_id)] * n)
    proc = dict(process_meta or {})
    if pixel_size_um is not None:
        if not pixel_size_um > 0:
            raise ValueError(f"pixel_size_um must be > 0, got {pixel_size_um}")
        proc.setdefault("pixel_size_um", float(pixel_size_um))
    proc.setdefault("software", f"plankline {__version__}")
    cols.update(_meta_columns("process", proc, n))

    encoded = encode_images(ids, images, image_format)
    tsv_name = f"ecotaxa_{sanitize_name(sample_id)}.tsv"
    stamp = member_time.timetuple() if member_time is not None else time.localtime()
    _write_members(path, tsv_name, cols, list(zip(files, encoded, strict=True)), stamp[:6])


def _annotation_columns(predicted: Sequence[str], n: int) -> dict[str, tuple[str, list[str]]]:
    """The two columns of a predicted class per object (EcoTaxa's ``predicted`` status)."""
    classes = _clean_texts("predicted", _per_object("predicted", predicted, n))
    if any(not c for c in classes):
        raise ValueError("predicted: every object needs a class name (empty found)")
    return {
        "object_annotation_status": ("[t]", ["predicted"] * n),
        "object_annotation_category": ("[t]", classes),
    }


class _Floats:
    """The values of one numeric measurement, written ``%.9g`` with the TSV (all float
    columns at once, :func:`plankline.outputs.formatting.general_chars`); NaN and
    infinities are empty fields."""

    spec = "%.9g"
    precision = 9

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def texts(self) -> list[str]:
        """Each value formatted by Python's ``%`` (the csv.writer path)."""
        ok = np.isfinite(self.values).tolist()
        return [self.spec % v if k else "" for v, k in zip(self.values.tolist(), ok, strict=True)]


def _tsv_chars(values: list[_Floats | list[str]], n: int) -> list[np.ndarray] | None:
    """Every column of the TSV as a character matrix (all float columns formatted in one
    call, non-finite values empty); None when a text column is not ASCII."""
    out: list[np.ndarray | None] = [None] * len(values)
    floats = [k for k, vs in enumerate(values) if isinstance(vs, _Floats)]
    columns = [values[k].values for k in floats]  # type: ignore[union-attr]
    chars = float_columns_chars(columns, _Floats.precision, nonfinite_empty=True)
    for k, c in zip(floats, chars, strict=True):
        out[k] = c
    for k, vs in enumerate(values):
        if not isinstance(vs, _Floats):
            out[k] = text_chars(vs)
            if out[k] is None:
                return None
    return out  # type: ignore[return-value]


def _write_members(
    path: str | os.PathLike[str],
    tsv_name: str,
    cols: Mapping[str, tuple[str, list[str] | _Floats]],
    images: Sequence[tuple[str, bytes]],
    date_time: Sequence[int],
) -> None:
    """The zip: the TSV of ``cols`` (name -> (type, values)) first, then the encoded images,
    every member dated ``date_time`` (year, month, day, hour, minute, second)."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(list(cols))
    w.writerow([t for t, _ in cols.values()])
    values = [vs for _, vs in cols.values()]
    head = buf.getvalue().encode("latin-1")
    n = len(values[0]) if values else 0
    # a quote is in some text value iff it is in their concatenation
    quoted = any('"' in "".join(vs) for vs in values if not isinstance(vs, _Floats))
    chars = _tsv_chars(values, n) if len(cols) > 1 and not quoted else None
    if chars is not None:
        # No tab or newline is left in text (see above) nor a quote: csv.writer's output,
        # built column-wise in NumPy
        tsv = head + join_rows(chars, b"\t", n)
    else:
        texts = [vs.texts() if isinstance(vs, _Floats) else vs for vs in values]
        w.writerows(zip(*texts, strict=True))
        tsv = buf.getvalue().encode("latin-1")
    # What zipfile writes (TSV deflated at level 1: 6x faster than 6, 14 % larger; images
    # stored), without its ~60 us per member.
    members = [(tsv_name, tsv, True)]
    members += [(name, data, False) for name, data in images]
    with atomic_write(path, "wb") as f:
        write_zip(f, members, date_time=date_time, level=1)


#: Columns :func:`write_ecotaxa_zip` writes before the predicted class, in its order.
_BEFORE_ANNOTATION = (
    "img_file_name", "img_rank", "object_id", "object_lat", "object_lon", "object_date",
    "object_time", "object_depth_min", "object_depth_max",
)  # fmt: skip


def annotate_ecotaxa_zip(
    path: str | os.PathLike[str], object_ids: Sequence[str], predicted: Sequence[str]
) -> None:
    """Set the predicted class of every object of an export :func:`write_ecotaxa_zip` wrote.

    The zip becomes what :func:`write_ecotaxa_zip` writes with ``predicted`` for the same
    objects (same TSV bytes, same images): the HPC path classifies a chunk after its
    export was written without classes (``plankline run --no-classify``, then ``plankline
    classify``), and its export must equal ``plankline run``'s. Measurements are not
    read back from the measurements CSV, whose six significant digits are fewer than the
    export's nine. Predictions already there are replaced.

    Parameters
    ----------
    path : path-like
        The export; rewritten atomically.
    object_ids : sequence of str
        The export's objects, in its order (a mismatch is a ``ValueError``).
    predicted : sequence of str
        Class per object.

    Raises
    ------
    ValueError
        When the zip is no export of ours or its objects are not ``object_ids``.
    """
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        tsvs = [m for m in names if m.startswith("ecotaxa") and m.endswith(".tsv")]
        if len(tsvs) != 1:
            raise ValueError(f"{path}: expected one ecotaxa*.tsv, found {tsvs}")
        text = z.read(tsvs[0]).decode("latin-1")
        images = [(m, z.read(m)) for m in names if m != tsvs[0]]
        date_time = z.getinfo(tsvs[0]).date_time  # kept: the same bytes as run's export
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    if len(rows) < 2 or len(rows[0]) != len(rows[1]):
        raise ValueError(f"{path}: {tsvs[0]} lacks its header or type row")
    header, types, body = rows[0], rows[1], rows[2:]
    ragged = next((k for k, r in enumerate(body) if len(r) != len(header)), None)
    if ragged is not None:
        raise ValueError(f"{path}: {tsvs[0]} line {ragged + 3} has {len(body[ragged])} fields")
    columns = {
        name: (kind, [r[i] for r in body])
        for i, (name, kind) in enumerate(zip(header, types, strict=True))
    }
    ids = columns.get("object_id", ("", []))[1]
    if ids != _clean_texts("object_id", object_ids):
        raise ValueError(
            f"{path}: the export holds {len(ids)} objects, the predictions {len(object_ids)}"
            + ("" if len(ids) != len(object_ids) else " with other ids or in another order")
        )
    annotation = _annotation_columns(predicted, len(ids))
    cols: dict[str, tuple[str, list[str]]] = {}
    for name, column in columns.items():
        if name in annotation:
            continue
        if name not in _BEFORE_ANNOTATION and not cols.keys() & annotation.keys():
            cols.update(annotation)
        cols[name] = column
    _write_members(path, tsvs[0], cols, images, date_time)


def _is_date(s: str) -> bool:
    try:
        return len(s) == 8 and s.isdigit() and bool(datetime.strptime(s, "%Y%m%d"))
    except ValueError:
        return False


def _is_time(s: str) -> bool:
    try:
        return len(s) == 6 and s.isdigit() and bool(datetime.strptime(s, "%H%M%S"))
    except ValueError:
        return False


def _check_tsv(
    z: zipfile.ZipFile,
    tsv: str,
    names: set[str],
    acq_sample: dict[str, tuple[str, str]],
    seen_pairs: set[tuple[str, str]],
    decode_images: bool,
) -> list[str]:
    """All rule violations of one TSV inside the zip (messages name file, line, column)."""
    errs: list[str] = []
    text = z.read(tsv).decode("latin-1")
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quotechar='"'))
    if len(rows) < 2:
        return [f"{tsv}: needs a header line and a [t]/[f] type line"]
    header = [h.strip(" \t").lower() for h in rows[0]]
    types = rows[1]
    data = rows[2:]
    if len(types) != len(header):
        errs.append(f"{tsv}: type line has {len(types)} fields, header has {len(header)}")
    if len(set(header)) != len(header):
        errs.append(
            f"{tsv}: repeated column(s) {sorted({h for h in header if header.count(h) > 1})}"
        )
    prefixes: set[str] = set()
    for i, h in enumerate(header):
        prefix, sep, field = h.partition("_")
        if not sep or not field:
            errs.append(f"{tsv}: column {h!r} is not <table>_<field>")
            continue
        if prefix not in _PREFIXES:
            errs.append(f"{tsv}: column {h!r} has unknown table prefix {prefix!r}")
            continue
        prefixes.add(prefix)
        if prefix == "img" and h not in _IMG_COLUMNS:
            errs.append(f"{tsv}: column {h!r}: the only img_ columns are {list(_IMG_COLUMNS)}")
        if not re.fullmatch(r"[a-z0-9_]+", h):
            errs.append(f"{tsv}: column {h!r} has characters outside [a-z0-9_]")
        if i < len(types) and types[i] not in ("[f]", "[t]"):
            errs.append(f"{tsv}: column {h!r} has type {types[i]!r}, expected exactly [f] or [t]")
    for prefix in ("object", "sample", "acq", "process"):
        if prefix in prefixes and f"{prefix}_id" not in header:
            errs.append(f"{tsv}: {prefix}_id is required because there are {prefix}_ columns")
    if "img_file_name" not in header:
        errs.append(f"{tsv}: img_file_name column is missing")
    col = {h: i for i, h in enumerate(header)}
    float_cols = [h for i, h in enumerate(header) if i < len(types) and types[i] == "[f]"]
    base = tsv.rsplit("/", 1)[0] + "/" if "/" in tsv else ""
    for ln, row in enumerate(data, start=3):
        where = f"{tsv} line {ln}"
        if len(row) != len(header):
            errs.append(f"{where}: {len(row)} fields, header has {len(header)}")
            continue
        v = {h: row[i].strip() for h, i in col.items()}
        if "object_id" in v and not v["object_id"]:
            errs.append(f"{where}: object_id is empty")
        for h in float_cols:
            if v[h]:
                try:
                    number = float(v[h])
                except ValueError:
                    errs.append(f"{where}: {h}={v[h]!r} is not a number but the column is [f]")
                else:
                    if math.isinf(number):
                        errs.append(f"{where}: {h}={v[h]!r} is infinite (leave the field empty)")
        for h, lim in (("object_lat", 90.0), ("object_lon", 180.0)):
            if v.get(h):
                try:
                    if abs(float(v[h])) > lim:
                        errs.append(f"{where}: {h}={v[h]} is outside -{lim:g}..{lim:g}")
                except ValueError:
                    errs.append(f"{where}: {h}={v[h]!r} is not a number")
        if v.get("object_date") and not _is_date(v["object_date"]):
            errs.append(f"{where}: object_date={v['object_date']!r} is not YYYYMMDD")
        if v.get("object_time") and not _is_time(v["object_time"]):
            errs.append(f"{where}: object_time={v['object_time']!r} is not HHMMSS")
        status = v.get("object_annotation_status", "")
        if status and status.lower() not in ANNOTATION_STATUSES:
            errs.append(
                f"{where}: object_annotation_status={status!r} not in {ANNOTATION_STATUSES}"
            )
        if status.lower() == "predicted" and not v.get("object_annotation_category"):
            errs.append(f"{where}: status predicted but object_annotation_category is empty")
        if v.get("acq_id"):
            smp = v.get("sample_id", "")
            prev = acq_sample.setdefault(v["acq_id"], (smp, where))
            if prev[0] != smp:
                errs.append(
                    f"{where}: acquisition {v['acq_id']!r} belongs to sample {smp!r} here "
                    f"but to {prev[0]!r} at {prev[1]}: one acquisition belongs to one sample"
                )
        img = v.get("img_file_name", "")
        if "img_file_name" in v:
            if not img:
                errs.append(f"{where}: img_file_name is empty")
            else:
                pair = (v.get("object_id", ""), img)
                if pair in seen_pairs:
                    errs.append(f"{where}: duplicate (object_id, img_file_name) {pair}")
                seen_pairs.add(pair)
                member = base + img
                if member not in names:
                    errs.append(f"{where}: image {img!r} is not in the zip")
                else:
                    errs.extend(_check_image(z, member, where, decode_images))
    return errs


def _check_image(z: zipfile.ZipFile, member: str, where: str, decode: bool) -> list[str]:
    ext = os.path.splitext(member)[1].lower()
    if ext not in (".png", ".jpg", ".jpeg"):
        return [f"{where}: image {member!r} must be PNG or JPEG, extension {ext!r}"]
    data = z.read(member)
    if not (data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC)):
        return [f"{where}: image {member!r} content is not PNG or JPEG"]
    if decode and cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None:
        return [f"{where}: image {member!r} does not decode"]
    return []


def validate_ecotaxa_zip(path: str | os.PathLike[str], *, decode_images: bool = True) -> list[str]:
    """Check a zip against EcoTaxa's import rules (module docstring); return the problems found.

    An empty list means EcoTaxa's importer will accept the file structure and
    content (taxonomy names are matched later, interactively, in EcoTaxa).

    Parameters
    ----------
    path : path-like
        The zip to check.
    decode_images : bool
        Also decode every image (slower, catches truncated files).

    Returns
    -------
    list of str
        One readable message per violation, naming file, line and column.
    """
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        return [f"{path}: not a readable zip ({e})"]
    with z:
        names = set(z.namelist())
        tsvs = sorted(
            n for n in names
            if re.fullmatch(r"ecotaxa.*\.tsv", n.rsplit("/", 1)[-1]) and not n.endswith("/")
        )  # fmt: skip
        if not tsvs:
            return [f"{path}: no file named ecotaxa*.tsv (EcoTaxa ignores other names)"]
        errs: list[str] = []
        acq_sample: dict[str, tuple[str, str]] = {}
        seen: set[tuple[str, str]] = set()
        for tsv in tsvs:
            errs.extend(_check_tsv(z, tsv, names, acq_sample, seen, decode_images))
        return errs
