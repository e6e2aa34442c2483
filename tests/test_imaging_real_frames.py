"""The adaptive default on a video made from the real MBARI ISIIS frame (skipped without
``../shared/data``): faint organisms static misses, the large ones whole, no artefacts,
either polarity."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from plankline.imaging.flatfield import FlatField
from plankline.imaging.segment import Rois, SegmentParams, segment_stream
from plankline.imaging.synth import frames_from_still

REAL_FRAME = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "isiis-frames"
    / "mbari-isiis-raw-2048.jpg"
)
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
    # the ctenophore (~8,600 px) comes out whole: one ROI of its size per frame (but one
    # frame, where rolling the content wraps it across the frame's edge), never merged
    ctenophore = adaptive.area_px[adaptive.area_px > 7000]
    assert len(ctenophore) >= N - 1 and ctenophore.max() < 12000
    # no ROI is a column streak
    assert not np.any((adaptive.width <= 3) & (adaptive.height >= 12))


def test_real_frames_inverted_to_dark_field_give_the_same_rois(frames) -> None:
    bright, _ = _segment(frames)
    dark, ff = _segment([255 - f for f in frames])
    assert ff.polarity_found == "dark-field"
    assert abs(len(dark) - len(bright)) <= 0.02 * len(bright)
    assert np.array_equal(np.sort(dark.area_px)[-N:], np.sort(bright.area_px)[-N:])
