"""Synthetic ground truth: reproducible, realistic enough, and consistent with its masks."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from plankline.imaging.segment import object_mask
from plankline.imaging.synth import (
    MASK_LEVEL,
    SHAPE_CLASSES,
    frames_from_still,
    make_roi_library,
    render_organism,
    synth_frames,
)
from shared_data import REAL_FRAME


@pytest.mark.parametrize("kind", SHAPE_CLASSES)
def test_render_organism_gives_one_connected_object_matching_quarter_contrast(kind: str) -> None:
    for size in (6, 40, 300):
        img, mask = render_organism(kind, np.random.default_rng(3), size)
        assert img.dtype == np.uint8 and mask.shape == img.shape
        n, _ = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
        assert n == 2, f"{kind} at {size}px has {n - 1} components"
        # mask == pixels at or beyond quarter contrast (up to rounding of the uint8 image)
        visible = img <= round(255 * (1 - MASK_LEVEL))
        assert (mask & ~visible).sum() <= 2
        assert (visible & ~mask).sum() <= 0.05 * mask.sum() + 2


def test_render_organism_size_spans_two_orders_of_magnitude() -> None:
    small = render_organism("copepod", np.random.default_rng(0), 6)[1]
    large = render_organism("copepod", np.random.default_rng(0), 600)[1]
    assert max(small.shape) < 20 and max(large.shape) > 400


def test_make_roi_library_writes_counted_reproducible_gray_pngs(tmp_path) -> None:
    counts = make_roi_library(tmp_path / "a", 6, seed=7)
    assert counts == dict.fromkeys(SHAPE_CLASSES, 6)
    make_roi_library(tmp_path / "b", 6, seed=7)
    for kind in SHAPE_CLASSES:
        files = sorted((tmp_path / "a" / kind).glob("*.png"))
        assert len(files) == 6
        for f in files:
            a = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            b = cv2.imread(str(tmp_path / "b" / kind / f.name), cv2.IMREAD_UNCHANGED)
            assert a.ndim == 2 and a.dtype == np.uint8
            assert np.array_equal(a, b)
            # padded: the border is background, the object is dark
            assert np.median(np.concatenate([a[0], a[-1]])) > 200 and a.min() < 190


def test_make_roi_library_sizes_overlap_between_classes(tmp_path) -> None:
    make_roi_library(tmp_path, 30, seed=1)
    areas = {
        k: [object_mask(cv2.imread(str(f), 0)).sum() for f in (tmp_path / k).glob("*.png")]
        for k in SHAPE_CLASSES
    }
    ranges = {k: (np.percentile(v, 25), np.percentile(v, 75)) for k, v in areas.items()}
    # every class's inter-quartile size range overlaps at least one other class's
    for k, (lo, hi) in ranges.items():
        assert any(lo2 <= hi and lo <= hi2 for k2, (lo2, hi2) in ranges.items() if k2 != k)


@pytest.mark.parametrize("kind", SHAPE_CLASSES)
def test_object_mask_recovers_synthetic_organism_on_noisy_background(kind: str) -> None:
    rng = np.random.default_rng(11)
    img, mask = render_organism(kind, rng, 80)
    img, mask = np.pad(img, 6, constant_values=255), np.pad(mask, 6)
    noisy = np.clip(img * 0.93 + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    got = object_mask(noisy)
    iou = (got & mask).sum() / (got | mask).sum()
    assert iou > 0.6, f"{kind}: IoU {iou:.2f}"
    # bright-on-dark and colour inputs give the same object
    inverted = object_mask(cv2.cvtColor(255 - noisy, cv2.COLOR_GRAY2BGR))
    assert (inverted == got).mean() > 0.98


def test_object_mask_of_uniform_image_is_empty() -> None:
    assert not object_mask(np.full((20, 30), 200, np.uint8)).any()


def _vignette_with_ruler(grey: int) -> tuple[np.ndarray, np.ndarray]:
    """A ZooProcess-style vignette: an organism of ``grey`` on white, under it a 96 x 2 px
    black bar with its "1 mm" legend 4 px above; and the organism's own mask."""
    img = np.full((110, 114), 245, np.uint8)
    organism = np.zeros_like(img, np.uint8)
    cv2.ellipse(organism, (57, 40), (10, 5), 30, 0, 360, 1, -1)  # smaller than the bar
    img[organism == 1] = grey
    cv2.putText(img, "1 mm", (9, 95), cv2.FONT_HERSHEY_PLAIN, 0.7, 0, 1)
    img[99:101, 9:105] = 0
    return img, organism.astype(bool)


@pytest.mark.parametrize("grey", [60, 200])
def test_object_mask_passes_over_an_ecotaxa_ruler_under_a_dark_or_faint_organism(
    grey: int,
) -> None:
    """Dark organism: the ruler's bar was the largest component; faint one: Otsu's level
    fell between the black ruler and the background, leaving only the ruler and legend."""
    from plankline.model.data import object_masks

    img, organism = _vignette_with_ruler(grey)
    got = object_mask(img)
    assert (got & organism).sum() / (got | organism).sum() > 0.85
    assert not got[85:].any()  # nothing of the legend or the bar
    assert np.array_equal(object_masks([img])[0], got)


def test_a_thin_organism_low_in_its_crop_without_a_legend_is_the_object() -> None:
    img = np.full((40, 80), 240, np.uint8)
    img[30:34, 5:75] = 40  # a filled horizontal rod, the shape of a ruler's bar
    img[5:8, 10:13] = 200  # a faint speck above it
    assert object_mask(img)[30:34, 5:75].all()


def test_synth_frames_truth_is_reproducible_and_straddles_frame_boundaries() -> None:
    frames1, truth1 = synth_frames(3, height=512, width=512, seed=5, density=25)
    frames2, truth2 = synth_frames(3, height=512, width=512, seed=5, density=25)
    assert np.array_equal(truth1.line, truth2.line) and np.array_equal(
        truth1.area_px, truth2.area_px
    )
    f1, f2 = list(frames1), list(frames2)
    assert all(np.array_equal(a, b) for a, b in zip(f1, f2, strict=True))
    assert len(f1) == 3 and f1[0].shape == (512, 512) and f1[0].dtype == np.uint8
    crossing = (truth1.row + truth1.height > 512) & (truth1.frame < 2)
    assert crossing.any()
    assert np.allclose(truth1.esd_px, 2 * np.sqrt(truth1.area_px / math.pi))
    assert np.array_equal(truth1.line, truth1.frame * 512 + truth1.row)


@pytest.mark.skipif(not REAL_FRAME.exists(), reason=f"real ISIIS frame not found at {REAL_FRAME}")
def test_frames_from_still_keep_the_background_of_the_edges_where_the_content_moves() -> None:
    """The vignette is the camera's and stays; only the content moves. So the background
    of the frame's edge squares (64 px, median) is the same in every frame, within 4 %.
    Before the vignette's closing and blur extrapolated the grid's borders, the still's
    content kept its darkest corner 18 % too dark, and the rolls carried that patch
    along the left edge."""
    raw = cv2.imread(str(REAL_FRAME), cv2.IMREAD_GRAYSCALE)
    frames = frames_from_still(raw, 6)
    s = 64

    def edge_squares(f: np.ndarray) -> np.ndarray:
        cols = [f[:, :s], f[:, -s:]]
        return np.array([[np.median(c[y : y + s]) for y in range(0, f.shape[0], s)] for c in cols])

    ref = edge_squares(frames[0])
    for i, f in enumerate(frames[1:], 1):
        ratio = edge_squares(f) / ref
        assert np.abs(ratio - 1).max() < 0.04, (i, np.round(ratio.min(), 3))
