"""The detection oracle itself: IoU, one-to-one matching and the scores, on hand-made boxes.

Every recall/precision figure of the project comes from ``score_detections``; a bug here
would make every quality test and benchmark lie, so it is checked against answers worked
out by hand and against a brute-force matcher.
"""

from __future__ import annotations

import numpy as np
import pytest
from plankline.imaging.score import box_iou, match_boxes, score_detections


def test_box_iou_of_hand_made_boxes() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array(
        [
            [0, 0, 10, 10],  # the same box: 1
            [5, 5, 10, 10],  # a 5x5 corner shared: 25 / (100 + 100 - 25)
            [0, 10, 10, 10],  # touching along an edge: 0
            [20, 20, 3, 3],  # far away: 0
            [2, 2, 4, 4],  # inside: 16 / 100
            [0, 0, 0, 0],  # empty box: 0, no division by zero
        ]
    )
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 25 / 175, 0.0, 0.0, 0.16, 0.0])
    assert box_iou(b, a).shape == (6, 1)  # symmetric layout: (n, m)
    np.testing.assert_allclose(box_iou(b, a)[:, 0], box_iou(a, b)[0])


def test_match_boxes_pairs_best_first_and_uses_each_box_once() -> None:
    truth = np.array([[0, 0, 10, 10], [0, 2, 10, 10], [50, 50, 10, 10]])
    # d0 is truth 1 exactly (IoU 1) and also overlaps truth 0 (80 / 120 = 0.67);
    # d1 is truth 0 exactly; d2 matches nothing; d3 overlaps truth 2 by half its width.
    detected = np.array([[0, 2, 10, 10], [0, 0, 10, 10], [30, 30, 5, 5], [50, 55, 10, 10]])
    t, d = match_boxes(truth, detected)
    assert sorted(zip(t.tolist(), d.tolist(), strict=True)) == [(0, 1), (1, 0)]
    # IoU of truth 2 and d3: 50 / 150 = 1/3, below 0.5; lower the bar and it matches
    t, d = match_boxes(truth, detected, min_iou=0.3)
    assert sorted(zip(t.tolist(), d.tolist(), strict=True)) == [(0, 1), (1, 0), (2, 3)]
    # one detection, two truths it overlaps: only the better truth gets it
    t, d = match_boxes(truth[:2], detected[1:2])
    assert (t.tolist(), d.tolist()) == ([0], [0])


def test_match_boxes_finds_a_tall_detection_that_starts_many_lines_earlier() -> None:
    """Only line-overlapping boxes are compared; a detection starting 40 lines above its
    truth (a tall organism cut by the window logic would be a false miss) must still match."""
    truth = np.array([[1000, 0, 60, 10]])
    detected = np.array([[5, 0, 5, 5], [960, 0, 100, 10], [2000, 0, 5, 5]])
    t, d = match_boxes(truth, detected)  # IoU 60*10 / (100*10) = 0.6
    assert (t.tolist(), d.tolist()) == ([0], [1])


def test_match_boxes_of_nothing_is_empty() -> None:
    some = np.array([[0, 0, 5, 5]])
    for truth, detected in ((some, np.zeros((0, 4))), (np.zeros((0, 4)), some)):
        t, d = match_boxes(truth, detected)
        assert t.shape == d.shape == (0,)


def _brute_force_greedy(truth: np.ndarray, detected: np.ndarray, min_iou: float) -> set:
    """Reference: the full IoU matrix, repeatedly take the best remaining pair."""
    iou = box_iou(truth, detected)
    pairs = set()
    while iou.size and iou.max() >= min_iou:
        t, d = np.unravel_index(np.argmax(iou), iou.shape)
        pairs.add((int(t), int(d)))
        iou[t, :] = -1
        iou[:, d] = -1
    return pairs


@pytest.mark.parametrize("seed", range(5))
def test_match_boxes_equals_a_brute_force_greedy_matcher(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    truth = np.stack(
        [
            rng.integers(0, 20_000, n),
            rng.integers(0, 2048, n),
            rng.integers(2, 300, n),
            rng.integers(2, 300, n),
        ],
        1,
    )
    # detections: most truths jittered (some badly), plus false positives
    jitter = rng.integers(-6, 7, (n, 4))
    detected = np.clip(truth + jitter, [0, 0, 1, 1], None)
    extra = np.stack(
        [
            rng.integers(0, 20_000, 80),
            rng.integers(0, 2048, 80),
            rng.integers(2, 300, 80),
            rng.integers(2, 300, 80),
        ],
        1,
    )
    detected = np.concatenate([detected[rng.random(n) < 0.9], extra])
    detected = detected[rng.permutation(len(detected))]
    t, d = match_boxes(truth, detected)
    assert set(zip(t.tolist(), d.tolist(), strict=True)) == _brute_force_greedy(
        truth, detected, 0.5
    )
    assert len(set(t.tolist())) == len(t) and len(set(d.tolist())) == len(d)
    assert len(t) > 200  # most jittered truths are found: the comparison is not vacuous


def test_score_detections_against_figures_worked_out_by_hand() -> None:
    truth_boxes = np.array(
        [
            [0, 0, 20, 15],  # 0: area 300, found with area 330 (+10%)
            [100, 0, 8, 8],  # 1: area 50, below min_area: found, but not a countable miss
            [200, 0, 20, 20],  # 2: area 400, found with area 380 (-5%)
            [300, 0, 25, 10],  # 3: area 250, missed
            [400, 0, 5, 5],  # 4: area 20, below min_area and missed: not counted
        ]
    )
    truth_area = np.array([300, 50, 400, 250, 20])
    detected_boxes = np.array(
        [
            [201, 0, 20, 20],  # -> truth 2 (IoU 19*20 / (2*400 - 380) = 0.905)
            [0, 0, 20, 15],  # -> truth 0
            [100, 0, 8, 8],  # -> truth 1
            [600, 600, 10, 10],  # false positive
        ]
    )
    detected_area = np.array([380, 330, 50, 90])
    score = score_detections(
        truth_boxes, truth_area, detected_boxes, detected_area, min_area_px=100
    )
    assert score.n_truth == 3 and score.n_detected == 4
    assert score.recall == pytest.approx(2 / 3)  # truths 0 and 2 of the countable 0, 2, 3
    assert score.precision == pytest.approx(3 / 4)  # every matched detection counts
    pairs = sorted(zip(score.truth_index.tolist(), score.detected_index.tolist(), strict=True))
    assert pairs == [(0, 1), (1, 2), (2, 0)]
    # size errors: median over matched truths >= 200 px (truths 0 and 2)
    assert score.area_error == pytest.approx((0.10 + 0.05) / 2)
    esd = [np.sqrt(1.1) - 1, 1 - np.sqrt(0.95)]
    assert score.esd_error == pytest.approx(np.mean(esd))


def test_score_detections_edge_cases_are_defined() -> None:
    box = np.array([[0, 0, 20, 20]])
    nothing = np.zeros((0, 4), np.int64)
    missed = score_detections(box, [400], nothing, [], min_area_px=10)
    assert (missed.recall, missed.precision, missed.n_detected) == (0.0, 1.0, 0)
    assert (missed.area_error, missed.esd_error) == (0.0, 0.0)
    spurious = score_detections(nothing, [], box, [400], min_area_px=10)
    assert (spurious.recall, spurious.precision, spurious.n_truth) == (1.0, 0.0, 0)
