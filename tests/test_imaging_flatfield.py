"""Flat-field: even background on the real ISIIS frame and on synthetic line-scan artefacts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from plankline.imaging.flatfield import FlatField
from plankline.imaging.synth import synth_frames
from shared_data import REAL_FRAME


def _tile_background(img: np.ndarray, tile: int = 128) -> np.ndarray:
    """Median per tile: the background level where objects are sparse."""
    h, w = img.shape
    t = img[: h // tile * tile, : w // tile * tile].reshape(h // tile, tile, w // tile, tile)
    return np.median(t.transpose(0, 2, 1, 3).reshape(h // tile, w // tile, -1), axis=2)


@pytest.mark.skipif(not REAL_FRAME.exists(), reason=f"real ISIIS frame not found at {REAL_FRAME}")
@pytest.mark.parametrize("mode", ["vignetting", "both"])
def test_real_vignetted_frame_background_becomes_even(mode: str) -> None:
    raw = cv2.imread(str(REAL_FRAME), cv2.IMREAD_GRAYSCALE)
    # level 200 keeps the corrected background off the 255 ceiling, so the spread is honest
    out = FlatField(mode=mode, level=200).correct(raw)
    before = _tile_background(raw).std()
    after = _tile_background(out).std()
    assert before > 40
    assert after < before / 10, f"tile std {before:.1f} -> {after:.1f}"
    assert np.median(out) == pytest.approx(200, abs=3)
    # objects stay dark: the darkest percentile is still far below the background
    assert np.percentile(out, 0.1) < 150


@pytest.mark.skipif(not REAL_FRAME.exists(), reason=f"real ISIIS frame not found at {REAL_FRAME}")
@pytest.mark.parametrize("mode", ["vignetting", "both"])
def test_real_frame_corners_and_edges_come_out_at_the_background_level(mode: str) -> None:
    """The first frame of a chunk, corners and edge middles (64 px squares, mostly
    background) within 2.5 % of the level. Before the coarse grid's closing and blur
    worked on linearly extrapolated borders, the darkest corner (raw ~45 of 255) came
    out at 181 of 200 (both) and 155 (vignetting): a ~100 x 100 px "object"."""
    raw = cv2.imread(str(REAL_FRAME), cv2.IMREAD_GRAYSCALE)
    out = FlatField(mode=mode, level=200).correct(raw)
    s, h, w = 64, *raw.shape
    mid_r, mid_c = slice(h // 2 - s, h // 2 + s), slice(w // 2 - s, w // 2 + s)
    squares = {
        "top-left": out[:s, :s],
        "top-right": out[:s, -s:],
        "bottom-left": out[-s:, :s],
        "bottom-right": out[-s:, -s:],
        "top": out[:s, mid_c],
        "bottom": out[-s:, mid_c],
        "left": out[mid_r, :s],
        "right": out[mid_r, -s:],
    }
    levels = {k: float(np.median(v)) for k, v in squares.items()}
    assert all(195 <= v <= 205 for v in levels.values()), levels


def test_column_stripes_vignetting_and_drift_are_removed_on_synthetic_line_scan() -> None:
    frames, _ = synth_frames(
        4,
        height=512,
        width=1024,
        seed=3,
        density=15,
        column_gain=0.1,
        size_range=(8.0, 60.0),
        vignetting=0.35,
        drift=0.08,
        drift_period_frames=3,
    )
    frames = list(frames)
    ff = FlatField(mode="column")
    ff.prime(frames[:2])
    for raw in frames:
        out = ff.correct(raw)
        # per-column background (median over rows) before and after
        raw_cols = np.median(raw, axis=0)
        out_cols = np.median(out, axis=0)
        assert raw_cols.std() / raw_cols.mean() > 0.05
        assert out_cols.std() < 1.5 and np.median(out_cols) > 250
        # per-row background: the lamp drift is gone as well
        assert np.median(out, axis=1).std() < 1.5


def test_prime_makes_first_frame_of_a_chunk_as_good_as_a_later_one() -> None:
    frames, _ = synth_frames(
        6, height=512, width=1024, seed=4, density=20, column_gain=0.12, size_range=(8.0, 60.0)
    )
    frames = list(frames)
    warm = FlatField(mode="column", level=220)
    warm.prime(frames[:3])
    first = warm.correct(frames[3])
    steady = FlatField(mode="column", level=220)
    steady.prime(frames[:3])
    for f in frames[3:5]:
        steady.correct(f)
    tenth = steady.correct(frames[5])
    err_first = np.abs(np.median(first, axis=0) - 220).mean()
    err_later = np.abs(np.median(tenth, axis=0) - 220).mean()
    assert err_first < 1.0 and err_later < 1.0


def test_flatfield_rejects_bad_frames_with_clear_messages() -> None:
    ff = FlatField()
    with pytest.raises(ValueError, match="2-D uint8 or uint16"):
        ff.correct(np.zeros((4, 4, 3), np.uint8))
    ff.correct(np.full((32, 32), 100, np.uint8))
    with pytest.raises(ValueError, match="differs"):
        ff.correct(np.full((16, 32), 100, np.uint8))
    with pytest.raises(ValueError, match="mode"):
        FlatField(mode="rows")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_fast_background_statistics_equal_numpys_to_the_bit(dtype: type) -> None:
    # The flat-field's sorting-network median over the priming frames, its radix-sort
    # column medians and transposed column percentiles replace numpy's strided
    # partitions: the estimate (and so every ROI) must not move by one bit.
    from plankline.imaging.flatfield import _column_median, _column_percentile, _median_of

    rng = np.random.default_rng(3)
    top = np.iinfo(dtype).max
    for k in range(1, 10):
        frames = [rng.integers(0, top, (64, 96), endpoint=True).astype(dtype) for _ in range(k)]
        expected = np.median(np.stack([f[::4] for f in frames]), axis=0)
        got = _median_of(frames)
        assert got.dtype == expected.dtype and np.array_equal(got, expected)
    for rows in (7, 8, 255, 256):
        sample = rng.integers(0, top, (rows, 300), endpoint=True).astype(dtype)
        as_float = sample.astype(np.float32)
        assert np.array_equal(_column_median(sample), np.median(as_float, axis=0))
        for q in (25, 50, 75, 90):  # integer rows: radix sort and exact interpolation
            expected = np.percentile(as_float, q, axis=0).astype(np.float32)
            assert np.array_equal(_column_percentile(as_float, q), expected)
            assert np.array_equal(_column_percentile(sample, q), expected)


def test_neighbour_median_is_the_median_of_the_eight_nearest_neighbours():
    """The sorting-network median of the stuck-column rule equals np.median of each
    element's 8 nearest neighbours (reflected at the ends), ties and both dtypes included."""
    from plankline.imaging.flatfield import _neighbour_median

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n in (9, 10, 37, 2048):
            x = np.round(rng.normal(0, 3, n)).astype(dtype)  # many ties
            padded = np.pad(x, 4, mode="reflect")
            want = np.array(
                [np.median(np.r_[padded[i : i + 4], padded[i + 5 : i + 9]]) for i in range(n)]
            )
            got = _neighbour_median(x)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, want.astype(dtype))


def test_sparse_updates_follow_a_drifting_column_profile_as_well_as_updates_every_frame():
    # The default folds every 2nd frame into the estimate with the memory squared, so it
    # forgets at the same rate per frame: on a column profile that drifts by 10% over 24
    # frames its corrected background must stay as even as with an update at every frame.
    frames, _ = synth_frames(
        24, height=256, width=512, seed=5, density=10, column_gain=0.1, size_range=(8.0, 40.0)
    )
    ramp = np.linspace(0.95, 1.05, 512, dtype=np.float32)
    drifting = [
        np.clip(f * ramp ** (i / 23), 0, 255).astype(np.uint8) for i, f in enumerate(frames)
    ]
    errors = {}
    for every in (1, 2, 4):
        ff = FlatField(mode="column", level=220, update_every=every)
        ff.prime(drifting[:3])
        out = [ff.correct(f) for f in drifting[3:]]
        errors[every] = np.mean([np.abs(np.median(o, axis=0) - 220).mean() for o in out])
    assert errors[1] < 2.0, errors
    assert errors[2] < errors[1] + 0.1 and errors[4] < errors[1] + 0.2, errors


def test_a_column_that_dies_mid_video_is_repaired_within_stuck_every_frames():
    rng = np.random.default_rng(7)
    frames = [
        np.clip(200 + rng.normal(0, 3, (256, 256)), 0, 255).astype(np.uint8) for _ in range(24)
    ]
    for f in frames[6:]:
        f[:, 100] = 3  # the column dies at frame 6 and stays dead
    ff = FlatField(mode="column", update_every=2, stuck_every=8)
    ff.prime(frames[:3])
    assert ff.stuck_columns.tolist() == []
    found_at = None
    for i, f in enumerate(frames[3:], start=3):
        out = ff.correct(f)
        if found_at is None and 100 in ff.stuck_columns.tolist():
            found_at = i
    assert found_at is not None and found_at - 6 <= 8 + 2  # a decision, then an update
    assert ff.stuck_columns.tolist() == [100]  # and no healthy column
    assert np.median(out[:, 100]) > 240  # repaired: no dark line left
    with pytest.raises(ValueError, match="update_every"):
        FlatField(update_every=0)


@pytest.mark.parametrize("mode", ["column", "both"])
def test_frames_with_the_lamp_off_neither_decide_the_polarity_nor_darken_the_estimate(
    mode: str,
) -> None:
    """A video starting with black frames (lamp off): priming on them decided dark-field
    from the first one and inverted the whole chunk; folded into the estimate, their lines
    (lifted to the background by the per-line gain) darkened it for the frames after."""
    frames, _ = synth_frames(6, height=256, width=512, seed=4, density=20, column_gain=0.12)
    frames = list(frames)
    rng = np.random.default_rng(0)
    black = [rng.integers(0, 6, frames[0].shape, dtype=np.uint8) for _ in range(3)]
    primed = FlatField(mode=mode)
    primed.prime(black + frames[:5])
    assert primed.polarity_found == "bright-field"
    plain = FlatField(mode=mode)
    plain.prime(frames[:5])
    before = plain.background()
    for frame in black:
        plain.correct(frame)
    np.testing.assert_array_equal(plain.background(), before)  # not folded in
    after = plain.correct(frames[5])
    fresh = FlatField(mode=mode)
    fresh.prime(frames[:5])
    np.testing.assert_array_equal(after, fresh.correct(frames[5]))


@pytest.mark.parametrize("value", [0, 255])
def test_frames_without_an_image_come_back_blank_and_leave_the_estimate_alone(
    value: int,
) -> None:
    """The lamp off (black) or a clipped white flash mid-video. The white frame is only
    1.3x this background, inside the 2x of a lamp change: folded in, it brightened the
    estimate and the real ISIIS frame's video found a fifth fewer ROIs in the ten frames
    after two of them; corrected, either was one frame-sized "organism"."""
    frames, _ = synth_frames(6, height=256, width=512, seed=4, density=20, column_gain=0.12)
    frames = list(frames)
    event = np.full(frames[0].shape, value, np.uint8)
    ff, fresh = FlatField(), FlatField()
    ff.prime(frames[:5])
    fresh.prime(frames[:5])
    before = ff.background()
    assert np.median(before) * 1.2 < 255  # the white frame is no lamp change by level
    for _ in range(2):
        np.testing.assert_array_equal(ff.correct(event), np.full(event.shape, 255, np.uint8))
    np.testing.assert_array_equal(ff.background(), before)
    assert ff.artefacts()["lamp_frames"] == 2 and fresh.artefacts()["lamp_frames"] == 0
    np.testing.assert_array_equal(ff.correct(frames[5]), fresh.correct(frames[5]))


@pytest.mark.parametrize("bits", [10, 12, 14])
def test_frames_of_a_12_bit_camera_in_16_bit_files_keep_their_polarity(bits: int) -> None:
    """A 10-14-bit camera's frames come as 16-bit (TIFF, PNG, FFV1): read against 65,535
    the real frame's background (~3,200 of 4,095 at 12 bits) was dark-field, and every
    frame was inverted. Now bright-field as its 8-bit original, and corrected alike
    (here a synthetic line-scan frame, so the test runs without the real data)."""
    from plankline.imaging.flatfield import detect_polarity

    frames, _ = synth_frames(1, height=256, width=512, seed=4, density=20, column_gain=0.12)
    frame = next(iter(frames))
    deep = frame.astype(np.uint16) << (bits - 8)
    assert detect_polarity(deep) == "bright-field"
    assert detect_polarity(np.uint16((1 << bits) - 1) - deep) == "dark-field"
    out = {}
    for name, frames in (("8", [frame] * 3), ("deep", [deep] * 3)):
        ff = FlatField(mode="both")
        ff.prime(frames)
        assert ff.polarity_found == "bright-field"
        out[name] = ff.correct(frames[0]).astype(int)
    assert np.abs(out["8"] - out["deep"]).mean() < 1.0
