"""Sensor artefacts are not organisms: the documented rules, one artefact at a time."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from plankline.imaging.flatfield import FlatField
from plankline.imaging.segment import Rois, SegmentParams, segment_frame, segment_stream


def _background(h: int = 512, w: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(250 + rng.normal(0, 3, (h, w))), 0, 255).astype(np.uint8)


def _organism(frame: np.ndarray, y: int, x: int, r: int = 9, depth: int = 60) -> None:
    blob = np.zeros(frame.shape, np.uint8)
    cv2.circle(blob, (x, y), r, depth, -1)
    frame -= np.minimum(frame, cv2.GaussianBlur(blob, (0, 0), 1.0))


def test_a_column_streak_is_dropped_and_counted_not_reported() -> None:
    frame = _background()
    _organism(frame, 300, 300)
    frame[100:160, 80] -= 60  # dust on the sensor line for 60 lines: 1 px wide
    frame[200:260, 400:402] -= 40  # and a 2 px one
    rois = segment_frame(frame)
    assert len(rois) == 1 and abs(int(rois.row[0]) + int(rois.height[0]) // 2 - 300) <= 2
    assert rois.artefacts["streaks"] == 2


def test_a_flicker_band_across_the_frame_is_dropped_and_counted() -> None:
    frame = _background()
    _organism(frame, 300, 300)
    frame[120:126] -= 25  # six lines the lamp dimmed and the flat-field did not follow
    # (segment_stream: segment_frame drops whatever touches the frame's sides anyway)
    rois = Rois.concat(segment_stream([(0, frame)]))
    assert len(rois) == 1
    assert rois.artefacts["flicker_bands"] == 1


def test_artefact_counts_add_up_over_batches() -> None:
    a = Rois(artefacts={"streaks": 2, "flicker_bands": 0})
    b = Rois(artefacts={"streaks": 1, "flicker_bands": 3})
    assert Rois.concat([a, b]).artefacts == {"streaks": 3, "flicker_bands": 3}


def test_a_dead_column_is_repaired_by_the_flat_field_and_splits_no_organism() -> None:
    frames = []
    for i in range(6):
        f = np.clip(_background(seed=i).astype(np.int16) - 60, 0, 255).astype(np.uint8)
        _organism(f, 100 + 60 * i, 256, r=14, depth=80)  # crossing column 256
        f[:, 256] = 4  # dead column
        frames.append(f)
    ff = FlatField(mode="column")
    ff.prime(frames[:3])
    assert 256 in ff.stuck_columns.tolist() and ff.artefacts()["stuck_columns"] >= 1
    flat = [ff.correct(f) for f in frames]
    assert np.median(flat[4][:, 256]) > 240  # no dark line left
    rois = Rois.concat(segment_stream(((i, f) for i, f in enumerate(flat)), SegmentParams()))
    crossing = (rois.column < 256) & (rois.column + rois.width > 256)
    assert crossing.sum() == len(frames)  # each organism one ROI, across the column
    assert not np.any(rois.height > 200)  # the column itself is no object


def test_lamp_flicker_lines_are_counted_by_the_flat_field() -> None:
    frames = [_background(seed=i) for i in range(4)]
    dim = frames[3].astype(np.float32)
    dim[200:260] *= 0.9  # 60 lines 10% darker
    frames[3] = dim.astype(np.uint8)
    ff = FlatField(mode="column")
    ff.prime(frames[:2])
    for f in frames[2:]:
        ff.correct(f)
    assert 55 <= ff.last_flicker_lines <= 70
    assert ff.flicker_lines >= ff.last_flicker_lines


def test_a_steady_line_band_of_a_fixed_camera_is_no_flicker_but_a_new_one_is() -> None:
    # 30 lines 6% darker in every frame (a 2-D vignette's residual the flat-field's smooth
    # grid does not follow): the same lines every frame, so no lamp flicker.
    frames = []
    for i in range(7):
        f = _background(seed=i).astype(np.float32)
        f[100:130] *= 0.94
        frames.append(f.astype(np.uint8))
    dim = frames[6].astype(np.float32)
    dim[300:330] *= 0.9  # and, in the last frame only, 30 lines of a lamp dip
    frames[6] = dim.astype(np.uint8)
    ff = FlatField(mode="both")
    ff.prime(frames[:3])
    assert ff.flicker_lines == 0  # primed frames are counted by the chunk owning them
    for f in frames[3:6]:
        ff.correct(f)
    assert ff.flicker_lines == 0
    ff.correct(frames[6])
    assert 25 <= ff.last_flicker_lines <= 40


@pytest.mark.parametrize("factor", [0.1, 0.3, 0.4, 3.0])
def test_a_deep_lamp_dip_or_flash_along_the_tape_is_corrected_to_its_edges(factor: float) -> None:
    """A band of lines at a tenth of the light, or clipped white by a flash: smoothed
    with the lines around it, each side of a dip was half corrected (the real ISIIS frame's
    video gave a 2048-px-wide "organism" there), and a clipped band under a vignette kept
    its unclipped ends dark. Each lamp line now takes its own gain; clipped lines, with no
    image left, come out blank; neither enters the background estimate."""
    frames = [_background(seed=i) for i in range(4)]
    for frame in frames:  # a vignetted edge: a flash clips the middle of a line, not its end
        frame[:, :224] = (frame[:, :224] * 0.3).astype(np.uint8)
    band = frames[3].astype(np.float32)
    band[100:250] = np.minimum(band[100:250] * factor, 255)  # 150 of 512 lines
    band[100:250:3, 400:416:8] *= 1.4  # noise pixels: at 0.4x, over half the level
    frames[3] = band.astype(np.uint8)
    ff, steady = FlatField(mode="both"), FlatField(mode="both")
    ff.prime(frames[:3])
    steady.prime(frames[:3])
    out = ff.correct(frames[3])
    dark = np.flatnonzero(np.percentile(out, 5, axis=1) < 0.85 * ff.level)
    assert len(dark) == 0, dark
    np.testing.assert_allclose(ff.background(), steady.background(), rtol=0.02)
