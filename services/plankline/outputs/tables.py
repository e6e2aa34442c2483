"""Columnar CSV tables (measurements, class probabilities) and the one atomic writer.

Every writer in :mod:`plankline.outputs` goes through :func:`atomic_write`, so a
crash, a kill or a full disk never leaves a half-written file under the final
name: a resumed batch run or a retried stream step either finds the complete
previous output or nothing.

Tables are ``dict[str, np.ndarray]`` in column order, the shape
``skimage.measure.regionprops_table`` returns, so measurement code can hand its
result straight to :func:`write_csv`. The stdlib :mod:`csv` module does the
quoting; no pandas dependency is needed.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from plankline.outputs.formatting import (
    fixed_columns_chars,
    float_columns_chars,
    integer_chars,
    join_rows,
    text_chars,
)

__all__ = ["atomic_write", "read_csv", "read_header", "write_csv"]


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it to ``path``.

    ``os.replace`` within one directory is atomic on POSIX and Windows, so
    readers see either the old file or the complete new one. On any exception
    the temporary file is removed and the exception propagates; ``path`` is
    untouched.

    Parameters
    ----------
    path : path-like
        Final file name. Missing parent folders are created.
    mode : str
        ``"wb"`` (default) or ``"w"`` for text; any write mode ``open`` accepts.
    **open_kwargs
        Passed to :func:`open` (``encoding=``, ``newline=``...).

    Yields
    ------
    file object
        Write to it; do not close it yourself.

    Examples
    --------
    >>> with atomic_write("out.csv", "w", newline="") as f:  # doctest: +SKIP
    ...     f.write("a,b\\n1,2\\n")
    """
    if not any(c in mode for c in "wax"):
        raise ValueError(f"atomic_write needs a write mode, got {mode!r}")
    final = Path(path)
    directory = final.parent if str(final.parent) else Path(".")
    # Output folders are created on demand: a writer's job is to land the file.
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode.replace("x", "w").replace("a", "w"), **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    # Make the rename itself durable (best effort: not every platform can fsync a directory).
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _column_values(
    name: str, values: np.ndarray | Sequence[Any], float_format: str
) -> tuple[np.ndarray, str, list[str] | None]:
    """One column as an array, its ``%`` conversion in a row format, and its values as
    ``str`` when it is text (the only kind that may need quoting).

    ``float_format`` for floats (what ``float_format % v`` gives), ``%d`` for integers and
    booleans (``str`` of the integer, ``0``/``1``), ``%s`` for text (``None`` -> empty).
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"column {name!r} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        return arr, float_format, None
    if arr.dtype.kind in "iub":
        return arr, "%d", None
    return arr, "%s", ["" if v is None else str(v) for v in arr.tolist()]


def write_csv(
    path: str | os.PathLike[str],
    columns: Mapping[str, np.ndarray | Sequence[Any]],
    *,
    float_format: str = "%.6g",
) -> None:
    """Write a columnar table as CSV, atomically, header first, column order kept.

    Parameters
    ----------
    path : path-like
        Output file; replaced atomically (see :func:`atomic_write`).
    columns : mapping of str to 1-D array or sequence
        Column name -> values; all columns must have the same length.
    float_format : str
        ``%``-format for float columns. ``"%.6g"`` keeps six significant
        digits, enough for pixel measurements while keeping per-chunk files
        small; ``"%.6f"`` six decimals (class probabilities); ``"%.17g"`` for an
        exact round trip.

    Raises
    ------
    ValueError
        If there are no columns, a name is empty or repeated, or lengths differ
        (the message names the column).

    Notes
    -----
    With ``"%.Ng"`` or ``"%.Nf"`` and ASCII text, whole columns are formatted in NumPy
    (:mod:`plankline.outputs.formatting`): Python's text for every value, without a
    Python call per value (a chunk of real footage is ~20,000 rows of ~40 columns, or of
    ~120 class probabilities). Other formats take one ``%`` over a whole row
    (``"%s,%d,%.6g,...\\n" % row``). Either way the text is what ``csv.writer`` writes
    for the same strings; rows with text that needs quoting (a comma, a quote, a line
    break) and one-column tables (an empty row must be quoted) go through ``csv.writer``.
    """
    if not columns:
        raise ValueError(f"{path}: a table needs at least one column")
    names = list(columns)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}: column names must be non-empty strings, got {name!r}")
    n_rows: int | None = None
    arrays: list[np.ndarray] = []
    specs: list[str] = []
    texts: dict[int, list[str]] = {}
    for k, name in enumerate(names):
        arr, spec, text = _column_values(name, columns[name], float_format)
        if n_rows is None:
            n_rows = len(arr)
        elif len(arr) != n_rows:
            raise ValueError(
                f"{path}: column {name!r} has {len(arr)} rows, column {names[0]!r} has {n_rows}"
            )
        arrays.append(arr)
        specs.append(spec)
        if text is not None:
            texts[k] = text
    # a character needing quotes is in some value iff it is in their concatenation
    quote = any(c in joined for joined in map("".join, texts.values()) for c in ',"\r\n')
    numpy_format = re.fullmatch(r"%\.(\d{1,2})([gf])", float_format)
    chars = None
    if numpy_format and len(names) > 1 and not quote:
        digits, kind = int(numpy_format.group(1)), numpy_format.group(2)
        if (1 <= digits <= 15) if kind == "g" else (digits <= 9):
            chars = _column_chars(arrays, specs, texts, digits, fixed=kind == "f")
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(names)
        if chars is not None:  # the same text, built column-wise in NumPy
            f.flush()
            f.buffer.write(join_rows(chars, b",", n_rows or 0))
            return
        lists = [texts[k] if k in texts else a.tolist() for k, a in enumerate(arrays)]
        one_conversion = float_format.count("%") == 1 and "%%" not in float_format
        if len(names) > 1 and not quote and one_conversion:
            row = ",".join(specs) + "\n"
            f.write("".join(map(row.__mod__, zip(*lists, strict=True))))
        else:
            rendered = [
                list(map(spec.__mod__, col)) if spec != "%s" else col
                for col, spec in zip(lists, specs, strict=True)
            ]
            if len(names) > 1 and not quote:
                f.write("".join(",".join(r) + "\n" for r in zip(*rendered, strict=True)))
            else:
                writer.writerows(zip(*rendered, strict=True))


def _column_chars(
    arrays: list[np.ndarray],
    specs: list[str],
    texts: Mapping[int, list[str]],
    precision: int,
    *,
    fixed: bool = False,
) -> list[np.ndarray] | None:
    """Every column as a character matrix (:mod:`plankline.outputs.formatting`): floats as
    ``"%.{precision}g"``, or ``"%.{precision}f"`` when ``fixed`` (all float columns in one
    call), integers and booleans as ``"%d"``, text as is; None when a text column is not
    ASCII (the row format writes those)."""
    out: list[np.ndarray | None] = [None] * len(arrays)
    floats = [k for k, spec in enumerate(specs) if spec not in ("%s", "%d")]
    columns_chars = fixed_columns_chars if fixed else float_columns_chars
    chars = columns_chars([arrays[k] for k in floats], precision)
    for k, column in zip(floats, chars, strict=True):
        out[k] = column
    for k, spec in enumerate(specs):
        if spec == "%s":
            out[k] = text_chars(texts[k])
            if out[k] is None:
                return None
        elif spec == "%d":
            out[k] = integer_chars(arrays[k])
    return out  # type: ignore[return-value]


def _parse_column(values: Sequence[str] | np.ndarray) -> np.ndarray:
    """Infer int, then float (empty -> NaN), else keep strings as an object array."""
    arr = np.array(values, dtype=str)
    if arr.size == 0:
        return np.array([], dtype=np.float64)
    with contextlib.suppress(ValueError, OverflowError):
        return arr.astype(np.int64)
    empty = arr == ""
    if not empty.all():
        filled = np.where(empty, "nan", arr)
        with contextlib.suppress(ValueError):
            return filled.astype(np.float64)
    return arr.astype(object)


def _read_rows_csv_module(path: str | os.PathLike[str], n: int) -> list[tuple[str, ...]]:
    """Slow exact path: stdlib csv (multi-line quoted cells, precise line numbers in errors)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        rows = list(reader)
    for i, row in enumerate(rows):
        if len(row) != n:
            raise ValueError(f"{path}: line {i + 2} has {len(row)} fields, header has {n}")
    return list(zip(*rows, strict=True)) if rows else [()] * n


def read_header(path: str | os.PathLike[str]) -> list[str]:
    """A CSV's column names (its first row; empty for an empty file), without reading on:
    which columns a table has decides how it is read."""
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def read_csv(
    path: str | os.PathLike[str],
    *,
    dtypes: Mapping[str, type | np.dtype] | None = None,
    usecols: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Read a CSV written by :func:`write_csv` (or any CSV with a header row) into columns.

    Numeric columns come back as ``int64`` (all values integers) or ``float64``
    (empty cells -> NaN); anything else as an ``object`` array of ``str``.
    Cells are split by NumPy's C reader (``np.loadtxt``, ~3x faster than the
    csv module on 100-class probability tables), falling back to the csv
    module for files it cannot split (multi-line cells, ragged rows).

    Parameters
    ----------
    path : path-like
        CSV file with a header row.
    dtypes : mapping, optional
        Force a column's type, e.g. ``{"image": str}``: ISIIS chunk names such
        as ``20180706170805.476`` look like floats and would lose digits if
        inferred. Forcing ``float`` skips inference (faster).
    usecols : sequence of str, optional
        Read only these columns (in this order).

    Returns
    -------
    dict of str to np.ndarray
        Columns in file order (or ``usecols`` order).

    Raises
    ------
    ValueError
        If the file is empty, a header is repeated or missing, or a row has
        the wrong number of fields (the message names file and line).
    """
    dtypes = dict(dtypes or {})
    with open(path, newline="", encoding="utf-8") as f:
        try:
            header = next(csv.reader(f))
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a header row") from None
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise ValueError(f"{path}: repeated column name(s) {dup}")
    wanted = list(usecols) if usecols is not None else header
    missing = (set(wanted) | set(dtypes)) - set(header)
    if missing:
        raise ValueError(f"{path}: no column(s) {sorted(missing)}")
    n = len(header)
    index = {h: i for i, h in enumerate(header)}
    if not _same_field_counts(path, n):
        _read_rows_csv_module(path, n)  # names the first ragged line
    # Fast path: columns forced to float are parsed straight to float64 by NumPy's C reader.
    floats = [h for h in wanted if h in dtypes and np.dtype(dtypes[h]).kind == "f"]
    rest = [h for h in wanted if h not in floats]
    out: dict[str, np.ndarray] = {}
    if floats:
        try:
            block = _loadtxt(path, [index[h] for h in floats], np.float64)
        except ValueError:
            floats, rest = [], wanted
        else:
            out.update({h: block[:, i] for i, h in enumerate(floats)})
    if rest:
        try:
            table = _loadtxt(path, [index[h] for h in rest], str)
            cols = {h: table[:, i] for i, h in enumerate(rest)}
        except ValueError:
            all_cols = _read_rows_csv_module(path, n)
            cols = {h: all_cols[index[h]] for h in rest}
        for name in rest:
            values = cols[name]
            if name in dtypes:
                want = np.dtype(dtypes[name])
                out[name] = (
                    np.array(values, dtype=object)
                    if want.kind in "USO"
                    else np.asarray(values, dtype=str).astype(want)
                )
            else:
                out[name] = _parse_column(values)
    return {h: out[h] for h in wanted}


def _same_field_counts(path: str | os.PathLike[str], n: int) -> bool:
    """Whether the file's delimiters add up to ``n`` fields on every line.

    NumPy's reader, told which columns to read, accepts a line with fields to spare (and
    one short of columns it does not read): a file without quotes is checked here by
    counting (a few ms for a 4 MB table); a quoted one would need the csv module's pass
    and is left to NumPy's reader, as before.
    """
    data = Path(path).read_bytes()
    if b'"' in data:
        return True
    data = data.rstrip(b"\r\n")  # NumPy's reader skips blank lines at the end
    return data.count(b",") == (n - 1) * (data.count(b"\n") + 1)


def _loadtxt(path: str | os.PathLike[str], idx: list[int], dtype: type) -> np.ndarray:
    """NumPy's C CSV splitter on some columns; ValueError on anything it cannot handle."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
        table = np.loadtxt(
            path, delimiter=",", skiprows=1, dtype=dtype, ndmin=2, comments=None,
            quotechar='"', encoding="utf-8", usecols=idx,
        )  # fmt: skip
    if table.shape[0] == 0:
        return np.zeros((0, len(idx)), dtype=dtype)
    return table
