"""EcoTaxa zip export: a written zip passes the importer rules; each rule violation is caught."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from plankline.outputs.ecotaxa import (
    annotate_ecotaxa_zip,
    sanitize_name,
    validate_ecotaxa_zip,
    write_ecotaxa_zip,
)
from plankline.outputs.naming import frame_time, roi_id


def _objects(n: int = 4):
    rng = np.random.default_rng(1)
    ids = [roi_id("20180706170805.476", i * 50, i * 100_000, 10 * i, i) for i in range(n)]
    imgs = [rng.integers(0, 256, (12 + i, 9 + i), dtype=np.uint8) for i in range(n)]
    meas = {
        "Area": np.arange(n) * 10 + 5,
        "ESD (px)": np.linspace(1.5, 9.5, n),
        "perimeter": np.array([3.0, np.nan, 5.0, 6.0][:n]),
    }
    return ids, imgs, meas


def _write(path: Path, **over):
    ids, imgs, meas = _objects()
    kw = dict(
        object_ids=ids,
        images=imgs,
        measurements=meas,
        sample_id="tow 7",
        acq_id="20180706170805.476",
        lat=27.5,
        lon=[-80.1, -80.2, -80.3, -80.4],
        datetimes=[frame_time("20180706170805.476", i * 50, 13.7) for i in range(4)],
        depth=12.5,
        acq_meta={"instrument": "ISIIS", "fps": 13.7},
        sample_meta={"cruise": "OSTRICH-2018"},
        predicted=["copepod", "fish_larva", "copepod", "detritus"],
        pixel_size_um=55.0,
    )
    kw.update(over)
    write_ecotaxa_zip(path, **kw)
    return path


def _tsv(path: Path) -> tuple[str, list[list[str]]]:
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".tsv"))
        rows = list(csv.reader(io.StringIO(z.read(name).decode("latin-1")), delimiter="\t"))
    return name, rows


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a zip, letting ``edit(rows, files)`` change TSV rows and image files."""
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    tsv = next(n for n in files if n.endswith(".tsv"))
    rows = list(csv.reader(io.StringIO(files.pop(tsv).decode("latin-1")), delimiter="\t"))
    tsv = edit(rows, files) or tsv
    buf = io.StringIO()
    csv.writer(buf, delimiter="\t", lineterminator="\n").writerows(rows)
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr(tsv, buf.getvalue().encode("latin-1"))
        for n, d in files.items():
            z.writestr(n, d)
    return dst


def _set(rows, col, value, row=2):
    rows[row][rows[0].index(col)] = value


@pytest.fixture
def good(tmp_path):
    return _write(tmp_path / "good.zip")


def test_written_zip_passes_validation_and_holds_what_was_given(good):
    assert validate_ecotaxa_zip(good) == []
    name, rows = _tsv(good)
    assert name == "ecotaxa_tow_7.tsv"
    header, types, first = rows[0], rows[1], rows[2]
    assert header[:3] == ["img_file_name", "img_rank", "object_id"]
    assert set(types) == {"[t]", "[f]"}
    row = dict(zip(header, first, strict=True))
    ids, imgs, _ = _objects()
    assert row["object_id"] == ids[0] and row["img_file_name"] == ids[0] + ".png"
    assert row["object_lat"] == "27.5" and row["object_lon"] == "-80.1"
    assert row["object_date"] == "20180706" and row["object_time"] == "170805"
    assert row["object_depth_min"] == row["object_depth_max"] == "12.5"
    assert row["object_annotation_status"] == "predicted"
    assert row["object_annotation_category"] == "copepod"
    assert row["object_area"] == "5" and row["object_esd_px"] == "1.5"
    assert row["sample_id"] == "tow 7" and row["acq_id"] == "20180706170805.476"
    assert row["acq_instrument"] == "ISIIS" and row["process_pixel_size_um"] == "55"
    assert dict(zip(header, rows[3], strict=True))["object_perimeter"] == ""  # NaN -> empty
    with zipfile.ZipFile(good) as z:
        img = cv2.imdecode(np.frombuffer(z.read(ids[2] + ".png"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(img, imgs[2])


def test_minimal_export_without_optional_fields_is_valid(tmp_path):
    ids, imgs, _ = _objects(2)
    p = tmp_path / "min.zip"
    write_ecotaxa_zip(p, object_ids=ids, images=imgs, measurements={}, sample_id="s", acq_id="a")
    assert validate_ecotaxa_zip(p) == []


def test_sanitize_name_keeps_only_ecotaxa_characters():
    assert sanitize_name("Feret Diameter (px)") == "feret_diameter_px"
    assert sanitize_name("major-axis") == "major_axis"
    with pytest.raises(ValueError):
        sanitize_name("()")


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"lat": 91.0}, "lat"),
        ({"lon": [0, 0, 181.0, 0]}, r"lon\[2\]"),
        ({"object_ids": ["a", "a", "b", "c"]}, "unique"),
        ({"object_ids": ["a", "", "b", "c"]}, "empty"),
        ({"predicted": ["x"]}, "predicted"),
        ({"sample_id": ""}, "sample_id"),
        ({"measurements": {"id": np.zeros(4)}}, "reserved"),
        ({"measurements": {"a b": np.zeros(4), "a-b": np.zeros(4)}}, "already used"),
        ({"measurements": {"area": np.zeros(3)}}, "shape"),
        ({"images": [np.zeros((3, 3))] * 4}, "dtype"),
        ({"datetimes": ["20180706"] * 4}, "datetime"),
        ({"acq_meta": {"name": "caf\u00e9\u2014"}}, "latin-1"),
    ],
)
def test_writer_rejects_inputs_ecotaxa_refuses_naming_the_field(tmp_path, over, match):
    with pytest.raises(ValueError, match=match):
        _write(tmp_path / "bad.zip", **over)
    assert not (tmp_path / "bad.zip").exists()


def _tsv_rename(new):
    return lambda rows, files: new


def _drop_column(col):
    def edit(rows, files):
        i = rows[0].index(col)
        for r in rows:
            del r[i]

    return edit


def _add_column(name, typ, value):
    def edit(rows, files):
        rows[0].append(name)
        rows[1].append(typ)
        for r in rows[2:]:
            r.append(value)

    return edit


def _set_cell(col, value, row=2):
    return lambda rows, files: _set(rows, col, value, row)


def _duplicate_row(rows, files):
    rows.append(list(rows[2]))


def _tiff_image(rows, files):
    name = rows[2][0]
    _, buf = cv2.imencode(".tif", np.zeros((4, 4), np.uint8))
    files.pop(name)
    files[name[:-4] + ".tif"] = buf.tobytes()
    rows[2][0] = name[:-4] + ".tif"


def _second_sample_same_acq(rows, files):
    _set(rows, "sample_id", "another tow", row=3)


def _remove_image(rows, files):
    files.pop(rows[2][0])


def _bad_type(rows, files):
    rows[1][rows[0].index("object_area")] = "[n]"


def _png_named_but_not_png(rows, files):
    files[rows[2][0]] = b"GIF89a...."


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_tsv_rename("export.tsv"), "no file named ecotaxa"),
        (_bad_type, r"expected exactly \[f\] or \[t\]"),
        (_add_column("img_width", "[f]", "3"), "only img_ columns"),
        (_add_column("objectarea", "[f]", "3"), "not <table>_<field>"),
        (_add_column("foo_bar", "[t]", "x"), "unknown table prefix"),
        (_drop_column("object_id"), "object_id is required"),
        (_drop_column("sample_id"), "sample_id is required"),
        (_drop_column("acq_id"), "acq_id is required"),
        (_set_cell("object_id", ""), "object_id is empty"),
        (_set_cell("object_lat", "-90.5"), "object_lat"),
        (_set_cell("object_lon", "200"), "object_lon"),
        (_set_cell("object_date", "2018-07-06"), "YYYYMMDD"),
        (_set_cell("object_date", "20181340"), "YYYYMMDD"),
        (_set_cell("object_time", "17:08:05"), "HHMMSS"),
        (_set_cell("object_time", "250000"), "HHMMSS"),
        (_set_cell("object_area", "big"), "not a number"),
        (_set_cell("object_area", "inf"), "infinite"),
        (_set_cell("object_area", "-Infinity"), "infinite"),
        (_set_cell("object_annotation_status", "guessed"), "object_annotation_status"),
        (_set_cell("object_annotation_category", ""), "category is empty"),
        (_duplicate_row, "duplicate"),
        (_tiff_image, "PNG or JPEG"),
        (_png_named_but_not_png, "not PNG or JPEG"),
        (_remove_image, "not in the zip"),
        (_second_sample_same_acq, "one acquisition belongs to one sample"),
    ],
)
def test_validator_detects_each_rule_violation(good, tmp_path, edit, match):
    bad = _rewrite(good, tmp_path / "bad.zip", edit)
    errors = validate_ecotaxa_zip(bad)
    assert any(re.search(match, e) for e in errors), errors


def test_one_objects_bad_measurement_never_fails_the_export(tmp_path, caplog):
    # A 1-px streak once gave elongation = inf and the writer refused the whole chunk.
    meas = {
        "elongation": np.array([2.5, np.inf, -np.inf, np.nan]),
        "note": np.array(["ok", "tab\there", "line\nbreak", "caf\u00e9\u2014"], dtype=object),
    }
    with caplog.at_level("WARNING", logger="plankline.outputs.ecotaxa"):
        path = _write(tmp_path / "odd.zip", measurements=meas)
    assert validate_ecotaxa_zip(path) == []
    _, rows = _tsv(path)
    header, types, data = rows[0], rows[1], rows[2:]
    col = header.index("object_elongation")
    assert types[col] == "[f]"
    assert [r[col] for r in data] == ["2.5", "", "", ""]
    note = header.index("object_note")
    assert [r[note] for r in data] == ["ok", "tab here", "line break", "caf\u00e9?"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "'elongation': 2 infinite value(s)" in warned
    assert "'note': 3 value(s)" in warned


def test_validator_reports_unreadable_zip(tmp_path):
    p = tmp_path / "x.zip"
    p.write_bytes(b"not a zip")
    assert "not a readable zip" in validate_ecotaxa_zip(p)[0]


def test_unmodified_rewrite_stays_valid(good, tmp_path):
    # Guards the mutation tests above: the rewrite helper itself introduces no error.
    assert validate_ecotaxa_zip(_rewrite(good, tmp_path / "same.zip", lambda r, f: None)) == []


def test_datetimes_none_leave_date_and_time_empty(tmp_path):
    p = _write(tmp_path / "d.zip", datetimes=[None, datetime(2020, 1, 2, 3, 4, 5), None, None])
    _, rows = _tsv(p)
    h = rows[0]
    assert rows[2][h.index("object_date")] == "" and rows[3][h.index("object_time")] == "030405"
    assert validate_ecotaxa_zip(p) == []


def test_chunk_without_objects_gives_a_valid_header_only_export(tmp_path):
    p = tmp_path / "empty.zip"
    write_ecotaxa_zip(
        p,
        object_ids=[],
        images=[],
        measurements={"area": np.array([])},
        sample_id="s",
        acq_id="a",
        lat=10.0,
        predicted=[],
    )
    assert validate_ecotaxa_zip(p) == []
    _, rows = _tsv(p)
    assert len(rows) == 2 and "object_area" in rows[0]


def test_check_ecotaxa_command_exit_codes(good, tmp_path):
    from plankline.cli import app
    from typer.testing import CliRunner

    ok = CliRunner().invoke(app, ["check-ecotaxa", str(good)])
    assert ok.exit_code == 0 and "OK" in ok.output
    bad = _rewrite(good, tmp_path / "bad.zip", _set_cell("object_lat", "95"))
    res = CliRunner().invoke(app, ["check-ecotaxa", str(good), str(bad)])
    assert res.exit_code == 1 and "object_lat" in res.output


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


@pytest.mark.parametrize(
    "over",
    [
        {},  # every optional column
        {"lat": None, "lon": None, "datetimes": None, "depth": None},  # measurements next
        {"measurements": {"label": ['say "hi"', "a", "b", "c"]}},  # quoted text: csv.writer
    ],
    ids=["full", "no-position", "quoted-text"],
)
def test_annotating_an_export_written_without_classes_gives_the_export_written_with_them(
    tmp_path, over
):
    """The HPC path (``run --no-classify``, then ``classify``) ends with the bytes of ``run``."""
    with_classes = _write(tmp_path / "a.zip", **over)
    without = _write(tmp_path / "b.zip", predicted=None, **over)
    assert _members(without) != _members(with_classes)
    ids = _objects()[0]
    annotate_ecotaxa_zip(without, ids, ["x", "y", "x", "z"])  # replaced below: idempotent
    annotate_ecotaxa_zip(without, ids, ["copepod", "fish_larva", "copepod", "detritus"])
    assert _members(without) == _members(with_classes)
    assert validate_ecotaxa_zip(without) == []


def test_annotating_an_empty_export_adds_the_header_columns(tmp_path):
    kw = dict(object_ids=[], images=[], measurements={"area": []}, sample_id="s", acq_id="a")
    write_ecotaxa_zip(tmp_path / "a.zip", predicted=[], **kw)
    write_ecotaxa_zip(tmp_path / "b.zip", **kw)
    annotate_ecotaxa_zip(tmp_path / "b.zip", [], [])
    assert _members(tmp_path / "b.zip") == _members(tmp_path / "a.zip")


def test_annotating_with_other_objects_is_refused_and_leaves_the_export(tmp_path):
    path = _write(tmp_path / "b.zip", predicted=None)
    before = _members(path)
    ids = _objects()[0]
    with pytest.raises(ValueError, match="holds 4 objects, the predictions 3"):
        annotate_ecotaxa_zip(path, ids[:3], ["a", "b", "c"])
    with pytest.raises(ValueError, match="other ids or in another order"):
        annotate_ecotaxa_zip(path, ids[::-1], ["a", "b", "c", "d"])
    assert _members(path) == before
