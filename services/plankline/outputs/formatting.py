"""Table text built column-wise in NumPy: ``"%.Pg" % v``, ``"%d" % v`` and ASCII text of
whole columns at once, joined into delimited rows without a Python call per value.

A chunk of real ISIIS footage is ~16,000-20,000 ROIs of ~40 columns, written twice (the
measurements CSV at ``%.6g``, the EcoTaxa TSV at ``%.9g``): ~1.3 million numbers. One
``%`` per row over Python floats costs ~0.35 us a value, ~10 ms per frame of footage for
the two tables, more than measuring the ROIs. Here a column is a character matrix
stored *field-major*: ``uint8``, shape ``(width, n)``, row ``k`` holding the ``k``-th
character of every value, zero where a value has no character there (a short number,
an unused sign or exponent). NumPy's loops then run over the ``n`` values, never over a
dozen bytes. A table is its column matrices stacked with a delimiter row between them,
transposed once, its zero bytes dropped: no value is ever a Python object.

The text is **exactly** Python's: ``"%.Pg" % v`` rounds the exact binary value
correctly (half to even on exact ties), which a float computation of the scaled
mantissa cannot promise within a few ulps of a rounding tie; those values (about one
in 100,000 at 9 digits), non-finite values and magnitudes outside 1e-300..1e300 are
formatted by Python's ``%`` itself and written into their columns. Tests compare every
path with Python's ``%`` over random bit patterns, ties, powers of ten, 9.99..95 and
special values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "fixed_chars",
    "fixed_columns_chars",
    "float_columns_chars",
    "general_chars",
    "integer_chars",
    "join_rows",
    "text_chars",
    "trim",
]

_POW10 = np.array([float(f"1e{k}") for k in range(-330, 331)])  # correctly rounded
_POW10_AT = 330
_DIGIT = 48  # ord("0")
_LOG10_2_Q18 = 78913  # log10(2) * 2**18 rounded down: floor(x log10 2), or 1 less, |x| < 1100
# the hundreds, tens and units characters of 0..999
_DIGIT_OF3 = np.array([list(b"%03d" % k) for k in range(1000)], np.uint8).T.copy()
# trailing zeros of a 3-digit group ("000" counts 3)
_ZEROS3 = np.array(
    [3 if k == 0 else len(str(k)) - len(str(k).rstrip("0")) for k in range(1000)], np.int8
)


def general_chars(values: np.ndarray | Sequence[float], precision: int) -> np.ndarray:
    """``"%.{precision}g" % v`` of every value, as a field-major character matrix.

    Parameters
    ----------
    values : array-like of float
        1-D; converted to ``float64``.
    precision : int
        Significant digits, 1-15.

    Returns
    -------
    np.ndarray
        ``uint8``, shape ``(precision + 12, n)``: column ``i`` holds the characters of
        value ``i`` top to bottom, with zero bytes where a field is unused (sign, the
        ``0.000`` of small numbers, the point, the exponent).

    Notes
    -----
    The decimal exponent comes from the binary one (an estimate at most one too low,
    corrected once), the significant digits from ``rint`` of the value times a correctly
    rounded power of ten (within ~2 ulp of the exact product), the characters from a
    table of 3-digit groups. A value whose product lies within 1e-14 relative of a
    rounding tie, or outside the mantissa's range after the correction, is formatted by
    Python (see the module docstring), so the text is always Python's.

    Examples
    --------
    >>> m = general_chars([0.5, -1234567.0, 1e-5, 0.0, float("nan")], 6)
    >>> [bytes(c[c != 0]).decode() for c in m.T]
    ['0.5', '-1.23457e+06', '1e-05', '0', 'nan']
    """
    if not 1 <= precision <= 15:
        raise ValueError(f"precision must be 1-15 significant digits, got {precision}")
    p = precision
    x = np.ascontiguousarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    out = np.zeros((p + 12, x.size), np.uint8)  # sign, "0.000", p digits and a point, "e+308"
    for start in range(0, x.size, _BLOCK):  # ~40 temporaries of a block stay in the cache
        _general_block(x[start : start + _BLOCK], p, out[:, start : start + _BLOCK])
    return out


_BLOCK = 32768  # values formatted at a time: 1.5-2x faster than whole columns of 400,000


def _general_block(x: np.ndarray, p: int, out: np.ndarray) -> None:
    """:func:`general_chars` of ``x`` into ``out`` (zeros, ``(p + 12, len(x))``)."""
    n = x.size
    bits = x.view(np.int64)
    biased = (bits >> 52) & 0x7FF
    normal = (biased > 66) & (biased < 2020)  # 1e-300..1e300: no subnormal, inf or NaN
    zero = (bits & 0x7FFFFFFFFFFFFFFF) == 0
    # floor(log10 |x|), or one less
    e = ((np.where(normal, biased, 1023) - 1023) * _LOG10_2_Q18) >> 18
    lo, hi = float(10 ** (p - 1)), float(10**p)
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite: Python's, below
        s = np.abs(x) * _POW10[_POW10_AT + p - 1 - e]
        low = s < lo  # the product rounded under a power of ten
        s = np.where(low, s * 10.0, s)
        e -= low
        high = s >= hi  # the estimate one too low
        s = np.where(high, s / 10.0, s)
        e += high
        m = np.rint(s)
        # within a few ulps of a rounding tie the float product cannot tell the exact
        # value's side: Python's correctly rounded % decides those
        tie = np.abs(s - np.floor(s) - 0.5) < hi * 1e-14
    fast = normal & ~tie & (s >= lo) & (s < hi)
    carry = m >= hi  # 999999.7 -> 1e6: one more digit before the point
    m = np.where(carry | ~fast, lo, m)  # zero: "1" with its first digit made "0" below
    e = np.where(fast, e + carry, 0).astype(np.int16)
    fast |= zero
    digits: list[np.ndarray] = []  # characters of the p digits, most significant first
    tz = np.zeros(n, np.int8)  # trailing zeros
    run = np.ones(n, bool)
    for _ in range((p + 2) // 3):  # three at a time from the right
        q = np.floor(m / 1000.0)
        g = (m - 1000.0 * q).astype(np.intp)
        m = q
        tz += run * _ZEROS3[g]
        run &= g == 0
        digits[:0] = [_DIGIT_OF3[0][g], _DIGIT_OF3[1][g], _DIGIT_OF3[2][g]]
    digits = digits[-p:]
    digits[0] = np.where(zero, np.uint8(_DIGIT), digits[0])
    nd = p - np.minimum(tz, p - 1)  # significant digits left
    fixed = (e >= -4) & (e < p)
    small = fixed & (e < 0)
    big = fixed & ~small
    char0, point = np.uint8(_DIGIT), np.uint8(ord("."))
    out[0] = (bits < 0) * np.uint8(ord("-"))
    # "0." and up to three zeros before the digits of 1e-4 <= |v| < 1
    at = np.flatnonzero(small)
    if at.size:
        out[1, at], out[2, at] = char0, point
        for k in range(3):
            out[3 + k, at] = (e[at] < -1 - k) * char0
    # the digits with the point after digit dp (fixed: the units; exponent form: the
    # first; 0.000ddd: -1, its point is in the lead), digits past `shown` left out
    dp = np.where(big, e, -small.view(np.int8))
    shown = np.where(big, np.maximum(nd, dp + 1), nd)
    kept = [digits[j] * (shown > j) for j in range(p)]
    dot = (~small & (nd > dp + 1)) * point
    out[6] = np.where(dp == -1, dot, kept[0])
    for k in range(1, p + 1):
        char = kept[k - 1] if k == p else np.where(dp >= k, kept[k], kept[k - 1])
        out[6 + k] = np.where(dp == k - 1, dot, char)
    at = np.flatnonzero(~fixed)  # "e+XX", "e-XXX"
    if at.size:
        ae = np.abs(e[at])
        base = 7 + p
        out[base, at] = ord("e")
        out[base + 1, at] = np.where(e[at] < 0, ord("-"), ord("+"))
        out[base + 2, at] = (ae >= 100) * (_DIGIT + ae // 100).astype(np.uint8)
        out[base + 3, at] = _DIGIT + ae // 10 % 10
        out[base + 4, at] = _DIGIT + ae % 10
    slow = np.flatnonzero(~fast)
    if slow.size:
        _python_text(out, x, slow, f"%.{p}g")  # fits: %g is at most p + 12 characters


def _python_text(out: np.ndarray, x: np.ndarray, at: np.ndarray, spec: str) -> np.ndarray:
    """``spec % v`` of the values ``x[at]`` written over their columns of ``out`` (the
    values whose text the NumPy path cannot promise); ``out``, or a taller copy of it
    when a text is longer than its rows."""
    texts = [(spec % v).encode("ascii") for v in x[at].tolist()]
    width = max(out.shape[0], *map(len, texts))
    if width > out.shape[0]:
        out = np.vstack([out, np.zeros((width - out.shape[0], out.shape[1]), np.uint8)])
    out[:, at] = 0
    for i, t in zip(at.tolist(), texts, strict=True):
        out[: len(t), i] = np.frombuffer(t, np.uint8)
    return out


def float_columns_chars(
    columns: Sequence[np.ndarray], precision: int, *, nonfinite_empty: bool = False
) -> list[np.ndarray]:
    """``"%.{precision}g" % v`` of several float columns, each a trimmed character matrix.

    A column of whole numbers below ``10**precision`` (areas, bounding boxes, gray
    levels: a fifth of the measurements) is written as ``"%d"`` would write them, which
    is ``%g``'s text for them and ~10x cheaper; the other columns are formatted by one
    :func:`general_chars` call. ``nonfinite_empty``: NaN and infinities give empty
    fields (the EcoTaxa TSV) instead of ``nan``/``inf``.
    """
    out: list[np.ndarray | None] = [None] * len(columns)
    rest = []
    limit = float(10**precision)
    for k, col in enumerate(columns):
        x = np.asarray(col, dtype=np.float64)
        whole = x.size and np.all((np.abs(x) < limit) & (x == np.floor(x)))
        if whole and not (np.signbit(x) & (x == 0)).any():  # -0.0 is "-0"
            out[k] = integer_chars(x.astype(np.int64))
            continue
        rest.append(k)

    def chars_of(joined: np.ndarray) -> np.ndarray:
        chars = general_chars(joined, precision)
        if nonfinite_empty:
            chars[:, ~np.isfinite(joined)] = 0
        return chars

    formatted = _formatted_together([columns[k] for k in rest], chars_of)
    for k, chars in zip(rest, formatted, strict=True):
        out[k] = chars
    return out  # type: ignore[return-value]


def fixed_columns_chars(columns: Sequence[np.ndarray], decimals: int) -> list[np.ndarray]:
    """``"%.{decimals}f" % v`` of several float columns, each a trimmed character matrix
    (one :func:`fixed_chars` call)."""
    return _formatted_together(columns, lambda joined: fixed_chars(joined, decimals))


def _formatted_together(
    columns: Sequence[np.ndarray], chars_of: Callable[[np.ndarray], np.ndarray]
) -> list[np.ndarray]:
    """Columns formatted by one ``chars_of`` call over their concatenation (one pass of
    NumPy's loops, not one per column), each cut out again and trimmed."""
    if not columns:
        return []
    n = [len(c) for c in columns]
    chars = chars_of(np.concatenate([np.asarray(c, dtype=np.float64) for c in columns]))
    at = np.cumsum(n) - n
    return [trim(chars[:, a : a + m]) for a, m in zip(at.tolist(), n, strict=True)]


def fixed_chars(values: np.ndarray | Sequence[float], decimals: int) -> np.ndarray:
    """``"%.{decimals}f" % v`` of every value, as a field-major character matrix (the
    class probabilities of a classification table: 121 per ROI for the default model).

    The digits are ``rint`` of ``|v| * 10**decimals`` (a power of ten exact in binary,
    the product within half an ulp of the exact one), the integer part and the
    zero-padded fraction cut from it. Products within ~1e-15 relative of a rounding
    tie, non-finite values and magnitudes of 2**50 and more after scaling are formatted
    by Python's ``%``, so the text is always Python's.

    Examples
    --------
    >>> m = fixed_chars([0.5, 1.0, 2.5e-7, -0.0, 123.4567891, float("nan")], 6)
    >>> [bytes(c[c != 0]).decode() for c in m.T]
    ['0.500000', '1.000000', '0.000000', '-0.000000', '123.456789', 'nan']
    """
    if not 0 <= decimals <= 9:
        raise ValueError(f"decimals must be 0-9, got {decimals}")
    x = np.ascontiguousarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    scale = float(10**decimals)
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.abs(x) * scale
        m = np.rint(s)
        fast = (s < 2.0**50) & ~(np.abs(s - np.floor(s) - 0.5) < (s + 1.0) * 1e-15)
    m = np.where(fast, m, 0.0)
    whole = np.floor(m / scale)  # exact: m < 2**50
    fraction = (m - whole * scale).astype(np.intp)
    if whole.max(initial=0.0) < 10:  # probabilities: one digit, no integer_chars
        int_rows = _DIGIT + whole.astype(np.uint8)
    else:
        int_rows = integer_chars(whole.astype(np.int64))[1:]
    parts = [np.signbit(x) * np.uint8(ord("-")), int_rows]
    if decimals:
        parts.append(np.full(x.size, ord("."), np.uint8))
        groups: list[np.ndarray] = []  # three digits at a time from the right
        for _ in range((decimals + 2) // 3):
            fraction, g = np.divmod(fraction, 1000)
            groups[:0] = [_DIGIT_OF3[0][g], _DIGIT_OF3[1][g], _DIGIT_OF3[2][g]]
        parts += groups[-decimals:]
    out = np.vstack(parts)  # 1-D parts are rows
    slow = np.flatnonzero(~fast)
    return _python_text(out, x, slow, f"%.{decimals}f") if slow.size else out


def integer_chars(values: np.ndarray | Sequence[int]) -> np.ndarray:
    """``"%d" % v`` of every integer (or boolean: ``0``/``1``), as a field-major
    character matrix (``(width, n)``, zero bytes where a value is shorter).

    Examples
    --------
    >>> m = integer_chars([0, -7, 1234])
    >>> [bytes(c[c != 0]).decode() for c in m.T]
    ['0', '-7', '1234']
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "biu":
        raise ValueError(f"integer_chars needs integers or booleans, got {arr.dtype}")
    n = arr.size
    if n == 0:
        return np.zeros((1, 0), np.uint8)
    big = arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.max() > np.iinfo(np.int64).max
    x = arr.astype(np.int64)
    if big or x.min() == np.iinfo(np.int64).min:  # |x| does not fit in int64
        return text_chars([str(v) for v in arr.tolist()])  # type: ignore[return-value]
    a = np.abs(x)
    width = len(str(int(a.max())))
    out = np.zeros((width + 1, n), np.uint8)
    out[0] = (x < 0) * np.uint8(ord("-"))
    rest = a
    for j in range(width, 0, -1):  # row j: the (width - j)-th digit from the right
        rest, d = np.divmod(rest, 10)
        out[j] = np.where((a >= 10 ** (width - j)) | (j == width), _DIGIT + d, 0)
    return out


def text_chars(texts: Sequence[str]) -> np.ndarray | None:
    """ASCII strings as a character matrix (``(width, n)``, zero padded: the transposed
    view of one string per row; a string repeated in every row: a read-only broadcast of
    its one column); None when a string is not ASCII or holds a NUL byte (the padding),
    for the caller's own path.

    Examples
    --------
    >>> m = text_chars(["ab", "", "c"])
    >>> [bytes(c[c != 0]).decode() for c in m.T]
    ['ab', '', 'c']
    """
    texts = list(texts)
    if len(texts) > 1 and texts.count(texts[0]) == len(texts):  # a constant column
        one = text_chars(texts[:1])
        return None if one is None else np.broadcast_to(one, (one.shape[0], len(texts)))
    joined = "".join(texts)
    if not joined.isascii() or "\0" in joined:
        return None
    width = max(map(len, texts), default=0) or 1
    rows = np.array(texts, dtype=f"S{width}").view(np.uint8).reshape(len(texts), width)
    return rows.T  # a view: the strings stay row by row, as join_rows copies them


def trim(chars: np.ndarray) -> np.ndarray:
    """The character matrix without its character positions that are empty in every value
    (the exponent of a column without one, the sign of one without negatives): the
    table's text is the same, its matrix narrower."""
    return chars[chars.any(axis=1)] if chars.shape[1] else chars


def join_rows(fields: Sequence[np.ndarray], delimiter: bytes, n: int) -> bytes:
    """Rows of ``fields`` (field-major character matrices of ``n`` values, or of one value
    shared by all rows) separated by ``delimiter``, each row ended by a newline.

    Examples
    --------
    >>> join_rows([text_chars(["a", "bc"]), integer_chars([1, 22])], b",", 2)
    b'a,1\\nbc,22\\n'
    """
    if len(delimiter) != 1 or delimiter in (b"\0", b"\n"):
        raise ValueError(
            f"delimiter must be one byte other than NUL and newline, got {delimiter!r}"
        )
    if n == 0:
        return b""
    for k, f in enumerate(fields):
        if f.ndim != 2 or f.shape[1] not in (1, n):
            raise ValueError(f"field {k} has shape {f.shape}, expected (width, {n})")
    height = sum(f.shape[0] for f in fields) + len(fields)
    rows = np.empty((n, height), np.uint8)
    # Matrices laid out row by row (text, constants) are copied straight into the rows;
    # runs of field-major ones (numbers) are stacked, then transposed tile by tile.
    run: list[np.ndarray] = []
    at = start = 0
    for k, f in enumerate(fields):
        if k:
            run.append(_DELIMITER[delimiter[0]])
            at += 1
        if f.strides[0] == 1 or f.strides[1] == 0:  # row-major (f.T contiguous rows)
            _transpose_run(run, rows, start, n)
            rows[:, at : at + f.shape[0]] = f.T
            run, start = [], at + f.shape[0]
        else:
            run.append(f)
        at += f.shape[0]
    run.append(_DELIMITER[ord("\n")])
    _transpose_run(run, rows, start, n)
    return rows.tobytes().translate(None, b"\0")


_DELIMITER = [np.full((1, 1), k, np.uint8) for k in range(256)]  # one byte in every row


def _transpose_run(run: list[np.ndarray], rows: np.ndarray, start: int, n: int) -> None:
    """Field-major matrices (and one-column delimiters) stacked, written transposed into
    ``rows[:, start:]`` in tiles of 256 rows (3x NumPy's byte-wise transpose)."""
    if not run:
        return
    height = sum(f.shape[0] for f in run)
    block = np.empty((height, n), np.uint8)
    at = 0
    for f in run:
        block[at : at + f.shape[0]] = f
        at += f.shape[0]
    for j in range(0, n, 256):
        rows[j : j + 256, start : start + height] = block[:, j : j + 256].T
