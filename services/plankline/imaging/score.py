"""Score detections against ground truth: one-to-one box matching, recall, precision, size errors.

Used by tests, benchmarks and the demo, so every figure Plankline reports about
detection quality is computed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DetectionScore:
    """Recall over truth objects of at least ``min_area_px``; precision over all detections.

    ``truth_index``/``detected_index`` are the matched pairs; ``area_error`` and
    ``esd_error`` the median relative errors over matched objects >= 200 px.
    """

    recall: float
    precision: float
    n_truth: int
    n_detected: int
    truth_index: np.ndarray
    detected_index: np.ndarray
    area_error: float
    esd_error: float


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes ``(top, left, height, width)``: ``a`` (n,4) against ``b`` (m,4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    top = np.maximum(a[:, None, 0], b[None, :, 0])
    left = np.maximum(a[:, None, 1], b[None, :, 1])
    bottom = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    right = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_boxes(
    truth: np.ndarray, detected: np.ndarray, *, min_iou: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching by IoU, best pairs first; boxes in global line coordinates.

    Only boxes whose line ranges overlap are compared, so long videos stay cheap.
    """
    truth = np.asarray(truth, np.int64).reshape(-1, 4)
    detected = np.asarray(detected, np.int64).reshape(-1, 4)
    if len(truth) == 0 or len(detected) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(detected[:, 0], kind="stable")
    starts = detected[order, 0]
    tallest = int(detected[:, 2].max())
    pairs: list[tuple[float, int, int]] = []
    for t, box in enumerate(truth):
        lo = np.searchsorted(starts, box[0] - tallest, "left")
        hi = np.searchsorted(starts, box[0] + box[2], "right")
        if lo == hi:
            continue
        candidates = order[lo:hi]
        iou = box_iou(box, detected[candidates])[0]
        for d, value in zip(candidates, iou, strict=True):
            if value >= min_iou:
                pairs.append((float(value), t, int(d)))
    pairs.sort(key=lambda p: -p[0])
    used_t: set[int] = set()
    used_d: set[int] = set()
    matched_t, matched_d = [], []
    for _, t, d in pairs:
        if t not in used_t and d not in used_d:
            used_t.add(t)
            used_d.add(d)
            matched_t.append(t)
            matched_d.append(d)
    return np.array(matched_t, np.int64), np.array(matched_d, np.int64)


def score_detections(
    truth_boxes: np.ndarray,
    truth_area: np.ndarray,
    detected_boxes: np.ndarray,
    detected_area: np.ndarray,
    *,
    min_area_px: int,
    min_iou: float = 0.5,
) -> DetectionScore:
    """Recall (truth objects >= ``min_area_px``), precision, and size errors of matches.

    Parameters
    ----------
    truth_boxes, detected_boxes : (n, 4) int arrays of ``(line, column, height, width)``
    truth_area, detected_area : pixel counts of the masks
    min_area_px : the segmentation's size filter; smaller truth objects don't count as misses
    """
    truth_area = np.asarray(truth_area, np.float64)
    detected_area = np.asarray(detected_area, np.float64)
    t_idx, d_idx = match_boxes(truth_boxes, detected_boxes, min_iou=min_iou)
    countable = truth_area >= min_area_px
    n_truth = int(countable.sum())
    recall = float(countable[t_idx].sum() / n_truth) if n_truth else 1.0
    precision = float(len(d_idx) / len(detected_area)) if len(detected_area) else 1.0
    big = truth_area[t_idx] >= 200
    area_rel = np.abs(detected_area[d_idx][big] / truth_area[t_idx][big] - 1)
    esd_rel = np.abs(np.sqrt(detected_area[d_idx][big] / truth_area[t_idx][big]) - 1)
    return DetectionScore(
        recall=recall,
        precision=precision,
        n_truth=n_truth,
        n_detected=len(detected_area),
        truth_index=t_idx,
        detected_index=d_idx,
        area_error=float(np.median(area_rel)) if len(area_rel) else 0.0,
        esd_error=float(np.median(esd_rel)) if len(esd_rel) else 0.0,
    )
