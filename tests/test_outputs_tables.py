"""CSV tables and the atomic writer."""

from __future__ import annotations

import numpy as np
import pytest
from plankline.outputs.tables import atomic_write, read_csv, write_csv


def test_csv_round_trip_keeps_order_types_and_values(tmp_path):
    cols = {
        "image": np.array(["20180706170805.476_f000001_l00002048_x00005_r0000", "b,with comma"]),
        "area": np.array([12, 4096]),
        "esd": np.array([3.90882, np.nan]),
        "label": ["copepod", 'say "hi"'],
    }
    p = tmp_path / "m.csv"
    write_csv(p, cols)
    got = read_csv(p)
    assert list(got) == ["image", "area", "esd", "label"]
    assert got["area"].dtype == np.int64 and got["area"].tolist() == [12, 4096]
    assert got["esd"].dtype == np.float64
    assert got["esd"][0] == pytest.approx(3.90882) and np.isnan(got["esd"][1])
    assert got["image"].tolist() == cols["image"].tolist()
    assert got["label"].tolist() == cols["label"]


def test_float_format_controls_precision(tmp_path):
    p = tmp_path / "f.csv"
    write_csv(p, {"x": np.array([1 / 3])}, float_format="%.3f")
    assert p.read_text().splitlines() == ["x", "0.333"]
    write_csv(p, {"x": np.array([1 / 3])}, float_format="%.17g")
    assert read_csv(p)["x"][0] == 1 / 3


def test_dtypes_keep_timestamp_like_strings(tmp_path):
    p = tmp_path / "t.csv"
    write_csv(p, {"chunk": ["20180706170805.476"], "n": [1]})
    assert read_csv(p)["chunk"].dtype == np.float64  # inferred: a number
    assert read_csv(p, dtypes={"chunk": str})["chunk"][0] == "20180706170805.476"


def test_header_only_csv_gives_empty_columns(tmp_path):
    p = tmp_path / "e.csv"
    write_csv(p, {"a": np.array([]), "b": []})
    got = read_csv(p)
    assert list(got) == ["a", "b"] and all(len(v) == 0 for v in got.values())


def test_write_csv_rejects_ragged_columns_naming_them(tmp_path):
    with pytest.raises(ValueError, match="'b' has 1 rows"):
        write_csv(tmp_path / "x.csv", {"a": [1, 2], "b": [1]})
    assert not (tmp_path / "x.csv").exists()


def test_read_csv_reports_bad_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match="line 3"):
        read_csv(p)


def test_crash_mid_write_leaves_no_partial_file_and_no_temp(tmp_path):
    p = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_write(p) as f:
        f.write(b"half of it")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_crash_mid_write_keeps_previous_complete_file(tmp_path):
    p = tmp_path / "m.csv"
    write_csv(p, {"a": [1, 2, 3]})

    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("disk full")

    # Fails while rendering the second column, before the rename.
    with pytest.raises(RuntimeError):
        write_csv(p, {"a": [9], "b": Boom()})
    assert read_csv(p)["a"].tolist() == [1, 2, 3]
    assert [x.name for x in tmp_path.iterdir()] == ["m.csv"]


def test_atomic_write_text_mode_and_missing_directories_are_created(tmp_path):
    with atomic_write(tmp_path / "a.txt", "w", encoding="utf-8") as f:
        f.write("ok")
    assert (tmp_path / "a.txt").read_text() == "ok"
    with atomic_write(tmp_path / "new" / "sub" / "b.bin") as f:
        f.write(b"x")
    assert (tmp_path / "new" / "sub" / "b.bin").read_bytes() == b"x"


@pytest.mark.parametrize("line", ["3,4,5,9", "3"])
def test_a_line_with_fields_to_spare_or_short_is_refused_whatever_is_read(tmp_path, line):
    p = tmp_path / "bad.csv"
    p.write_text(f"a,b,c\n1,2,3\n{line}\n6,7,8\n")
    # NumPy's reader, told to read a and b only, took both lines without a word
    with pytest.raises(ValueError, match=f"line 3 has {line.count(',') + 1} fields, header has"):
        read_csv(p, usecols=["a", "b"], dtypes={"a": float, "b": float})
    p.write_text("a,b\n1,2\n3,4\n\n\n")  # blank lines at the end are no rows
    assert read_csv(p)["b"].tolist() == [2, 4]


def test_usecols_and_forced_float_read_a_subset_fast_path(tmp_path):
    p = tmp_path / "p.csv"
    write_csv(p, {"image": ["a.png", "b.png"], "x": [0.25, 0.5], "y": [1, 2], "s": ["u", "v"]})
    got = read_csv(p, dtypes={"image": str, "y": float, "x": float}, usecols=["image", "y", "x"])
    assert list(got) == ["image", "y", "x"]
    assert got["y"].dtype == np.float64 and got["y"].tolist() == [1.0, 2.0]
    assert got["x"].tolist() == [0.25, 0.5] and got["image"].tolist() == ["a.png", "b.png"]
    with pytest.raises(ValueError, match="no column"):
        read_csv(p, usecols=["zz"])


def test_forced_float_with_empty_cells_falls_back_and_fails_clearly(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("a,b\n1,\n2,x\n")
    with pytest.raises(ValueError):
        read_csv(p, dtypes={"b": float})
    got = read_csv(p)
    assert got["a"].tolist() == [1, 2] and got["b"].tolist() == ["", "x"]


def test_quoted_cells_with_commas_quotes_and_newlines_round_trip(tmp_path):
    p = tmp_path / "q.csv"
    values = ['a,b "x"', "two\nlines", "plain"]
    write_csv(p, {"s": values, "n": [1, 2, 3]})
    got = read_csv(p)
    assert got["s"].tolist() == values and got["n"].tolist() == [1, 2, 3]


def test_non_finite_values_never_fail_a_table_and_read_back(tmp_path):
    # One ROI's odd measurement must not cost the chunk its measurements CSV.
    p = tmp_path / "m.csv"
    write_csv(p, {"elongation": np.array([2.5, np.inf, -np.inf, np.nan])})
    got = read_csv(p)["elongation"]
    assert got[0] == 2.5 and got[1] == np.inf and got[2] == -np.inf and np.isnan(got[3])


@pytest.mark.parametrize("n", [50, 40_000])
def test_csv_bytes_equal_csv_writer_of_each_value_formatted(tmp_path, n):
    """The fast paths (columns formatted in NumPy; one % per row) write exactly what
    csv.writer writes for the values formatted one by one (floats by float_format, ints
    and bools as integers, None empty), with and without text that needs quoting; 40,000
    rows span several of the formatter's blocks."""
    import csv
    import io

    rng = np.random.default_rng(0)
    base = {
        "image": np.array([f"roi_{i:04d}" for i in range(n)], dtype=object),
        "frame": rng.integers(0, 10**6, n),
        "flag": rng.random(n) > 0.5,
        "area": np.round(rng.random(n) * 1e4),
        "esd": np.concatenate([rng.normal(0, 1e3, n - 4), [np.nan, np.inf, -0.0, 1e-300]]),
        "note": [None if i % 7 == 0 else f"n{i}" for i in range(n)],
    }
    quoted = {**base, "note": ['has "quote"', "a,b"] + [f"n{i}" for i in range(n - 2)]}
    for cols in (base, quoted):
        for fmt in ("%.6g", "%.9g", "%.3f", "%.6f", "%.0f"):
            expect = io.StringIO()
            w = csv.writer(expect, lineterminator="\n")
            w.writerow(list(cols))
            text = {
                k: [
                    ""
                    if v is None
                    else fmt % v
                    if isinstance(v, float)
                    else str(int(v))
                    if isinstance(v, (bool, int))
                    else str(v)
                    for v in np.asarray(c).tolist()
                ]
                for k, c in cols.items()
            }
            w.writerows(zip(*text.values(), strict=True))
            p = tmp_path / "t.csv"
            write_csv(p, cols, float_format=fmt)
            assert p.read_text(encoding="utf-8") == expect.getvalue()
