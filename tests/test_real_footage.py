"""The whole CLI on real footage: ``plankline run`` with its defaults, classification on,
on a video made from the real ISIIS frame in ``../shared/data`` with the column defects
of a line-scan sensor drawn in.

A real video of issue 11 lost every chunk to one such defect (a 1-px streak whose
minor axis is 0 gave an infinite elongation, and the EcoTaxa writer refused the chunk):
this test runs what a user runs and checks what an ecologist gets.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from plankline.batch.project import Project
from plankline.cli import app
from plankline.imaging.flatfield import FlatField
from plankline.imaging.video import write_video
from plankline.model.card import read_model_card
from plankline.model.infer import BELOW_MODEL_SIZE, DEFAULT_MODEL_DIR, read_classification_csv
from plankline.outputs.ecotaxa import validate_ecotaxa_zip
from plankline.outputs.tables import read_csv
from shared_data import REAL_FRAME
from typer.testing import CliRunner

VIDEO = "20180706170805.476.avi"  # ISIIS name: start time to the millisecond
N_FRAMES = 4
# The radiolarian right of centre in the real frame (read off the image: the only organism
# over 150 px there): bounding box top, left, height, width in px, to +-15 px.
RADIOLARIAN = (955, 1332, 211, 220)

pytestmark = pytest.mark.skipif(
    not REAL_FRAME.exists(), reason=f"real ISIIS frame not found at {REAL_FRAME}"
)


def _frames_with_streaks(
    frame: np.ndarray, n: int, per_frame: int, seed: int = 0
) -> tuple[list[np.ndarray], list[tuple[int, int, int, int]]]:
    """The real frame's scene, upside down every other frame, under the camera's own fixed
    vignetting (divided out, flipped, multiplied back: a camera's vignetting does not
    flip), with ``per_frame`` column defects each: a 1-px wide run, 40-60 px tall (over
    the size filter, so the artefact rule, not the filter, must drop them),
    30-55 % darker than the background, on clear background. Returns the frames and
    (frame, top, column, length) of every defect."""
    flat = FlatField(mode="both")
    flat.prime([frame, frame])
    flat.correct(frame)
    background = flat.background()
    scene = frame.astype(np.float32) / background
    rng = np.random.default_rng(seed)
    frames, streaks = [], []
    for i in range(n):
        s = scene[:: _flip(i)[0], :: _flip(i)[1]]
        f = np.clip(s * background + 0.5, 0, 255).astype(np.uint8)
        placed = 0
        while placed < per_frame:
            x, y = int(rng.integers(64, 1984)), int(rng.integers(64, 1940))
            h = int(rng.integers(40, 61))
            around = f[y - 12 : y + h + 12, x - 12 : x + 13]
            if around.min() < 0.85 * np.median(around):  # an object nearby: look elsewhere
                continue
            f[y : y + h, x] = (f[y : y + h, x] * rng.uniform(0.45, 0.7)).astype(np.uint8)
            streaks.append((i, y, x, h))
            placed += 1
        frames.append(f)
    return frames, streaks


def _flip(i: int) -> tuple[int, int]:
    """Row and column steps of frame ``i``: as is, then upside down, in turn. Only the
    lines are mirrored: a mirror across the columns would carry the dark edge's noise
    (amplified by the division) to the bright edge, which no camera does."""
    return (1 if i % 2 == 0 else -1), 1


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, object]:
    """``plankline run PROJECT --chunk-frames 2``: every other setting at its default
    (all cores, classification with the shipped model, adaptive segmentation)."""
    root = tmp_path_factory.mktemp("real_footage")
    (root / "raw").mkdir()
    frame = cv2.imread(str(REAL_FRAME), cv2.IMREAD_GRAYSCALE)
    frames, streaks = _frames_with_streaks(frame, N_FRAMES, per_frame=3)
    write_video(root / "raw" / VIDEO, frames, fps=13.7)
    result = CliRunner().invoke(app, ["run", str(root), "--chunk-frames", "2"])
    return root, streaks, result


def _table(root: Path) -> dict[str, np.ndarray]:
    parts = [read_csv(p, dtypes={"image": str}) for p in sorted(root.glob("measurements/*.csv"))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_cli_exits_0_and_loses_no_chunk(run) -> None:
    root, _, result = run
    assert result.exit_code == 0, result.output
    assert not list((root / ".plankline" / "failed").iterdir())
    chunks = read_csv(root / "summary" / "chunks.csv", dtypes={"chunk": str})
    assert len(chunks["chunk"]) == N_FRAMES // 2
    assert int(chunks["rois"].sum()) == len(_table(root)["image"])


def test_every_chunk_has_a_valid_ecotaxa_zip_and_a_class_for_every_roi(run) -> None:
    root, _, _ = run
    zips = sorted(root.glob("ecotaxa/*.zip"))
    assert len(zips) == N_FRAMES // 2
    for z in zips:
        assert validate_ecotaxa_zip(z) == [], z
    for csv in sorted(root.glob("measurements/*.csv")):
        ids = read_csv(csv, dtypes={"image": str})["image"]
        got, probs, _ = read_classification_csv(root / "classification" / csv.name)
        assert list(got) == list(ids)
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-3)


def test_rois_are_found_in_every_frame_and_every_column_is_finite_or_empty(run) -> None:
    root, _, _ = run
    t = _table(root)
    per_frame = np.bincount(t["frame"].astype(int), minlength=N_FRAMES)
    assert per_frame.min() >= 150, per_frame  # the frame shows a few hundred particles
    for name, values in t.items():
        if values.dtype.kind == "f":
            assert not np.isinf(values).any(), name


def test_no_roi_is_a_patch_of_background(run) -> None:
    root, _, _ = run
    t = _table(root)
    # The largest organism in the frame is the radiolarian (~220 px): a ROI far larger
    # is uneven illumination read as an object.
    big = (t["bbox_height"] > 400) | (t["bbox_width"] > 400)
    assert big.sum() == 0, list(zip(t["bbox_height"][big], t["bbox_width"][big], strict=True))


def _radiolarian_box(frame: int) -> tuple[int, int, int, int]:
    top, left, h, w = RADIOLARIAN
    rows, cols = _flip(frame)
    return (top if rows > 0 else 2048 - top - h), (left if cols > 0 else 2048 - left - w), h, w


def test_the_radiolarian_comes_out_whole_once_in_every_frame(run) -> None:
    root, _, _ = run
    t = _table(root)
    for i in range(N_FRAMES):
        row, left, h, w = _radiolarian_box(i)
        hit = (
            (t["frame"] == i)
            & (np.abs(t["row"] - row) <= 15)
            & (np.abs(t["column"] - left) <= 15)
            & (np.abs(t["bbox_height"] - h) <= 15)
            & (np.abs(t["bbox_width"] - w) <= 15)
        )
        assert hit.sum() == 1, f"frame {i}: {hit.sum()} ROIs match the radiolarian"


def test_no_piece_of_the_radiolarian_is_a_roi_of_its_own(run) -> None:
    root, _, _ = run
    t = _table(root)
    for i in range(N_FRAMES):
        row, left, h, w = _radiolarian_box(i)
        inside = (
            (t["frame"] == i)
            & (t["row"] >= row)
            & (t["row"] + t["bbox_height"] <= row + h)
            & (t["column"] >= left)
            & (t["column"] + t["bbox_width"] <= left + w)
            & (t["bbox_height"] * t["bbox_width"] < h * w / 4)
        )
        assert inside.sum() == 0, f"frame {i}: {inside.sum()} pieces of the radiolarian"


def test_no_roi_is_a_one_or_two_pixel_wide_vertical_streak(run) -> None:
    root, _, _ = run
    t = _table(root)
    thin = (t["bbox_width"] <= 2) & (t["bbox_height"] >= 12)
    assert thin.sum() == 0, "1-2 px wide vertical ROIs are sensor streaks, not organisms"


def test_no_injected_column_defect_becomes_a_roi(run) -> None:
    root, streaks, _ = run
    t = _table(root)
    for i, y, x, h in streaks:
        on_it = (
            (t["frame"] == i)
            & (t["column"] <= x)
            & (t["column"] + t["bbox_width"] > x)
            & (t["row"] <= y + h)
            & (t["row"] + t["bbox_height"] >= y)
        )
        assert on_it.sum() == 0, f"frame {i}: streak at x={x}, y={y}..{y + h} became a ROI"


def test_dropped_streaks_are_counted_in_the_log_and_done_markers(run) -> None:
    root, streaks, _ = run
    records = [r for r in Project(root).done_records()]
    counted = sum(r["artefacts"].get("streaks", 0) for r in records)
    # A chunk also counts the streaks of the frames it reads around its own (context, tails).
    assert counted >= len(streaks) * 3 // 4
    log = (root / "plankline.log").read_text()
    assert log.count("sensor artefacts left out: ") == len(records)


def test_specks_under_the_models_size_are_below_model_size_and_the_rest_get_a_taxon(
    run,
) -> None:
    # The default size gate (the shipped model's own, 8 px: 98 % of its training objects
    # are at least that): the real frame's specks are never shown to the network, counted
    # apart instead, and every larger ROI gets one of the model's classes, in CSV, counts
    # and EcoTaxa.
    root, _, _ = run
    t = _table(root)
    ids, probs, names = [], [], None
    for csv in sorted(root.glob("classification/*.csv")):
        got, p, names = read_classification_csv(csv)
        ids += got
        probs.append(p)
    assert names is not None and names[-1] == BELOW_MODEL_SIZE
    assert ids == list(t["image"])
    top = np.array(names)[np.concatenate(probs).argmax(axis=1)]
    gate = read_model_card(DEFAULT_MODEL_DIR).min_object_px
    assert gate == 8
    log = (root / "plankline.log").read_text()  # the log says which gate was in force
    assert f"classifier {DEFAULT_MODEL_DIR}: size gate 8 px (the model's own)" in log
    small = np.maximum(t["bbox_height"], t["bbox_width"]) < gate
    assert 0 < small.sum() < len(small)
    assert np.array_equal(top == BELOW_MODEL_SIZE, small)
    per_second = read_csv(root / "summary" / "counts_per_second.csv", dtypes={"class": str})
    gated = per_second["count"][per_second["class"] == BELOW_MODEL_SIZE].sum()
    assert gated == small.sum()
