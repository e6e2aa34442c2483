"""The column-wise text of tables (``plankline.outputs.formatting``) is exactly Python's
``%`` of every value: the CSV and the EcoTaxa TSV are byte-identical with or without it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plankline.outputs.formatting import (
    fixed_chars,
    float_columns_chars,
    general_chars,
    integer_chars,
    join_rows,
    text_chars,
    trim,
)


def texts(chars: np.ndarray) -> list[str]:
    return [bytes(c[c != 0]).decode() for c in chars.T]


def hard_floats(rng: np.random.Generator) -> np.ndarray:
    """Values where a float computation of %g goes wrong: ties in decimal (x.5 at every
    scale), powers of ten and their neighbours, 9.99..95 carries, zeros, specials, the
    ends of the range, and random bit patterns (every exponent)."""
    p10 = 10.0 ** np.arange(-320, 309)
    ties = (rng.integers(1, 10**9, 40_000) + 0.5) / 10.0 ** rng.integers(0, 12, 40_000)
    nines = np.array([float("0." + "9" * k + "5") for k in range(1, 17)])
    return np.concatenate([
        p10, np.nextafter(p10, 0), np.nextafter(p10, np.inf), ties, -ties[:1000],
        nines, nines * 1e5, -nines * 1e-7,
        [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 5e-324, 2.2250738585072014e-308,
         1.7976931348623157e308, 1e300, 1e-300, 999999.5, 9999995.0, 0.00099999995],
        rng.normal(0, 1, 20_000) * 10.0 ** rng.integers(-20, 20, 20_000),
        rng.integers(0, 2**63, 40_000, dtype=np.int64).view(np.float64),
        -rng.integers(0, 2**63, 10_000, dtype=np.int64).view(np.float64),
    ])  # fmt: skip


@pytest.mark.parametrize("precision", [1, 2, 6, 9, 15])
def test_general_chars_equal_python_percent_g_on_ties_powers_of_ten_and_bit_patterns(precision):
    x = hard_floats(np.random.default_rng(precision))
    assert texts(general_chars(x, precision)) == [f"%.{precision}g" % v for v in x.tolist()]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=40), st.integers(1, 15))
def test_general_chars_equal_python_percent_g_on_any_floats(values, precision):
    got = texts(general_chars(np.array(values, dtype=np.float64), precision))
    assert got == [f"%.{precision}g" % v for v in values]


@pytest.mark.parametrize("decimals", [0, 1, 3, 6, 9])
def test_fixed_chars_equal_python_percent_f_on_ties_probabilities_and_bit_patterns(decimals):
    rng = np.random.default_rng(decimals)
    probs = rng.dirichlet(np.full(121, 0.1), 300).astype(np.float32).ravel()
    ties = (rng.integers(0, 10**7, 20_000) + 0.5) / 10.0**decimals
    x = np.concatenate([hard_floats(rng), probs, ties, -ties[:500], [1.0, 0.0, -0.0]])
    assert texts(fixed_chars(x, decimals)) == [f"%.{decimals}f" % v for v in x.tolist()]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=40), st.integers(0, 9))
def test_fixed_chars_equal_python_percent_f_on_any_floats(values, decimals):
    assert texts(fixed_chars(values, decimals)) == [f"%.{decimals}f" % v for v in values]


def test_integer_chars_equal_percent_d_across_the_int64_range_and_booleans():
    rng = np.random.default_rng(0)
    ints = np.concatenate([
        rng.integers(-(2**63), 2**63 - 1, 5000, dtype=np.int64),
        [0, -1, 9, 10, -10, 99, 100, 2**63 - 1, -(2**63)],
        rng.integers(-1000, 1000, 5000),
    ])  # fmt: skip
    assert texts(integer_chars(ints)) == [str(v) for v in ints.tolist()]  # "%d" % v
    big = np.array([0, 2**64 - 1, 2**63], np.uint64)
    assert texts(integer_chars(big)) == ["0", str(2**64 - 1), str(2**63)]
    assert texts(integer_chars(np.array([True, False]))) == ["1", "0"]
    assert integer_chars(np.array([], np.int64)).shape == (1, 0)


def test_text_chars_keep_ascii_and_refuse_what_their_padding_cannot_hold():
    assert texts(text_chars(["roi_1.png", "", "a,b"])) == ["roi_1.png", "", "a,b"]
    assert text_chars(["caf\u00e9"]) is None
    assert texts(text_chars(["plankline 1.0"] * 3)) == ["plankline 1.0"] * 3  # constant
    assert text_chars(["caf\u00e9"] * 3) is None
    assert text_chars(["a\0b"]) is None


def test_join_rows_gives_delimited_lines_with_shared_and_trimmed_fields():
    n = 3
    fields = [
        text_chars(["a", "bb", ""]),
        trim(general_chars(np.array([1.5, -2.0, 1e-7]), 6)),
        text_chars(["same"])[:, :1],  # one value for every row
        integer_chars(np.array([7, 0, -3])),
    ]
    assert join_rows(fields, b"\t", n) == b"a\t1.5\tsame\t7\nbb\t-2\tsame\t0\n\t1e-07\tsame\t-3\n"
    assert join_rows(fields, b",", 0) == b""
    with pytest.raises(ValueError, match="field 1"):
        join_rows([fields[0], integer_chars(np.arange(2))], b",", n)
    with pytest.raises(ValueError, match="delimiter"):
        join_rows(fields, b"\n", n)


def test_float_columns_of_whole_numbers_and_others_give_percent_g_and_empty_non_finite():
    """Whole-number columns take the integer path; its text is %g's up to 10**precision
    (1e+06 at 6 digits goes the general way), -0.0 stays "-0", NaN and inf empty on
    request."""
    rng = np.random.default_rng(4)
    columns = [
        rng.integers(0, 5000, 100).astype(float),  # areas
        np.array([999999.0, 1e6, 3.0]),  # the last whole number below 10**6, and 10**6
        np.array([-0.0, 1.0, 2.0]),
        np.array([1.5, np.nan, -np.inf]),
        rng.normal(0, 50, 100),
    ]
    for precision, empty in ((6, False), (9, True)):
        got = float_columns_chars(columns, precision, nonfinite_empty=empty)
        for col, chars in zip(columns, got, strict=True):
            want = [f"%.{precision}g" % v for v in col.tolist()]
            if empty:
                want = ["" if w in ("nan", "inf", "-inf") else w for w in want]
            assert texts(chars) == want
