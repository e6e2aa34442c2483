"""Score detections against ground truth: one-to-one box matching, recall, precision, size errors.

Used by tests, benchmarks and the demo, so every figure Plankline reports about
detection quality is computed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

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


#: Contrast bins (peak darkness) of :func:`score_video`'s recall table.
CONTRAST_BINS = (0.0, 0.15, 0.2, 0.3, 0.45, 0.7, 1.01)


@dataclass(frozen=True)
class VideoScore:
    """Detection quality of a segmentation against a synthetic video's ground truth.

    ``whole``: fraction of countable truth objects found as ONE detection that covers at
    least 90% of the truth box, with no other detection lying mostly (>= 50% of its box)
    inside that box. ``edge_whole``: the same over objects crossing a frame cut (the
    line-scan case that needs carrying rows between frames). ``recall_by_contrast``:
    ``(lo, hi, n, recall)`` per contrast bin of the truth's peak darkness.
    """

    detection: DetectionScore
    whole: float
    edge_whole: float
    n_edge: int
    recall_by_contrast: tuple[tuple[float, float, int, float], ...]

    @property
    def recall(self) -> float:
        return self.detection.recall

    @property
    def precision(self) -> float:
        return self.detection.precision

    def summary(self) -> str:
        """One line per figure, for benchmarks and test failure messages."""
        d = self.detection
        bins = ", ".join(
            f"[{lo:.2f},{hi:.2f}) {rec:.3f} (n={n})" for lo, hi, n, rec in self.recall_by_contrast
        )
        return (
            f"recall {d.recall:.3f} precision {d.precision:.3f} whole {self.whole:.3f} "
            f"edge-whole {self.edge_whole:.3f} (n={self.n_edge}) area error "
            f"{d.area_error:.3f} ESD error {d.esd_error:.3f} "
            f"({d.n_truth} truth, {d.n_detected} detected)\nrecall by contrast: {bins}"
        )


def score_video(truth, rois, *, min_area_px: int, min_iou: float = 0.5) -> VideoScore:
    """Score ROIs (``line, column, height, width, area_px``) against a ``GroundTruth``.

    Parameters
    ----------
    truth : synth.GroundTruth (columns ``line, column, height, width, area_px, row,
        contrast`` and ``frame_height``)
    rois : segment.Rois or anything with the same columns
    min_area_px : the segmentation's size filter
    """
    tb = np.stack([truth.line, truth.column, truth.height, truth.width], 1)
    db = np.stack([rois.line, rois.column, rois.height, rois.width], 1)
    det = score_detections(
        tb, truth.area_px, db, rois.area_px, min_area_px=min_area_px, min_iou=min_iou
    )
    countable = np.asarray(truth.area_px) >= min_area_px
    whole = np.zeros(len(tb), bool)
    if len(det.truth_index):
        t_box = tb[det.truth_index].astype(np.float64)
        d_box = db[det.detected_index].astype(np.float64)
        top = np.maximum(t_box[:, 0], d_box[:, 0])
        left = np.maximum(t_box[:, 1], d_box[:, 1])
        bottom = np.minimum(t_box[:, 0] + t_box[:, 2], d_box[:, 0] + d_box[:, 2])
        right = np.minimum(t_box[:, 1] + t_box[:, 3], d_box[:, 1] + d_box[:, 3])
        cover = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
        whole[det.truth_index] = cover >= 0.9 * t_box[:, 2] * t_box[:, 3]
        # fragments: any other detection mostly inside a matched truth box
        frag_t, frag_d = _mostly_inside(db, tb)
        paired = dict(zip(det.truth_index.tolist(), det.detected_index.tolist(), strict=True))
        for t, d in zip(frag_t.tolist(), frag_d.tolist(), strict=True):
            if paired.get(t, d) != d:
                whole[t] = False
    frame_h = int(truth.frame_height)
    edge = countable & (np.asarray(truth.row) + np.asarray(truth.height) > frame_h)
    contrast = np.asarray(truth.contrast, np.float64)
    found = np.zeros(len(tb), bool)
    found[det.truth_index] = True
    bins = []
    for lo, hi in pairwise(CONTRAST_BINS):
        sel = countable & (contrast >= lo) & (contrast < hi)
        if sel.any():
            bins.append((lo, hi, int(sel.sum()), float(found[sel].mean())))
    n_count = int(countable.sum())
    return VideoScore(
        detection=det,
        whole=float(whole[countable].sum() / n_count) if n_count else 1.0,
        edge_whole=float(whole[edge].mean()) if edge.any() else 1.0,
        n_edge=int(edge.sum()),
        recall_by_contrast=tuple(bins),
    )


def _mostly_inside(detected: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (truth, detection) where >= 50% of the detection's box lies in the truth box."""
    order = np.argsort(truth[:, 0], kind="stable")
    starts = truth[order, 0]
    tallest = int(truth[:, 2].max()) if len(truth) else 0
    ts, ds = [], []
    for d, box in enumerate(detected):
        lo = np.searchsorted(starts, box[0] - tallest, "left")
        hi = np.searchsorted(starts, box[0] + box[2], "right")
        if lo == hi:
            continue
        cand = truth[order[lo:hi]]
        top = np.maximum(cand[:, 0], box[0])
        left = np.maximum(cand[:, 1], box[1])
        bottom = np.minimum(cand[:, 0] + cand[:, 2], box[0] + box[2])
        right = np.minimum(cand[:, 1] + cand[:, 3], box[1] + box[3])
        inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
        for t in order[lo:hi][inter >= 0.5 * box[2] * box[3]]:
            ts.append(int(t))
            ds.append(d)
    return np.array(ts, np.int64), np.array(ds, np.int64)
