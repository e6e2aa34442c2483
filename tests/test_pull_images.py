"""pull-images end to end on generated chunk tars and classification CSVs (seed 000 semantics)."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from plankline.cli import app
from plankline.outputs.naming import chunk_name, roi_id
from plankline.outputs.pull import (
    PullError,
    chunk_key,
    find_class_columns,
    match_taxa,
    pull_images,
    select_images,
)
from plankline.outputs.rois import write_roi_tar
from plankline.outputs.tables import write_csv
from typer.testing import CliRunner

CLASSES = ["protist_a", "protist_b", "fish", "fish_larva", "copepod"]
A, B = "20180706170805.476", "20180706170835.476"
# Hand-made probabilities with known answers (columns in CLASSES order).
PROBS = {
    A: np.array(
        [
            [0.50, 0.10, 0.25, 0.10, 0.05],  # top protist_a; fish > .2
            [0.19, 0.19, 0.22, 0.21, 0.19],  # the seed's example: fish .22 and fish_larva .21
            [0.025, 0.025, 0.025, 0.025, 0.90],  # copepod
            [0.30, 0.1 / 3, 0.1 / 3, 0.60, 0.1 / 3],  # top fish_larva; protist_a > .2
        ]
    ),
    B: np.array(
        [
            [0.0, 0.85, 0.15, 0.0, 0.0],  # top protist_b
            [0.0, 0.0, 0.45, 0.55, 0.0],  # top fish_larva; fish > .2
        ]
    ),
}


def _crop(chunk: str, i: int) -> np.ndarray:
    rng = np.random.default_rng(int(chunk[-3:]) * 10 + i)
    return rng.integers(0, 256, (10 + i, 7 + i), dtype=np.uint8)


def _ids(chunk: str) -> list[str]:
    return [roi_id(chunk, i, i * 2048, 5 * i, i) for i in range(len(PROBS[chunk]))]


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    """csvs/ (one seed-style, one ours with extra columns) and tars/ (.tar.gz and .tar)."""
    csvs, tars = tmp_path / "csvs", tmp_path / "tars"
    csvs.mkdir()
    tars.mkdir()
    for chunk in (A, B):
        ids = _ids(chunk)
        crops = [_crop(chunk, i) for i in range(len(ids))]
        plain = tars / f"{chunk}.tar"
        # a decoy ROI not in any CSV: must never be extracted
        write_roi_tar(plain, [*ids, chunk + "_decoy"], [*crops, crops[0]])
        cols: dict = {"image": [f"{r}.png" for r in ids]}
        cols.update({c: PROBS[chunk][:, j] for j, c in enumerate(CLASSES)})
        if chunk == A:  # seed layout: <stamp>-library_<name>.csv, tar.gz
            write_csv(csvs / f"{chunk}-library_bigcam.csv", cols)
            with tarfile.open(tars / f"{chunk}.tar.gz", "w:gz") as gz, tarfile.open(plain) as src:
                for m in src:
                    gz.addfile(m, src.extractfile(m))
            plain.unlink()
        else:  # ours: classification/<chunk>.csv with extra non-class columns
            top = PROBS[chunk].argmax(1)
            cols["top_class"] = [CLASSES[k] for k in top]
            cols["top_probability"] = PROBS[chunk].max(1)
            cols["thresholded_class"] = ["unknown"] * len(ids)
            write_csv(csvs / f"{chunk}.csv", cols)
    return tmp_path


def _tree(out: Path) -> dict[str, list[str]]:
    return {d.name: sorted(f.name for f in d.iterdir()) for d in sorted(out.iterdir())}


def _names(chunk: str, rows: list[int]) -> list[str]:
    ids = _ids(chunk)
    return [f"{ids[r]}.png" for r in rows]


def _pull(drive: Path, out: str = "out", **kw):
    kw.setdefault("input_drive", drive / "csvs")
    return pull_images(output=drive / out, raw_tars=drive / "tars", **kw)


def test_probability_mode_extracts_every_class_above_threshold(drive):
    report = _pull(drive, taxa=["fish"], threshold=0.2)
    assert report.sub_taxa == ["fish", "fish_larva"]
    assert _tree(drive / "out") == {
        "fish": sorted(_names(A, [0, 1]) + _names(B, [1])),
        "fish_larva": sorted(_names(A, [1, 3]) + _names(B, [1])),
    }
    # copied bytes are the original crops
    img = cv2.imread(str(drive / "out" / "fish" / _names(A, [1])[0]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(img, _crop(A, 1))


def test_best_mode_extracts_each_image_once_for_its_top_class(drive):
    report = _pull(drive, taxa=["fish", "protist"], best=True)
    assert report.sub_taxa == ["fish", "fish_larva", "protist_a", "protist_b"]
    assert _tree(drive / "out") == {
        "fish": _names(A, [1]),
        "fish_larva": sorted(_names(A, [3]) + _names(B, [1])),
        "protist_a": _names(A, [0]),
        "protist_b": _names(B, [0]),
    }
    assert report.n_written == 5


def test_strict_subclasses_match_whole_names_only(drive):
    _pull(drive, taxa=["fish"], threshold=0.2, strict=True)
    assert list(_tree(drive / "out")) == ["fish"]


def test_no_matching_class_is_a_clear_error(drive):
    with pytest.raises(PullError, match="matches"):
        _pull(drive, taxa=["fis"], threshold=0.2, strict=True)


def test_min_images_skips_tars_with_fewer_wanted_images(drive):
    report = _pull(drive, taxa=["fish"], best=True, min_images=2)
    # chunk A has 2 wanted images, chunk B only 1: B's tar is not opened.
    assert _tree(drive / "out") == {"fish": _names(A, [1]), "fish_larva": _names(A, [3])}
    assert report.skipped_min_images == [str(drive / "csvs" / f"{B}.csv")]


def test_single_csv_input(drive):
    _pull(
        drive,
        taxa=["protist_b"],
        threshold=0.5,
        input_drive=None,
        input_csv=drive / "csvs" / f"{B}.csv",
    )
    assert _tree(drive / "out") == {"protist_b": _names(B, [0])}


def test_differing_class_columns_stop_unless_allowed(drive):
    cols = {"image": [f"{_ids(B)[0]}.png"], "fish": [0.9], "fish_eggs": [0.1]}
    odd = drive / "csvs" / "20180706170905.476-library_bigcam.csv"
    write_csv(odd, cols)
    with pytest.raises(PullError, match=re.escape(str(odd))):
        _pull(drive, taxa=["fish"], threshold=0.2)
    with pytest.warns(UserWarning, match="no tar"):
        report = _pull(drive, "out2", taxa=["fish"], threshold=0.2, different_columns=True)
    assert report.missing_tars == [str(odd)]
    assert "fish_eggs" not in report.written and report.written["fish"] == 3


def test_non_empty_output_is_refused(drive):
    (drive / "out").mkdir()
    (drive / "out" / "keep.txt").write_text("mine")
    with pytest.raises(PullError, match="must be empty"):
        _pull(drive, taxa=["fish"], threshold=0.2)
    assert [p.name for p in (drive / "out").iterdir()] == ["keep.txt"]


def test_missing_tar_warns_and_other_chunks_are_still_pulled(drive):
    (drive / "tars" / f"{A}.tar.gz").unlink()
    with pytest.warns(UserWarning, match=f"no tar for .*{re.escape(A)}"):
        report = _pull(drive, taxa=["fish"], best=True)
    assert _tree(drive / "out") == {"fish_larva": _names(B, [1])}
    assert len(report.missing_tars) == 1


def test_images_missing_from_tar_are_counted_and_warned(drive):
    write_roi_tar(drive / "tars" / f"{B}.tar", [_ids(B)[0]], [_crop(B, 0)])
    with pytest.warns(UserWarning, match="1 of 2 selected images"):
        report = _pull(drive, taxa=["protist_b", "fish_larva"], best=True)
    assert report.missing_images == 1


def test_option_conflicts_are_errors(drive):
    with pytest.raises(PullError, match="exactly one of -p"):
        _pull(drive, taxa=["fish"], threshold=0.2, best=True)
    with pytest.raises(PullError, match="exactly one of -d"):
        _pull(drive, taxa=["fish"], best=True, input_csv=drive / "csvs" / f"{B}.csv")


def test_cli_accepts_the_seed_syntax_and_prints_the_seed_log(drive):
    args = [
        "pull-images",
        "-p",
        ".2",
        "-d",
        str(drive / "csvs"),
        "-o",
        str(drive / "out"),
        "-r",
        str(drive / "tars"),
        "-t",
        "protist",
        "fish",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Number of Input CSVs: 2" in out
    assert "----- Finding chosen taxon with probabilities above 0.2 -----" in out
    assert "0. protist_a\n1. protist_b\n2. fish\n3. fish_larva\n" in out
    # protist_a > .2: A0, A1? no (.19), A3 -> with fish: A0, A1, A3 = 3 images
    assert f"Found 3 images in {drive / 'csvs' / (A + '-library_bigcam.csv')}" in out
    assert f"Found 2 images in {drive / 'csvs' / (B + '.csv')}" in out
    assert "----- Done -----" in out
    assert _tree(drive / "out")["protist_a"] == _names(A, [0, 3])


def test_cli_two_letter_dc_and_exit_code_on_error(drive):
    write_csv(drive / "csvs" / "x-library_a.csv", {"image": ["q.png"], "fish": [1.0]})
    base = ["pull-images", "-b", "-d", str(drive / "csvs"), "-r", str(drive / "tars"), "-t", "fish"]
    bad = CliRunner().invoke(app, [*base, "-o", str(drive / "o1")])
    assert bad.exit_code == 2
    odd = drive / "csvs" / "x-library_a.csv"  # whole on one line, however long the path
    assert f"error: {odd}: class columns differ from " in bad.output.splitlines()[-1], bad.output
    ok = CliRunner().invoke(app, [*base, "-o", str(drive / "o2"), "-dc"])
    assert ok.exit_code == 0, ok.output


def test_select_images_on_a_table():
    probs = PROBS[A]
    got = select_images(probs, CLASSES, ["fish", "copepod"], threshold=0.2)
    assert got["fish"].tolist() == [0, 1] and got["copepod"].tolist() == [2]
    got = select_images(probs, CLASSES, ["fish_larva", "protist_a"], best=True)
    assert got["fish_larva"].tolist() == [3] and got["protist_a"].tolist() == [0]


def test_helpers_keys_and_columns():
    assert chunk_key("a/20180706170805.476-library_bigcam.csv") == A
    assert chunk_key(f"{A}.tar.gz") == A
    assert chunk_key("classification/dive3-c0002.csv") == chunk_key("dive3-c0002.tar")
    header = ["image", "a", "b", "top_class", "top_probability", "thresholded_class"]
    assert find_class_columns(header) == ["a", "b"]
    assert find_class_columns(["image", "a"]) == ["a"]
    with pytest.raises(PullError, match="first column"):
        find_class_columns(["name", "a"])
    assert match_taxa(CLASSES, ["fish", "protist"]) == [
        "fish",
        "fish_larva",
        "protist_a",
        "protist_b",
    ]


def test_non_numeric_class_column_is_a_clear_error(drive):
    (drive / "csvs" / f"{B}.csv").write_text(f"image,fish,fish_larva\n{_ids(B)[0]}.png,high,0.1\n")
    with pytest.raises(PullError, match="non-numeric"):
        _pull(
            drive, taxa=["fish"], best=True, input_drive=None, input_csv=drive / "csvs" / f"{B}.csv"
        )


def test_pull_reads_the_classifier_csv_and_batch_layout(tmp_path):
    """Contract with model.infer.write_classification_csv and the project layout."""
    infer = pytest.importorskip("plankline.model.infer")
    rng = np.random.default_rng(3)
    classes = ["copepod", "fish_larva", "fish_egg", "detritus"]
    expected: dict[str, list[str]] = {"fish_larva": [], "fish_egg": []}
    for k in range(2):
        chunk = chunk_name("20180706170805.476", k, k * 411, 13.7)
        ids = [roi_id(chunk, i, i * 2048, i, i) for i in range(30)]
        crops = [rng.integers(0, 256, (9, 9), dtype=np.uint8) for _ in ids]
        write_roi_tar(tmp_path / "segmentation" / f"{chunk}.tar", ids, crops)
        probs = rng.dirichlet(np.ones(len(classes)), len(ids))
        infer.write_classification_csv(
            tmp_path / "classification" / f"{chunk}.csv", ids, probs, classes
        )
        for i, top in enumerate(probs.argmax(1)):
            if classes[top] in expected:
                expected[classes[top]].append(f"{ids[i]}.png")
    report = pull_images(
        taxa=["fish"], best=True, input_drive=tmp_path / "classification",
        raw_tars=tmp_path / "segmentation", output=tmp_path / "out",
    )  # fmt: skip
    assert report.sub_taxa == ["fish_larva", "fish_egg"]
    assert _tree(tmp_path / "out") == {c: sorted(v) for c, v in sorted(expected.items())}
