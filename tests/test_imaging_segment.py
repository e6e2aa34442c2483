"""Segmentation against synthetic ground truth: recall, precision, boundary objects, chunks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plankline.imaging.flatfield import FlatField
from plankline.imaging.segment import (
    Rois,
    SegmentParams,
    _label_runs,
    segment_frame,
    segment_stream,
)
from plankline.imaging.synth import GroundTruth, render_organism, synth_frames

H, W = 512, 1024
STATIC = SegmentParams(method="static")


@pytest.fixture(scope="module")
def video() -> tuple[list[np.ndarray], GroundTruth]:
    """Ten flat-fielded 512x1024 line-scan frames and their truth."""
    frames, truth = synth_frames(
        10, height=H, width=W, seed=21, density=30, size_range=(8.0, 400.0)
    )
    frames = list(frames)
    ff = FlatField(mode="column")
    ff.prime(frames[:2])
    return [ff.correct(f) for f in frames], truth


def _bbox_iou(truth: GroundTruth, rois: Rois) -> np.ndarray:
    t = np.stack(
        [truth.line, truth.column, truth.line + truth.height, truth.column + truth.width], 1
    )
    r = np.stack([rois.line, rois.column, rois.line + rois.height, rois.column + rois.width], 1)
    y0 = np.maximum(t[:, None, 0], r[None, :, 0])
    x0 = np.maximum(t[:, None, 1], r[None, :, 1])
    y1 = np.minimum(t[:, None, 2], r[None, :, 2])
    x1 = np.minimum(t[:, None, 3], r[None, :, 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    at = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    ar = (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])
    return inter / (at[:, None] + ar[None, :] - inter)


def _keys(rois: Rois) -> list[tuple[int, ...]]:
    return sorted(
        zip(
            rois.line.tolist(),
            rois.column.tolist(),
            rois.height.tolist(),
            rois.width.tolist(),
            rois.area_px.tolist(),
            strict=True,
        )
    )


def test_stream_recall_and_precision_against_truth(video) -> None:
    flat, truth = video
    params = SegmentParams()
    rois = Rois.concat(segment_stream(enumerate(flat), params))
    iou = _bbox_iou(truth, rois)
    counted = truth.area_px >= params.min_area_px
    recall = (iou.max(1)[counted] > 0.5).mean()
    precision = (iou.max(0) > 0.5).mean()
    assert counted.sum() > 100
    assert recall >= 0.95 and precision >= 0.95, f"recall {recall:.3f} precision {precision:.3f}"


def test_objects_crossing_frame_boundaries_come_out_whole_and_once(video) -> None:
    # The easy generator's truth is the quarter-of-full-contrast outline, i.e. exactly the
    # static threshold's; the adaptive default outlines at a quarter of each object's own
    # contrast and is held to the hard mode's truth in test_imaging_adaptive.py.
    flat, truth = video
    rois = Rois.concat(segment_stream(enumerate(flat), STATIC))
    crossing = (
        (truth.row + truth.height > H)
        & (truth.frame < len(flat) - 1)
        & (truth.area_px >= STATIC.min_area_px)
    )
    assert crossing.sum() >= 4
    iou = _bbox_iou(truth, rois)
    for i in np.flatnonzero(crossing):
        hits = np.flatnonzero(iou[i] > 0.1)
        assert len(hits) == 1, f"object at line {truth.line[i]} found {len(hits)} times"
        j = hits[0]
        # same box up to a pixel of noise at the edge
        got = np.array([rois.line[j], rois.column[j], rois.height[j], rois.width[j]])
        want = np.array([truth.line[i], truth.column[i], truth.height[i], truth.width[i]])
        assert np.abs(got - want).max() <= 2
        assert abs(rois.area_px[j] - truth.area_px[i]) <= 0.05 * truth.area_px[i] + 3
        # crop assembled from both frames: mask spans the cut, padding around the bbox
        crop, mask = rois.crops[j], rois.masks[j]
        assert crop.shape == mask.shape and mask.sum() == rois.area_px[j]
        assert crop.shape[0] == rois.height[j] + 2 * STATIC.padding


def test_chunked_segmentation_union_equals_whole_video(video) -> None:
    flat, _ = video
    params = SegmentParams()
    whole = Rois.concat(segment_stream(enumerate(flat), params))
    parts = []
    for k in range(0, len(flat), 2):
        start = max(0, k - 1)  # one frame of context before the chunk
        consumed: list[int] = []

        def frames(start: int = start, consumed: list[int] = consumed):
            for i in range(start, len(flat)):
                consumed.append(i)
                yield i, flat[i]

        chunk = Rois.concat(segment_stream(frames(), params, first_owned=k, stop_owned=k + 2))
        assert np.all((chunk.frame >= k) & (chunk.frame < k + 2))
        # lazily consumed: at most the frames needed to finish owned objects
        assert consumed[-1] <= k + 3
        parts.append(chunk)
    union = Rois.concat(parts)
    assert _keys(union) == _keys(whole)
    # crops identical too (same padding from the context frame)
    order_w = np.lexsort((whole.column, whole.line))
    order_u = np.lexsort((union.column, union.line))
    for a, b in zip(order_w, order_u, strict=True):
        assert np.array_equal(whole.crops[a], union.crops[b])
        assert np.array_equal(whole.masks[a], union.masks[b])


def test_chunk_without_context_drops_only_top_edge_objects(video) -> None:
    flat, _ = video
    whole = Rois.concat(segment_stream(enumerate(flat), SegmentParams()))
    chunk = Rois.concat(
        segment_stream(
            ((i, flat[i]) for i in range(2, 10)), SegmentParams(), first_owned=2, stop_owned=4
        )
    )
    expected = whole.take((whole.frame >= 2) & (whole.frame < 4) & (whole.line > 2 * H))
    assert set(_keys(chunk)) >= set(_keys(expected))
    assert np.all(chunk.line > 2 * H)


def test_segment_frame_keeps_only_objects_fully_inside(video) -> None:
    flat, truth = video
    rois = segment_frame(flat[2], frame_index=2)
    inside = (
        (truth.frame == 2)
        & (truth.row > 0)
        & (truth.row + truth.height < H)
        & (truth.column > 0)
        & (truth.column + truth.width < W)
        & (truth.area_px >= 25)
    )
    iou = _bbox_iou(truth, rois)
    assert (iou.max(1)[inside] > 0.5).mean() >= 0.95
    assert np.all(rois.row > 0) and np.all(rois.row + rois.height < H)
    assert np.all(rois.frame == 2) and np.array_equal(rois.line, 2 * H + rois.row)


@pytest.mark.parametrize("method", ["otsu", "percentile"])
def test_alternative_methods_find_the_organisms(method: str) -> None:
    rng = np.random.default_rng(5)
    frame = np.full((400, 600), 255, np.uint8)
    truth = []
    for k, (y, x) in enumerate([(40, 40), (60, 300), (220, 100), (250, 400)]):
        img, mask = render_organism(
            ("copepod", "protist", "larval_fish", "marine_snow")[k], rng, 90
        )
        h, w = img.shape
        frame[y : y + h, x : x + w] = np.minimum(frame[y : y + h, x : x + w], img)
        truth.append((y, x, int(mask.sum())))
    noisy = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)
    params = SegmentParams(method=method, percentile=5.0)
    rois = segment_frame(noisy, params)
    assert len(rois) == 4
    for y, x, area in truth:
        j = int(np.argmin(np.abs(rois.row - y) + np.abs(rois.column - x)))
        assert abs(rois.row[j] - y) < 25 and abs(rois.column[j] - x) < 25
        assert 0.5 * area < rois.area_px[j] < 2 * area


def test_the_removed_mser_method_is_refused_saying_why() -> None:
    # MSER was removed (0.3 frames/s on real frames, blind below contrast ~0.2): a user's
    # old config must fail at the start with a message, not run something else
    from plankline.config import PipelineSettings
    from pydantic import ValidationError

    with pytest.raises(ValueError, match="MSER was removed"):
        SegmentParams(method="mser")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="adaptive"):
        PipelineSettings(method="mser")  # type: ignore[arg-type]


def test_size_filters_in_pixels_and_micrometres() -> None:
    frame = np.full((100, 100), 255, np.uint8)
    frame[10:14, 10:14] = 0  # 16 px
    frame[50:70, 50:70] = 0  # 400 px
    assert list(segment_frame(frame, SegmentParams(min_area_px=10)).area_px) == [16, 400]
    assert list(segment_frame(frame, SegmentParams(min_area_px=20)).area_px) == [400]
    # ESD of 400 px at 10 um/px is ~226 um
    um = SegmentParams(min_area_px=1, pixel_size_um=10.0, min_esd_um=100.0, max_esd_um=300.0)
    assert list(segment_frame(frame, um).area_px) == [400]
    with pytest.raises(ValueError, match="pixel_size_um"):
        SegmentParams(min_esd_um=100.0)
    with pytest.raises(ValueError, match="2-D uint8 or uint16"):
        segment_frame(np.zeros((10, 10), np.float32))


def _opencv_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's 8-connected labels (block-based, as segment._label) and stats of a 0/1 mask."""
    _, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        mask, 8, cv2.CV_32S, cv2.CCL_GRANA
    )
    return labels, stats


def _assert_runs_equal_opencv(mask: np.ndarray) -> None:
    labels, stats = _opencv_components(mask)
    run_stats, fg, fg_label = _label_runs(mask)
    assert np.array_equal(fg, np.flatnonzero(mask))
    assert np.array_equal(fg_label, labels.ravel()[fg])  # same partition, same numbers
    assert np.array_equal(run_stats[1:], stats[1:])  # boxes and areas of every component
    assert run_stats[0, 4] == mask.size - len(fg)


@pytest.mark.parametrize(
    "name", ["empty", "full", "corners", "checkerboard", "diagonals", "stripes", "noise"]
)
def test_run_labelling_equals_opencvs_labels_numbers_and_stats(name: str) -> None:
    """The label-image-free labelling of the adaptive path gives OpenCV's components,
    numbered as OpenCV numbers them, on masks that stress 8-connectivity (diagonal-only
    contacts, runs ending at the last column, one-pixel components at the corners)."""
    h, w = 37, 64
    mask = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    if name == "full":
        mask[:] = 1
    elif name == "corners":
        mask[[0, 0, -1, -1], [0, -1, 0, -1]] = 1
    elif name == "checkerboard":
        mask[(yy + xx) % 2 == 0] = 1  # one component through diagonal contacts only
    elif name == "diagonals":
        mask[(xx - 3 * (yy // 3)) % 7 == 0] = 1
    elif name == "stripes":
        mask[:, ::3] = 1
        mask[::4, :] = 0
    elif name == "noise":
        mask = (np.random.default_rng(5).random((h, w)) < 0.3).astype(np.uint8)
    _assert_runs_equal_opencv(mask)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.floats(0.0, 0.7),
    st.integers(0, 2**31 - 1),
)
def test_run_labelling_equals_opencv_on_random_masks(h: int, w: int, p: float, seed: int) -> None:
    mask = (np.random.default_rng(seed).random((h, w)) < p).astype(np.uint8)
    _assert_runs_equal_opencv(mask)
