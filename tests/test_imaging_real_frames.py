"""The adaptive default on a video made from the real MBARI ISIIS frame (skipped without
``../shared/data``): faint organisms static misses, the large ones whole, no artefacts,
either polarity."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from plankline.imaging.flatfield import FlatField
from plankline.imaging.segment import Rois, SegmentParams, segment_stream
from plankline.imaging.synth import frames_from_still
from shared_data import REAL_FRAME

N = 4

pytestmark = pytest.mark.skipif(
    not REAL_FRAME.exists(), reason=f"real ISIIS frame not found at {REAL_FRAME}"
)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return frames_from_still(cv2.imread(str(REAL_FRAME), cv2.IMREAD_GRAYSCALE), N)


def _segment(frames: list[np.ndarray], params: SegmentParams | None = None):
    ff = FlatField(mode="both")
    ff.prime(frames)
    rois = Rois.concat(segment_stream(((i, ff.correct(f)) for i, f in enumerate(frames)), params))
    return rois, ff


def _faintest(rois: Rois) -> np.ndarray:
    """Darkest pixel of every ROI (flat-fielded, background 255)."""
    return np.array([c[m].min() for c, m in zip(rois.crops, rois.masks, strict=True)])


def test_real_frames_adaptive_finds_faint_particles_and_jelly_outlines_static_misses(
    frames,
) -> None:
    adaptive, ff = _segment(frames)
    static, _ = _segment(frames, SegmentParams(method="static"))
    assert ff.polarity_found == "bright-field"
    # measured: ~490 ROIs/frame (adaptive) vs ~47 (static 192); faint ones: ~330 vs 0
    assert len(adaptive) >= 5 * len(static)
    assert (_faintest(adaptive) > 200).sum() >= 100 * N
    assert (_faintest(static) > 200).sum() == 0
    # the ctenophore (~8,600 px) comes out whole: one ROI of its size per frame (the rolls
    # of frames_from_still never cut it at a frame's edge), never merged
    ctenophore = adaptive.area_px[adaptive.area_px > 7000]
    assert len(ctenophore) == N and ctenophore.max() < 12000
    # no ROI is a column streak
    assert not np.any((adaptive.width <= 3) & (adaptive.height >= 12))


def test_real_frames_inverted_to_dark_field_give_the_same_rois(frames) -> None:
    bright, _ = _segment(frames)
    dark, ff = _segment([255 - f for f in frames])
    assert ff.polarity_found == "dark-field"
    assert abs(len(dark) - len(bright)) <= 0.02 * len(bright)
    assert np.array_equal(np.sort(dark.area_px)[-N:], np.sort(bright.area_px)[-N:])


def test_real_frame_dark_corner_is_background_not_an_object() -> None:
    """The camera's own vignette with nothing moving (the real frame N times): its darkest
    corner (raw ~45 of 255, flat-field gain ~5.7x) is background. Before the flat-field
    estimated its coarse grid with linearly extrapolated borders, that corner came out
    ~10 % dark and was one ~100 x 110 px "object" (2,500-4,600 px) in every frame."""
    raw = cv2.imread(str(REAL_FRAME), cv2.IMREAD_GRAYSCALE)
    rois, _ = _segment([raw] * N)
    h, w = raw.shape
    cy, cx = rois.row + rois.height / 2, rois.column + rois.width / 2
    corner = (np.minimum(cy, h - cy) < 256) & (np.minimum(cx, w - cx) < 256)
    junk = corner & (rois.area_px >= 300)
    assert not junk.any(), list(
        zip(rois.row[junk], rois.column[junk], rois.area_px[junk], strict=True)
    )


def test_real_video_has_no_noise_patch_at_its_edges_and_no_organism_cut_at_a_frame_top(
    frames,
) -> None:
    """The video the benchmarks use (the still's content rolled and flipped under its own
    fixed vignette). Nothing of 300 px or more in the still touches its left or right
    edge, and the content is only rolled along the lines: a ROI there was the still's
    dark edge carried along by the roll (a ~100 x 100 px noise patch, before
    ``frames_from_still`` extrapolated its vignette's borders). A dark organism starting
    at a frame's first line was cut by the roll (the radiolarian's last 47 lines, a
    175 px wide band along the frame's top edge, before the rolls avoided organisms)."""
    rois, _ = _segment(frames)
    w = frames[0].shape[1]
    side = ((rois.column == 0) | (rois.column + rois.width == w)) & (rois.area_px >= 300)
    assert not side.any(), list(
        zip(rois.frame[side], rois.row[side], rois.area_px[side], strict=True)
    )
    cut = (rois.row == 0) & (_faintest(rois) < 128)
    assert not cut.any(), list(
        zip(rois.frame[cut], rois.width[cut], rois.area_px[cut], strict=True)
    )
