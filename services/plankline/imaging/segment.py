"""Segmentation: flat-fielded frames in, regions of interest (crops + masks + positions) out.

Whole-frame passes per frame: a threshold, connected components with their stats table,
a size filter on that table, then crops and masks of all objects gathered at once. The
default ``adaptive`` method labels its growth mask from the mask's runs
(:func:`_label_runs`, no label image: a real frame's mask is ~3 % foreground) and works on
the foreground pixels only (seed test, outline at a quarter of each object's own contrast,
masks scattered from the outline pixels); the other methods use
``cv2.connectedComponentsWithStats``. Python loops only over the few objects that need
more (split outlines, possible widened streaks) and to hand out each crop as a view.

The default level comes from the footage itself (:func:`noise_grid`): the flat-fielded
background's level and robust noise sigma per cell of the frame, because the flat-field
amplifies the noise of a vignetted frame's edges two to three times and a fixed grey value
is either blind to faint organisms or floods the noisy edges.

Sensor artefacts are not organisms (rule, applied to every method, ``drop_artefacts``):

* a *column streak* is an object at least ``streak_min_length`` (12) lines tall whose
  box is at most ``streak_max_width`` (2) px wide (plus one pixel the noise may add, and
  6 widths tall), or, in a box up to 8 px wide, with 80% of its pixels in
  ``streak_max_width`` adjacent columns: a line-scan sensor draws dust or a transient
  pixel defect as a 1-2 px vertical line, and no plankter is that thin and that straight
  down one column over that length;
* a *flicker band* is an object spanning at least ``flicker_min_span`` (90%) of the frame
  width but at most ``flicker_max_lines`` (16) lines: a lamp flicker the flat-field's
  per-line gain did not follow darkens whole lines, organisms do not.

Both are dropped and counted in :attr:`Rois.artefacts` (``{"streaks": n,
"flicker_bands": n}`` per batch, summed by :meth:`Rois.concat`). Stuck (dead/hot) columns
are repaired earlier, by the flat-field (:class:`~plankline.imaging.flatfield.FlatField`).

ISIIS is a line-scan camera: frame ``i + 1`` continues frame ``i`` downwards, so an organism
can straddle the cut. :func:`segment_stream` carries the bottom rows that hold unfinished
objects into the next frame, so every object comes out whole and exactly once, and its
chunk semantics (``first_owned``/``stop_owned``) let independent workers split a video
into chunks whose union is the whole-video result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

METHODS = ("adaptive", "static", "percentile", "otsu")

POSITION_FIELDS = (  # the integer per-ROI fields of Rois, in order
    "frame",
    "line",
    "row",
    "column",
    "height",
    "width",
    "area_px",
    "pad_top",
    "pad_left",
)


@dataclass(frozen=True)
class SegmentParams:
    """How to find objects in a flat-fielded frame (background ~255, objects dark).

    Parameters
    ----------
    method : {"adaptive", "static", "percentile", "otsu"}
        ``adaptive`` (default): levels from the footage. Per cell of ``noise_cell`` px the
        background level ``b`` and robust noise ``s`` of the flat-fielded frame
        (:func:`noise_grid`); pixels darker than ``b - k_low * s`` are labelled, and a
        component is an object only if it holds a seed pixel darker than
        ``b - k_high * s`` (hysteresis: seeds confident, faint parts and soft edges grow
        from them). Its outline is then set at ``edge_fraction`` of its own contrast (but
        never inside ``k_low * s``), keeping the largest 8-connected piece, so a faint
        organism's area does not depend on the noise and a dark one's excludes its blur
        halo (``split_gap`` says when pieces are one object). The seed is checked once
        more against the background right around the object (a flat-field residual is
        not an organism). ``static``: pixels darker than ``threshold``. ``percentile``:
        pixels darker than the ``percentile``-th intensity percentile of the frame
        (adapts to turbid water).
        ``otsu``: Otsu's threshold per frame (only sensible when objects are plentiful).
        There is no MSER method (the seed's Threshold-MSER): whole-frame ``cv2.MSER`` ran at
        0.3 frames/s per core on real frames, an eighth of the OSU C++ segmenter's 2.4, and
        its fixed brightest level made it blind below contrast ~0.2 in the hard synthetic
        mode (recall 0.67), where ``adaptive`` meets every quality target
        (``scripts/bench_quality.py``); MSER inside candidate windows ran 5x faster but its
        nested regions gave outlines at the growth level (precision 0.37). So it was
        removed rather than kept as a slow, worse option.
    threshold : float
        Static level: a pixel is object when ``value < threshold``. 192 keeps everything at
        or above quarter contrast on a 255 background (see ``synth.MASK_LEVEL``).
    percentile : float
        For ``method="percentile"``, in percent of darkest pixels.
    min_area_px, max_area_px : int, int or None
        Size filter on the object's pixel count. 25 by default, under the OSU
        Threshold-MSER segmenter's 50, because small organisms are whole classes: of
        the 30,336 expert-labelled ISIIS vignettes of PlanktonSet 1.0 (NDSB), measured
        with :func:`object_mask`, 50 px would drop 47 % of ``acantharia_protist``, 54 % of
        early pluteus larvae, 46 % of small long-antennae copepods and 38 % of
        *Oithona* (37 px, the 2 % quantile over all classes: 23 %, 29 %, 18 %, 13 %);
        25 px drops 0.5 % of all, 10 % of ``acantharia_protist``. On the real MBARI
        frame video the 25-37 px ROIs are 31 % of all, mostly faint discs and specks
        (two thirds under the shipped classifier's size gate), yet they hold a third of
        the confident taxa, a small dark acantharian among them.
    pixel_size_um, min_esd_um, max_esd_um : float or None
        Alternative size filter on the equivalent circular diameter in micrometres; applied
        in addition to the pixel filter when ``pixel_size_um`` is given.
    padding : int
        Background pixels kept around the bbox in crops (clipped at frame edges).
    closing : int
        Side of the square kernel of a morphological closing applied to the binary image
        before labelling (joins antennae broken by noise); 0 turns it off.
    fill_holes : bool
        Fill holes in each object's mask (ZooProcess-style areas); off by default so areas
        are the pixels actually darker than the threshold.
    connectivity : {4, 8}
        Pixel connectivity of objects.
    k_high, k_low : float
        Adaptive seed and growth levels, in noise sigmas (of the smoothed frame) below the
        background. Chosen on the hard synthetic mode (5 seeds) and looked at on the real
        MBARI frame video (scripts/bench_quality.py): 4/2, 5/2, 6/3 give recall,
        precision and whole within 0.005 of 5/2.5; 5/2.5 kept every edge object whole.
    edge_fraction : float
        Adaptive outline at this fraction of the object's own contrast (0 = the growth
        level); 0.25 is the quarter-contrast outline of the synthetic ground truth.
    noise_cell : int
        Cell size (px) of the background/noise grid.
    min_sigma : float
        Floor of the noise sigma (8-bit grey levels): a saturated, noise-free background
        must not turn every JPEG ripple into an object, nor a flat-field residual 2-3
        levels deep (the 3 x 3 mean leaves ~1 level of noise) into a field of objects.
    smooth : int
        Side of the box mean the levels and the seed test apply to (noise / 3 for 3);
        the outline itself is taken on the unsmoothed frame. 1 turns it off.
    split_gap : int
        Pieces of a confident outline (twice the growth level) more than this many px
        apart are separate objects (organisms whose faint halos touch); closer pieces,
        pieces inside the largest piece's box, and objects under a tenth of a larger
        object's area inside its box are one object with it (chains, spines, antennae
        the noise cut).
    drop_artefacts : bool
        Drop column streaks and flicker bands (see the module docstring) and count them.
    streak_max_width, streak_min_length, flicker_min_span, flicker_max_lines :
        The artefact rule's limits.
    max_object_lines : int
        Objects taller than this many lines are cut (protects memory against a jammed or
        fouled camera producing one endless dark region).
    """

    method: Literal["adaptive", "static", "percentile", "otsu"] = "adaptive"
    threshold: float = 192.0
    percentile: float = 1.0
    min_area_px: int = 25
    max_area_px: int | None = None
    pixel_size_um: float | None = None
    min_esd_um: float | None = None
    max_esd_um: float | None = None
    padding: int = 6
    closing: int = 0
    fill_holes: bool = False
    connectivity: Literal[4, 8] = 8
    k_high: float = 5.0
    k_low: float = 2.5
    edge_fraction: float = 0.25
    noise_cell: int = 128
    min_sigma: float = 1.5
    smooth: int = 3
    split_gap: int = 2
    drop_artefacts: bool = True
    streak_max_width: int = 2
    streak_min_length: int = 12
    flicker_min_span: float = 0.9
    flicker_max_lines: int = 16
    max_object_lines: int = 8192

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            hint = " (MSER was removed: slower and blinder than adaptive)" * (self.method == "mser")
            raise ValueError(
                f"SegmentParams.method must be one of {'/'.join(METHODS)}, got "
                f"{self.method!r}{hint}"
            )
        if not 0 < self.k_low <= self.k_high:
            raise ValueError(
                f"SegmentParams needs 0 < k_low <= k_high, got k_low={self.k_low}, "
                f"k_high={self.k_high}"
            )
        if not 0 <= self.edge_fraction < 1:
            raise ValueError(
                f"SegmentParams.edge_fraction must be in [0, 1), got {self.edge_fraction}"
            )
        if self.noise_cell < 16 or self.min_sigma <= 0:
            raise ValueError("SegmentParams.noise_cell must be >= 16 and min_sigma > 0")
        if self.min_area_px < 1:
            raise ValueError(f"SegmentParams.min_area_px must be >= 1, got {self.min_area_px}")
        if self.max_area_px is not None and self.max_area_px < self.min_area_px:
            raise ValueError("SegmentParams.max_area_px must be >= min_area_px")
        if self.padding < 0 or self.closing < 0:
            raise ValueError("SegmentParams.padding and closing must be >= 0")
        if self.connectivity not in (4, 8):
            raise ValueError(f"SegmentParams.connectivity must be 4 or 8, got {self.connectivity}")
        if (self.min_esd_um or self.max_esd_um) and not self.pixel_size_um:
            raise ValueError("SegmentParams.min_esd_um/max_esd_um need pixel_size_um")
        if not 0 < self.percentile < 100:
            raise ValueError(f"SegmentParams.percentile must be in (0, 100), got {self.percentile}")

    def area_bounds(self) -> tuple[int, float]:
        """Pixel-count bounds implied by the pixel and ESD filters together."""
        lo, hi = float(self.min_area_px), math.inf if self.max_area_px is None else self.max_area_px
        if self.pixel_size_um:
            if self.min_esd_um:
                lo = max(lo, math.pi * (self.min_esd_um / self.pixel_size_um / 2) ** 2)
            if self.max_esd_um:
                hi = min(hi, math.pi * (self.max_esd_um / self.pixel_size_um / 2) ** 2)
        return math.ceil(lo), hi


@dataclass
class Rois:
    """A columnar batch of regions of interest.

    Attributes
    ----------
    frame : int64 array
        Frame holding the object's top row.
    line : int64 array
        Global line of the object's top row, ``frame * frame_height + row``.
    row, column : int64 arrays
        Bounding-box top-left inside that frame (column = x).
    height, width : int64 arrays
        Bounding box size (height may exceed the frame height for objects that straddle).
    area_px : int64 array
        Object pixel count (after hole filling when enabled).
    pad_top, pad_left : int64 arrays
        Offset of the bbox inside the crop (padding actually applied, clipped at edges).
    crops : list of 2-D arrays
        Flat-fielded pixels around each object, with padding, dtype of the frames.
    masks : list of 2-D bool arrays
        The object's pixels, same shape as its crop (neighbours in the crop are False).
    artefacts : dict of str to int
        Sensor artefacts recognised and dropped while finding these ROIs
        (``streaks``, ``flicker_bands``; see the module docstring).
    """

    frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    line: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    column: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    height: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    width: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    area_px: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pad_top: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pad_left: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    crops: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    artefacts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.line)

    @classmethod
    def concat(cls, parts: Iterable[Rois]) -> Rois:
        """Concatenate batches in order (e.g. all batches of a chunk); artefact counts add."""
        parts = list(parts)
        counts: dict[str, int] = {}
        for p in parts:
            for k, v in p.artefacts.items():
                counts[k] = counts.get(k, 0) + v
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(artefacts=counts)
        cols = {k: np.concatenate([getattr(p, k) for p in parts]) for k in POSITION_FIELDS}
        return cls(
            **cols,
            crops=[c for p in parts for c in p.crops],
            masks=[m for p in parts for m in p.masks],
            artefacts=counts,
        )

    def take(self, index: Sequence[int] | np.ndarray) -> Rois:
        """A new batch holding the ROIs at ``index`` (ints or a bool mask), in that order."""
        idx = np.arange(len(self))[np.asarray(index)] if len(self) else np.zeros(0, int)
        cols = {k: getattr(self, k)[idx] for k in POSITION_FIELDS}
        return Rois(**cols, crops=[self.crops[i] for i in idx], masks=[self.masks[i] for i in idx])


# --------------------------------------------------------------------------- per frame


def _check_frame(frame: np.ndarray, name: str = "frame") -> None:
    if (
        not isinstance(frame, np.ndarray)
        or frame.ndim != 2
        or frame.dtype not in (np.uint8, np.uint16)
    ):
        got = f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}"
        raise ValueError(f"{name} must be a 2-D uint8 or uint16 array, got {got}")


def binarize(frame: np.ndarray, params: SegmentParams) -> np.ndarray:
    """The object/background decision of ``params.method``: uint8 image, 255 = object.

    For ``adaptive`` this is the growth mask (pixels darker than ``b - k_low * s``); the
    seed test and the outline are applied per object by :func:`segment_frame` and
    :func:`segment_stream`.
    """
    _check_frame(frame)
    if params.method == "adaptive":
        src = _smoothed(frame, params)
        return _close(_below(src, _Levels.of(src, params).low), params.closing)
    if params.method == "static":
        level = params.threshold
    elif params.method == "percentile":
        hist = np.bincount(
            frame[::4, ::4].ravel(), minlength=256 if frame.dtype == np.uint8 else 65536
        )
        cdf = np.cumsum(hist)
        level = float(np.searchsorted(cdf, cdf[-1] * params.percentile / 100.0)) + 1
        level = min(level, params.threshold)  # never call background an object
    else:  # otsu
        src = frame if frame.dtype == np.uint8 else cv2.convertScaleAbs(frame, alpha=1 / 257)
        otsu, _ = cv2.threshold(src, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        level = (otsu + 1) * (1 if frame.dtype == np.uint8 else 257)
    if frame.dtype == np.uint8:
        # value < level  <=>  value <= ceil(level) - 1
        _, binary = cv2.threshold(frame, math.ceil(level) - 1, 255, cv2.THRESH_BINARY_INV)
    else:
        binary = (frame < level).view(np.uint8) * np.uint8(255)
    return _close(binary, params.closing)


def _smoothed(frame: np.ndarray, params: SegmentParams) -> np.ndarray:
    """The image the adaptive levels apply to: a ``smooth`` x ``smooth`` box mean (noise
    /3 for 3 x 3), so faint organisms' parts stay connected above the noise."""
    if params.smooth > 1:
        return cv2.blur(frame, (params.smooth, params.smooth), borderType=cv2.BORDER_REPLICATE)
    return frame


def _below(frame: np.ndarray, level: np.ndarray) -> np.ndarray:
    """255 where ``frame < level`` (a full-size level map of the frame's dtype)."""
    return cv2.compare(frame, level, cv2.CMP_LT)


# Gaussian quantiles -0.5 and -1.5 sigma: their gap is sigma, and both lie in the lower
# half, which the flat-field's saturation at 255 leaves intact (the upper half of the noise
# of a background at 255 is clipped, so a MAD around the median reads ~0).
_Q_HI, _Q_LO = 0.3085, 0.0668


def noise_grid(
    frame: np.ndarray, cell: int = 128, *, row_step: int | None = None, col_step: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Background level and robust noise sigma of a flat-fielded frame, per cell.

    Per cell of ``cell`` x ``cell`` px (every ``row_step``-th row, ``col_step``-th column):
    ``sigma = q(0.3085) - q(0.0668)`` (the -0.5 and -1.5 sigma quantiles of Gaussian noise)
    and ``background = q(0.3085) + sigma / 2``, then a median over 5 x 5 cells, so cells
    taken by a large organism borrow from their neighbours. Lower-tail quantiles because
    the flat-field saturates the background at 255: half the noise is clipped there.
    Objects up to a few percent of a cell do not move these quantiles. ``row_step``
    defaults to ``cell // 8``: 8 lines of every cell, 512 samples of a 128-px cell (half
    the old every-8th-line sample, 0.8 ms of a real 2048 x 2048 frame saved); 64-px
    cells (smaller frames) keep every 8th line, as 256 samples are the fewest that
    read a cell's sigma to 10 %.

    Parameters
    ----------
    frame : (H, W) uint8 or uint16
        Flat-fielded, background bright.
    cell : int
        Cell size in px.
    row_step, col_step : int
        Sample every n-th line (default ``cell // 8``) and column.

    Returns
    -------
    background, sigma : (ceil(H / cell), ceil(W / cell)) float32
        In the frame's grey levels.
    """
    _check_frame(frame)
    h, w = frame.shape
    nr, nc = -(-h // cell), -(-w // cell)
    if row_step is None:
        row_step = max(1, cell // 8)
    sub = frame[::row_step, ::col_step]
    rows = (np.arange(sub.shape[0]) * row_step) // cell
    cols = (np.arange(sub.shape[1]) * col_step) // cell
    if frame.dtype == np.uint8:
        idx = _cell_index(rows, cols, nc)
        hist = np.bincount((idx + sub).ravel(), minlength=nr * nc * 256).reshape(nr * nc, 256)
        cdf = np.cumsum(hist, axis=1)
        total = cdf[:, -1:].astype(np.float64)
        q_hi = _hist_quantile(hist, cdf, total * _Q_HI)
        q_lo = _hist_quantile(hist, cdf, total * _Q_LO)
        # Second pass without the objects: leave out values more than 8 noise sigmas under
        # the frame's typical background, so an organism covering most of a cell (larger
        # than the median window) does not pass for background.
        s0 = float(np.median(q_hi - q_lo))
        floor = int(np.clip(np.median(q_hi) + s0 / 2 - 8 * max(s0, 1.0), 1, 255))
        hist[:, :floor] = 0
        cdf = np.cumsum(hist, axis=1)
        total = np.maximum(cdf[:, -1:], 1).astype(np.float64)
        q_hi = _hist_quantile(hist, cdf, total * _Q_HI)
        q_lo = _hist_quantile(hist, cdf, total * _Q_LO)
        # Third pass, local: leave out values more than 5 sigmas under each cell's
        # neighbourhood background (median of the cells around), so a large faint organism
        # (a tenth of the background darker, covering several cells) is not background.
        bg1, sd1 = _smooth_grid(q_hi + (q_hi - q_lo) / 2, q_hi - q_lo, nr, nc, frame.dtype)
        local = np.clip(np.floor(bg1 - 5 * np.maximum(sd1, 1.0)), 1, 255).astype(np.int64)
        hist[np.arange(256)[None, :] < local.reshape(-1, 1)] = 0
        cdf = np.cumsum(hist, axis=1)
        total = np.maximum(cdf[:, -1:], 1).astype(np.float64)
        q_hi = _hist_quantile(hist, cdf, total * _Q_HI)
        q_lo = _hist_quantile(hist, cdf, total * _Q_LO)
    else:  # 16-bit: sort per cell (rare; a 65536-bin histogram per cell would be larger)
        q_hi = np.empty(nr * nc)
        q_lo = np.empty(nr * nc)
        for r in range(nr):
            for c in range(nc):
                v = sub[rows == r][:, cols == c].ravel()
                q_lo[r * nc + c], q_hi[r * nc + c] = np.quantile(v, [_Q_LO, _Q_HI])
    return _smooth_grid(q_hi + (q_hi - q_lo) / 2, q_hi - q_lo, nr, nc, frame.dtype)


def _smooth_grid(
    background: np.ndarray, sigma: np.ndarray, nr: int, nc: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """Cap and median-filter per-cell estimates.

    A cell mostly covered by an organism reads a huge "noise": sigma is capped at 4x the
    frame's median (vignetted edges of a flat-fielded frame reach ~3x), the background at
    the top of the grey range; then a median over 5 x 5 cells (3 x 3 on small grids).
    """
    sigma = sigma.reshape(nr, nc).astype(np.float32)
    background = background.reshape(nr, nc).astype(np.float32)
    top = float(np.iinfo(dtype).max)
    np.minimum(sigma, np.float32(4 * max(float(np.median(sigma)), 1e-3)), out=sigma)
    np.minimum(background, np.float32(top + 0.5), out=background)
    if nr >= 3 and nc >= 3:
        k = 5 if nr >= 5 and nc >= 5 else 3
        sigma = cv2.medianBlur(sigma, k)
        background = cv2.medianBlur(background, k)
    return background, sigma


_INDEX_CACHE: dict[tuple[int, ...], np.ndarray] = {}


def _cell_index(rows: np.ndarray, cols: np.ndarray, nc: int) -> np.ndarray:
    """``(cell number) * 256`` for every sampled pixel, cached by geometry."""
    key = (len(rows), len(cols), int(rows[-1]), int(cols[-1]), nc)
    idx = _INDEX_CACHE.get(key)
    if idx is None:
        idx = ((rows[:, None] * nc + cols[None, :]) * 256).astype(np.int32)
        if len(_INDEX_CACHE) > 16:
            _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = idx
    return idx


def _hist_quantile(hist: np.ndarray, cdf: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-row quantile of integer-valued histograms, linearly interpolated in its bin."""
    k = (cdf < target).sum(axis=1)  # first bin reaching the target
    k = np.minimum(k, hist.shape[1] - 1)
    rows = np.arange(len(k))
    below = np.where(k > 0, cdf[rows, np.maximum(k - 1, 0)], 0)
    inside = np.maximum(hist[rows, k], 1)
    return k - 0.5 + (target[:, 0] - below) / inside


def _cell_size(shape: tuple[int, ...], params: SegmentParams) -> int:
    """``noise_cell``, shrunk on small frames to keep >= 8 cells a side (for the median)."""
    return int(min(params.noise_cell, max(16, min(shape[0], shape[1]) // 8)))


@dataclass
class _Levels:
    """Adaptive levels of one frame: the cell grid and the full-size growth level map."""

    background: np.ndarray  # (nr, nc) float32
    sigma: np.ndarray  # (nr, nc) float32
    low: np.ndarray  # (H, W) frame dtype: a pixel below it is a candidate

    @classmethod
    def of(cls, frame: np.ndarray, params: SegmentParams) -> _Levels:
        cell = _cell_size(frame.shape, params)
        bg, sigma = noise_grid(frame, cell)
        scale = 257.0 if frame.dtype == np.uint16 else 1.0  # min_sigma is in 8-bit levels
        floor = max(params.min_sigma * scale, 0.5 * float(np.median(sigma)))
        sigma = np.maximum(sigma, np.float32(floor))
        small = bg - np.float32(params.k_low) * sigma
        h, w = frame.shape
        # Cell centres sit at (i + 0.5) * cell: resizing the grid to nr*cell x nc*cell and
        # cropping puts every value at its centre, interpolating in between.
        nr, nc = bg.shape
        top = np.iinfo(frame.dtype).max
        small = np.clip(np.ceil(small), 0, top).astype(frame.dtype)
        full = cv2.resize(small, (nc * cell, nr * cell), interpolation=cv2.INTER_LINEAR)
        low = np.ascontiguousarray(full[:h, :w]) if full.shape != (h, w) else full
        return cls(bg, sigma, low)


def _close(binary: np.ndarray, closing: int) -> np.ndarray:
    if closing > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (closing, closing))
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    return binary


def _label(
    binary: np.ndarray, connectivity: int, pool: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Label + bbox/area stats in one pass.

    Grana's block-based algorithm (BBDT) is chosen explicitly: with stats on sparse
    plankton frames it is ~2.5x faster single-threaded than OpenCV's default (Spaghetti)
    in OpenCV 4.12 (measured in scripts/bench_segment.py); for 4-connectivity OpenCV
    falls back to SAUF by itself.

    ``pool``: two flat int32 arrays the labels are written into in turn (a stream keeps
    the last buffer's labels while labelling the next one). A fresh 17 MB label image
    per frame costs ~4,000 page faults, 10-15 % of the labelling on a 2048 x 2048 frame.
    """
    out = None
    if pool is not None:
        if pool[0].size < binary.size:
            pool[0] = np.empty(binary.size + binary.size // 8, np.int32)  # room for carries
        out = pool[0][: binary.size].reshape(binary.shape)
        pool.reverse()
    _, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        binary, connectivity, cv2.CV_32S, cv2.CCL_GRANA, labels=out
    )
    return labels, stats


def _components(
    buf: np.ndarray,
    binary: np.ndarray,
    levels: _BufLevels | None,
    params: SegmentParams,
    pool: list[np.ndarray] | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Components of a buffer's binary image: ``(labels, stats)`` as :func:`_label`.

    The adaptive method on 8-bit frames (8-connected, holes not filled: everything after
    the labelling reads only the foreground pixels) gets them from :func:`_label_runs`,
    which makes no label image: ``labels`` is None and the foreground pixels and their
    components go to ``levels`` (``fg``, ``fg_label``) for :meth:`_BufLevels.objects`.
    """
    if (
        levels is not None
        and params.connectivity == 8
        and buf.dtype == np.uint8
        and not params.fill_holes
        and binary.flags.c_contiguous
    ):
        stats, levels.fg, levels.fg_label = _label_runs(binary)
        return None, stats
    return _label(binary, params.connectivity, pool)


def _label_runs(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a sparse 0/1 image from its runs, without a label image.

    The growth mask of a real frame is ~3 % foreground in ~30,000 horizontal runs:
    joining the runs that touch a run of the line above (8-connectivity: columns
    ``c0 - 1 .. c1 + 1``; runs are sorted and disjoint, so those are one slice found by
    ``searchsorted``) and taking the connected components of that graph
    (``scipy.sparse.csgraph``) costs a third of ``connectedComponentsWithStats`` on the
    whole buffer, whose label image (17 MB) and per-pixel statistics cost the same for
    an empty frame. The components are numbered as OpenCV's block-based labelling
    (Grana) numbers them: in the order of their first 2 x 2 block in raster order (two
    pixels of one block always touch, so no two components share a first block), so
    everything downstream is unchanged.

    Returns
    -------
    stats : (n + 1, 5) int32
        OpenCV's layout (left, top, width, height, area); row 0, the background, holds
        the whole buffer and its background pixel count.
    fg : (k,) int64
        Flat indices of the foreground pixels, in raster order.
    fg_label : (k,) int64
        Their component numbers (1..n).
    """
    bh, bw = binary.shape
    fg = np.flatnonzero(binary.view(bool))
    background = np.array([[0, 0, bw, bh, bh * bw - len(fg)]], np.int32)
    if len(fg) == 0:
        return background, fg, np.zeros(0, np.int64)
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    ry, rx = np.divmod(fg, bw)
    brk = np.flatnonzero((np.diff(fg) != 1) | (rx[1:] == 0)) + 1
    start, stop = np.r_[0, brk], np.r_[brk, len(fg)]
    row, c0, c1 = ry[start], rx[start], rx[stop - 1]
    stride = bw + 4  # row keys: columns -1 .. bw of one row never reach the next row's
    skey, ekey = row * stride + c0 + 2, row * stride + c1 + 2
    lo = np.searchsorted(ekey, skey - stride - 1, "left")  # first run above ending >= c0 - 1
    hi = np.searchsorted(skey, ekey - stride + 1, "right")  # past the last starting <= c1 + 1
    n_runs = len(start)
    count = np.maximum(hi - lo, 0)
    # the graph in CSR form directly: run i's neighbours above are lo[i] .. hi[i] - 1
    indptr = np.r_[0, np.cumsum(count)]
    dst = np.arange(indptr[-1]) + np.repeat(lo - indptr[:-1], count)
    graph = csr_matrix(
        (np.ones(len(dst), np.int8), dst, indptr), shape=(n_runs, n_runs), copy=False
    )
    n, run_comp = connected_components(graph, directed=False)
    first = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, run_comp, (row // 2) * bw + c0 // 2)
    rank = np.empty(n, np.int64)
    rank[np.argsort(first)] = np.arange(1, n + 1)
    run_label = rank[run_comp]
    left, top = np.full(n + 1, bw, np.int64), np.full(n + 1, bh, np.int64)
    right, bottom = np.full(n + 1, -1, np.int64), np.full(n + 1, -1, np.int64)
    np.minimum.at(left, run_label, c0)
    np.maximum.at(right, run_label, c1)
    np.minimum.at(top, run_label, row)
    np.maximum.at(bottom, run_label, row)
    run_len = stop - start
    stats = np.empty((n + 1, 5), np.int32)
    stats[:, 0], stats[:, 1] = left, top
    stats[:, 2], stats[:, 3] = right + 1 - left, bottom + 1 - top
    stats[:, 4] = np.bincount(run_label, weights=run_len, minlength=n + 1)
    stats[0] = background
    return stats, fg, np.repeat(run_label, run_len)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes of a bool mask: flood the background from a 1-px frame around it."""
    h, w = mask.shape
    canvas = np.zeros((h + 2, w + 2), np.uint8)
    canvas[1:-1, 1:-1] = mask
    cv2.floodFill(canvas, None, (0, 0), 2)
    return canvas[1:-1, 1:-1] != 2


@dataclass
class _BufLevels:
    """Adaptive levels of a buffer (carried rows of earlier frames + one frame).

    Each buffer row keeps the levels of the frame it came from, so a pixel's decision
    depends only on its own frame and chunked runs equal a whole-video run.
    """

    low: np.ndarray  # (bh, bw) growth level map
    rowmap: np.ndarray  # (bh,) grid row of each buffer row
    background: np.ndarray  # (n, nc) grid rows in use
    sigma: np.ndarray  # (n, nc)
    cell: int
    smooth: np.ndarray | None = None  # the smoothed buffer the levels apply to
    binary: np.ndarray | None = None  # the growth mask
    objs: _Objects | None = None  # the buffer's objects, computed once (see objects())
    fg: np.ndarray | None = None  # flat indices of the growth mask (see _label_runs)
    fg_label: np.ndarray | None = None  # their components, when no label image was made

    @classmethod
    def of_frame(cls, frame: np.ndarray, params: SegmentParams) -> _BufLevels:
        lv = _Levels.of(frame, params)
        cell = _cell_size(frame.shape, params)
        return cls(lv.low, np.arange(frame.shape[0]) // cell, lv.background, lv.sigma, cell)

    def then(self, start: int, nxt: _BufLevels) -> _BufLevels:
        """Rows ``start:`` of this buffer followed by the frame levels ``nxt``."""
        used, remap = np.unique(self.rowmap[start:], return_inverse=True)
        return _BufLevels(
            np.vstack([self.low[start:], nxt.low]),
            np.concatenate([remap.ravel(), nxt.rowmap + len(used)]),
            np.concatenate([self.background[used], nxt.background]),
            np.concatenate([self.sigma[used], nxt.sigma]),
            self.cell,
        )

    def objects(
        self, buf: np.ndarray, labels: np.ndarray, stats: np.ndarray, params: SegmentParams
    ) -> _Objects:
        """Seed test and outline of every component of the buffer, in whole-buffer passes.

        Per component (``labels``): its darkest smoothed value (``np.minimum.at`` over
        the foreground pixels only), background and sigma at its centre; seeded if darker
        than ``b - k_high * s``. Outline: raw pixels darker than
        ``b - max(k_low * s, edge_fraction * (b - peak))``, labelled once for the whole
        buffer; pieces of a component whose outline lies at least twice the growth level
        below the background are separate objects, otherwise one.
        """
        if self.objs is not None:
            return self.objs
        src = self.smooth if self.smooth is not None else buf
        n_low = len(stats)
        bw = buf.shape[1]
        if self.fg is not None and self.fg_label is not None:  # from _label_runs
            fg, lab_fg = self.fg, self.fg_label
        else:
            mask = self.binary if self.binary is not None else (labels != 0).view(np.uint8)
            # flatnonzero of a bool view is ~8x faster than of uint8 (numpy 2); the growth
            # mask is 0/1 (``_binarize_levels``)
            fg = np.flatnonzero(mask.view(bool))
            # np.take (indices in range: mode="wrap" skips the bounds check): the gather
            # of fancy indexing, ~1.5x faster
            lab_fg = np.take(labels.ravel(), fg, mode="wrap")
        # An object is part of its component, so components under the size filter cannot
        # hold one: their pixels (a third of a real frame's, ~7,000 noise specks) are left
        # out of every per-pixel step below.
        lo = params.area_bounds()[0]
        if lo > 1:
            big_enough = (stats[:, cv2.CC_STAT_AREA] >= lo)[lab_fg]
            fg, lab_fg = fg[big_enough], lab_fg[big_enough]
        peak = np.full(n_low, np.iinfo(src.dtype).max, src.dtype)
        np.minimum.at(peak, lab_fg, np.take(src.ravel(), fg, mode="wrap"))
        cy = stats[:, cv2.CC_STAT_TOP] + stats[:, cv2.CC_STAT_HEIGHT] // 2
        cx = stats[:, cv2.CC_STAT_LEFT] + stats[:, cv2.CC_STAT_WIDTH] // 2
        r = self.rowmap[np.minimum(cy, len(self.rowmap) - 1)]
        c = np.minimum(cx // self.cell, self.background.shape[1] - 1)
        bg = self.background[r, c].astype(np.float32)
        sd = self.sigma[r, c].astype(np.float32)
        pk = peak.astype(np.float32)
        seeded = pk < bg - np.float32(params.k_high) * sd
        seeded[0] = False
        contrast = np.float32(params.edge_fraction) * (bg - pk)
        level = bg - np.maximum(np.float32(params.k_low) * sd, contrast)
        keep = seeded[lab_fg] & (np.take(buf.ravel(), fg, mode="wrap") < level[lab_fg])
        kfg, klab = fg[keep], lab_fg[keep]
        # A confident outline (twice the growth level) big enough to hold two objects is
        # cut into its pieces, except that pieces closer than ``split_gap`` px stay one
        # object (a chain's cells, an antenna just under the outline level): the outline
        # pixels of those components, dilated and labelled component by component.
        split = (contrast >= np.float32(2 * params.k_low) * sd) & (
            np.bincount(klab, minlength=n_low) >= 2 * lo
        )
        sp = split[klab]
        # object number of every outline pixel, by lookup tables (no sort): one object per
        # unsplit component, one per dilated piece of the split ones
        whole_lab = np.flatnonzero(np.bincount(klab[~sp], minlength=n_low))
        lut = np.zeros(n_low, np.int64)
        lut[whole_lab] = np.arange(len(whole_lab))
        inv = lut[klab]
        parent, piece = whole_lab, np.zeros(len(whole_lab), np.int64)
        pieces: dict[int, tuple[int, int, np.ndarray]] = {}
        if sp.any():
            # Each split component's outline dilated and labelled in its own box (plus the
            # gap and the crop padding), its corner at even coordinates so the block-based
            # labelling numbers its pieces in the order the whole buffer would. The box's
            # piece map (piece numbers at the outline pixels, 0 elsewhere) is kept for
            # extraction, which slices a piece's crop out of it. ~35 components on a real
            # frame: a few percent of the cost of one map over the box of them all (whose
            # fresh pages alone cost more than the labelling).
            g = params.split_gap
            comps = np.flatnonzero(split)
            box = stats[comps, :4].astype(np.int64)  # the components' boxes hold the outlines
            reach = max(g + 1, params.padding)  # dilation room; a crop's padding
            kernel = np.ones((g + 1, g + 1), np.uint8)
            n_d = 1
            numbered = []
            # A component's outline is its kept pixels (``kfg``): grouped by component
            # (stable, so each group stays in raster order) and set in its box, without
            # reading a label image.
            sp_at = np.flatnonzero(sp)
            by_comp = np.argsort(klab[sp_at], kind="stable")
            sp_pix = kfg[sp_at[by_comp]]
            bounds = np.searchsorted(klab[sp_at[by_comp]], np.r_[comps, n_low]).tolist()
            for j, (c, bx, by, bwd, bht) in enumerate(
                zip(comps.tolist(), *(box[:, i].tolist() for i in range(4)), strict=True)
            ):
                y0b, x0b = max(0, by - reach) & ~1, max(0, bx - reach) & ~1
                y1b, x1b = min(buf.shape[0], by + bht + reach), min(bw, bx + bwd + reach)
                oy, ox = np.divmod(sp_pix[bounds[j] : bounds[j + 1]], bw)
                outline = np.zeros((y1b - y0b, x1b - x0b), bool)
                outline[oy - y0b, ox - x0b] = True
                ref = outline.view(np.uint8)
                if g > 0:
                    ref = cv2.dilate(ref, kernel)
                n_c, loc = cv2.connectedComponentsWithAlgorithm(
                    ref, params.connectivity, cv2.CV_32S, cv2.CCL_GRANA
                )
                np.add(loc, n_d - 1, out=loc)
                loc[~outline] = 0
                numbered.append(loc[outline])  # raster order, as kfg holds them
                pieces[c] = (y0b, x0b, loc)
                n_d += n_c - 1
            # piece number of every split outline pixel: kfg is in raster order, so
            # grouping it by component (stable) lines it up with ``numbered``
            p_sp = np.empty(len(sp_at), np.int64)
            p_sp[by_comp] = np.concatenate(numbered)
            used = np.flatnonzero(np.bincount(p_sp, minlength=n_d))
            plut = np.zeros(n_d, np.int64)
            plut[used] = len(whole_lab) + np.arange(len(used))
            inv[sp] = plut[p_sp]
            owner = np.zeros(n_d, np.int64)
            owner[p_sp] = klab[sp]
            parent = np.concatenate([parent, owner[used]])
            piece = np.concatenate([piece, used])
        ry, rx = np.divmod(kfg, bw)
        k = len(parent)
        big = np.iinfo(np.int64).max
        x0, y0 = np.full(k, big), np.full(k, big)
        x1, y1 = np.full(k, -1), np.full(k, -1)
        np.minimum.at(x0, inv, rx)
        np.minimum.at(y0, inv, ry)
        np.maximum.at(x1, inv, rx)
        np.maximum.at(y1, inv, ry)
        objs = _Objects(
            parent=parent,
            piece=piece,
            x=x0,
            y=y0,
            w=x1 + 1 - x0,
            h=y1 + 1 - y0,
            area=np.bincount(inv, minlength=k),
            pieces=pieces,
            level=level,
            peak=pk,
            seed=np.float32(params.k_high) * sd,
            pixel_row=ry,
            pixel_col=rx,
            pixel_object=inv,
        )
        if pieces:
            _merge_enclosed(objs)
        _drop_fragments(objs)
        self.objs = objs
        return objs


def _drop_fragments(objs: _Objects, big: int = 400) -> None:
    """An object under a tenth of the area of a larger one (of at least ``big`` px) and
    lying inside its box is a fragment of it (an antenna tip or spine the noise cut off
    at the growth level): it is not reported on its own (area set to 0)."""
    large = np.flatnonzero(objs.area >= big)
    if len(large) == 0:
        return
    x0, y0, x1, y1 = objs.x, objs.y, objs.x + objs.w, objs.y + objs.h
    for k in large.tolist():
        inside = (
            (x0 >= x0[k])
            & (y0 >= y0[k])
            & (x1 <= x1[k])
            & (y1 <= y1[k])
            & (objs.area < 0.1 * objs.area[k])
            & (objs.area > 0)
        )
        objs.area[inside] = 0


def _merge_enclosed(objs: _Objects) -> None:
    """Pieces of a split outline inside the box (+4 px) of its largest piece belong to it
    (fragments of a large textured body the noise cut off); they join that object, and
    are marked with area 0 so they are not emitted on their own."""
    split = np.flatnonzero(objs.piece > 0)
    if len(split) < 2:
        return
    parents = objs.parent[split]
    order = np.lexsort((-objs.area[split], parents))
    split, parents = split[order], parents[order]
    starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]])
    ends = np.r_[starts[1:], len(split)]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if b - a < 2:
            continue
        main, rest = split[a], split[a + 1 : b]
        x, y = objs.x[main] - 4, objs.y[main] - 4  # 4 px of slack around the box
        x1, y1 = x + objs.w[main] + 8, y + objs.h[main] + 8
        inside = rest[
            (objs.x[rest] >= x)
            & (objs.y[rest] >= y)
            & (objs.x[rest] + objs.w[rest] <= x1)
            & (objs.y[rest] + objs.h[rest] <= y1)
        ]
        if len(inside):
            objs.area[main] += objs.area[inside].sum()
            objs.area[inside] = 0
            objs.merged[int(main)] = np.r_[objs.piece[main], objs.piece[inside]]
            if objs.owner is None:
                objs.owner = np.arange(len(objs.parent))
            objs.owner[inside] = main


@dataclass
class _Objects:
    """The adaptive objects of a buffer: component (``parent``), piece of its outline
    (``piece``, a number in its component's map in ``pieces``; 0 = the whole outline),
    bbox and area. An object's mask is its component's pixels darker than
    ``level[parent]`` (and in its piece)."""

    parent: np.ndarray
    piece: np.ndarray
    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    h: np.ndarray
    area: np.ndarray
    pieces: dict[int, tuple[int, int, np.ndarray]]  # split component -> top, left, piece map
    level: np.ndarray  # outline level per component
    peak: np.ndarray  # darkest smoothed value per component
    seed: np.ndarray  # seed depth (k_high * sigma) per component
    merged: dict[int, np.ndarray] = field(default_factory=dict)  # object -> its pieces
    # every outline pixel (raster order): row, column, object; ``owner`` maps an object
    # merged into a larger piece (``_merge_enclosed``) to that piece, the others to themselves
    pixel_row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pixel_col: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pixel_object: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    owner: np.ndarray | None = None

    def piece_map(self, component: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Piece numbers of a split component's outline pixels in buffer rows ``y0:y1``,
        columns ``x0:x1`` (a crop of one of its pieces: inside the map's box)."""
        top, left, pmap = self.pieces[component]
        return pmap[y0 - top : y1 - top, x0 - left : x1 - left]


def _extract(
    buf: np.ndarray,
    labels: np.ndarray,
    stats: np.ndarray,
    keep: np.ndarray,
    buf_line: int,
    frame_height: int,
    params: SegmentParams,
    levels: _BufLevels | None = None,
) -> Rois:
    """Crops, masks and positions of the components ``keep`` of a labelled buffer.

    With ``levels`` (adaptive method) the objects are the seeded outlines of those
    components (:meth:`_BufLevels.objects`); then the artefact rule and the size filter
    apply to each final outline.
    """
    counts = {"streaks": 0, "flicker_bands": 0}
    if len(keep) == 0:
        return Rois(artefacts=counts)
    p = params.padding
    bh, bw = buf.shape
    if levels is None:
        st = stats[keep].astype(np.int64)
        xs, ys, ws, hs, areas = (st[:, i].tolist() for i in range(5))
        ids, pieces = keep.tolist(), [-2] * len(keep)
        level = peak = seed = []
    else:
        objs = levels.objects(buf, labels, stats, params)
        lo, hi = params.area_bounds()
        sel = np.flatnonzero(np.isin(objs.parent, keep) & (objs.area >= lo) & (objs.area <= hi))
        sel = sel[np.lexsort((objs.x[sel], objs.y[sel]))]
        if buf.dtype == np.uint8 and not params.fill_holes:
            binary = levels.binary if levels.binary is not None else labels
            return _extract_gathered(buf, binary, objs, sel, buf_line, frame_height, params)
        xs, ys, ws, hs, areas = (
            getattr(objs, k)[sel].tolist() for k in ("x", "y", "w", "h", "area")
        )
        ids, pieces = objs.parent[sel].tolist(), objs.piece[sel].tolist()
        obj_ids = sel.tolist()
        # per-component figures as Python floats: numpy scalars cost ~1 us per use here
        level, peak, seed = objs.level.tolist(), objs.peak.tolist(), objs.seed.tolist()
    out: list[tuple[int, ...]] = []
    crops, masks = [], []
    drop = params.drop_artefacts
    streak_w, streak_h = params.streak_max_width + 1, params.streak_min_length
    flicker_w, flicker_h = params.flicker_min_span * bw, params.flicker_max_lines
    for i in range(len(ids)):
        x, y, w, h, area, k = xs[i], ys[i], ws[i], hs[i], areas[i], ids[i]
        if drop:
            if w <= streak_w and h >= max(streak_h, 6 * w):
                counts["streaks"] += 1
                continue
            if w >= flicker_w and h <= flicker_h:
                counts["flicker_bands"] += 1
                continue
        y0, x0 = max(y - p, 0), max(x - p, 0)
        sl = (slice(y0, min(y + h + p, bh)), slice(x0, min(x + w + p, bw)))
        piece = pieces[i]
        lab = labels[sl]
        crop = buf[sl]
        if piece == -2:
            m = lab == k
        else:
            m = (lab == k) & (crop < level[k])
            if piece > 0:
                both = objs.merged.get(obj_ids[i]) if objs.merged else None
                pz = objs.piece_map(k, sl[0].start, sl[0].stop, sl[1].start, sl[1].stop)
                m &= pz == piece if both is None else np.isin(pz, both)
        if drop and h >= max(streak_h, 6 * params.streak_max_width) and w <= 8:
            # a streak the noise widened: 80% of its pixels in streak_max_width columns
            per_col = np.count_nonzero(m, axis=0)
            kw = min(params.streak_max_width, len(per_col))
            best = int(np.convolve(per_col, np.ones(kw, np.int64), "valid").max())
            if best >= 0.8 * per_col.sum():
                counts["streaks"] += 1
                continue
        if piece != -2:
            # The seed test again against the background right around the object (the
            # crop's pixels outside every component): a flat-field residual a few grey
            # levels deep over tens of columns is not an organism.
            ring = crop[lab == 0]
            n_ring = len(ring)
            if n_ring >= 8:
                local = float(np.partition(ring, n_ring // 2)[n_ring // 2])  # the median
                if local - peak[k] < seed[k]:
                    continue
        if params.fill_holes:
            m = _fill_holes(m)
            area = int(np.count_nonzero(m))
        crops.append(crop.copy())
        masks.append(m)
        out.append((x, y, w, h, area, y - y0, x - x0))
    if not out:
        return Rois(artefacts=counts)
    x, y, w, h, area, pad_top, pad_left = (np.array(c, np.int64) for c in zip(*out, strict=True))
    line = buf_line + y
    return Rois(
        frame=line // frame_height,
        line=line,
        row=line % frame_height,
        column=x,
        height=h,
        width=w,
        area_px=area,
        pad_top=pad_top,
        pad_left=pad_left,
        crops=crops,
        masks=masks,
        artefacts=counts,
    )


def _extract_gathered(
    buf: np.ndarray,
    binary: np.ndarray,
    objs: _Objects,
    sel: np.ndarray,
    buf_line: int,
    frame_height: int,
    params: SegmentParams,
) -> Rois:
    """:func:`_extract` for adaptive objects of a uint8 buffer, in whole-batch passes.

    The same rules and results as the per-object loop (crops, masks and positions to the
    bit), but every object's padded box is gathered at once (one flat index over all
    boxes, ~600 px per object on real frames): masks by scattering the objects' outline
    pixels (kept by :meth:`_BufLevels.objects`) into their boxes, the ring median of the
    background test as one count per object (ring pixels at or under the largest grey
    value that would fail it), crops and masks as contiguous views of the two gathered
    arrays. Python only loops over the few possible widened streaks. A real frame holds
    ~500 objects: the loop's ~10 numpy calls per object cost more than the pixels.
    """
    counts = {"streaks": 0, "flicker_bands": 0}
    p = params.padding
    bh, bw = buf.shape
    x, y, w, h = (objs.x[sel], objs.y[sel], objs.w[sel], objs.h[sel])
    area = objs.area[sel]
    ids = objs.parent[sel]
    ok = np.ones(len(sel), bool)
    if params.drop_artefacts:
        streak = (w <= params.streak_max_width + 1) & (
            h >= np.maximum(params.streak_min_length, 6 * w)
        )
        flicker = ~streak & (w >= params.flicker_min_span * bw) & (h <= params.flicker_max_lines)
        counts["streaks"] += int(streak.sum())
        counts["flicker_bands"] += int(flicker.sum())
        ok &= ~streak & ~flicker
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return Rois(artefacts=counts)
    x, y, w, h, area, ids, objn = (a[idx] for a in (x, y, w, h, area, ids, sel))
    y0, x0 = np.maximum(y - p, 0), np.maximum(x - p, 0)
    y1, x1 = np.minimum(y + h + p, bh), np.minimum(x + w + p, bw)
    ch, cw = y1 - y0, x1 - x0
    sizes = ch * cw
    n = len(idx)
    # One flat index over all boxes, row segment by row segment: pixel t of the output
    # is buffer pixel t + (segment's buffer start - segment's output start).
    row_roi = np.repeat(np.arange(n), ch)
    first_row = np.cumsum(ch) - ch
    seg_row = y0[row_roi] + (np.arange(len(row_roi)) - first_row[row_roi])
    seg_len = cw[row_roi]
    seg_out = np.cumsum(seg_len) - seg_len
    seg_shift = seg_row * bw + x0[row_roi] - seg_out
    total = int(sizes.sum())
    flat = np.arange(total, dtype=np.int64) + np.repeat(seg_shift, seg_len)
    # np.take (mode="wrap": indices in range, no bounds check): fancy indexing's gather, ~1.5x
    crop_px = np.take(buf.ravel(), flat, mode="wrap")
    starts = np.cumsum(sizes) - sizes
    ends = starts + sizes
    # Masks: every object's outline pixels (kept by ``objects``) scattered into its box,
    # instead of gathering the label image over all boxes and comparing. An object merged
    # into a larger piece lends its pixels to that piece (those inside its crop, as the
    # piece-map test of ``_extract`` keeps them).
    roi_of = np.full(len(objs.parent), -1, np.int64)
    roi_of[objn] = np.arange(n)
    pix_obj = objs.pixel_object if objs.owner is None else objs.owner[objs.pixel_object]
    pix_roi = roi_of[pix_obj]
    mine = np.flatnonzero(pix_roi >= 0)
    r = pix_roi[mine]
    ly = objs.pixel_row[mine] - y0[r]
    lx = objs.pixel_col[mine] - x0[r]
    pos = starts[r] + ly * cw[r] + lx
    if objs.owner is not None:
        pos = pos[(ly >= 0) & (ly < ch[r]) & (lx >= 0) & (lx < cw[r])]
    mask_px = np.zeros(total, bool)
    mask_px[pos] = True
    # Ring median test (the crop's pixels outside every component): the object is a
    # flat-field residual when ``median(ring) - peak < seed``. With the ring's median the
    # element at n // 2 of its sorted values (as np.partition gives it), that holds iff
    # more than n // 2 ring pixels are <= c, the largest grey value v with
    # ``v - peak < seed`` (the same float64 comparison): one count per object instead of
    # a 256-bin histogram per object.
    ring = np.take(binary.ravel(), flat, mode="wrap") == 0  # outside every growth component
    peak = objs.peak[ids].astype(np.float64)
    seed = objs.seed[ids].astype(np.float64)
    c = np.clip(np.floor(peak + seed), -2, 256)
    for _ in range(2):  # float rounding of peak + seed: settle on the exact boundary
        c = np.where(c - peak < seed, c, c - 1)
        c = np.where((c + 1 <= 255) & (c + 1 - peak < seed), c + 1, c)
    # each object's box pixels are one contiguous range of the gathered arrays: both
    # counts by a sum over each range (np.add.reduceat), no per-pixel object index
    below = ring & (crop_px <= np.repeat(np.clip(c, 0, 255).astype(np.uint8), sizes))
    n_ring = np.add.reduceat(ring.view(np.uint8), starts, dtype=np.int64)
    n_below = np.where(c >= 0, np.add.reduceat(below.view(np.uint8), starts, dtype=np.int64), 0)
    ok = ~((n_ring >= 8) & (n_below > n_ring // 2))
    widened = np.zeros(n, bool)
    if params.drop_artefacts:
        widened = (h >= max(params.streak_min_length, 6 * params.streak_max_width)) & (w <= 8)
    chl, cwl, sl_, el_ = ch.tolist(), cw.tolist(), starts.tolist(), ends.tolist()
    for i in np.flatnonzero(widened).tolist():
        # a streak the noise widened: 80% of its pixels in streak_max_width columns
        per_col = np.count_nonzero(mask_px[sl_[i] : el_[i]].reshape(chl[i], cwl[i]), axis=0)
        kw = min(params.streak_max_width, len(per_col))
        if int(np.convolve(per_col, np.ones(kw, np.int64), "valid").max()) >= 0.8 * per_col.sum():
            counts["streaks"] += 1
            ok[i] = False
    kept = np.flatnonzero(ok).tolist()
    # crops and masks: contiguous views of the gathered arrays, one comprehension each
    shapes = [(sl_[i], el_[i], (chl[i], cwl[i])) for i in kept]
    crops = [crop_px[a:b].reshape(shape) for a, b, shape in shapes]
    masks = [mask_px[a:b].reshape(shape) for a, b, shape in shapes]
    if not kept:
        return Rois(artefacts=counts)
    k = np.array(kept, np.int64)
    line = buf_line + y[k]
    return Rois(
        frame=line // frame_height,
        line=line,
        row=line % frame_height,
        column=x[k],
        height=h[k],
        width=w[k],
        area_px=area[k],
        pad_top=(y - y0)[k],
        pad_left=(x - x0)[k],
        crops=crops,
        masks=masks,
        artefacts=counts,
    )


def _size_ok(stats: np.ndarray, params: SegmentParams) -> np.ndarray:
    lo, hi = params.area_bounds()
    area = stats[:, cv2.CC_STAT_AREA]
    ok = (area >= lo) & (area <= hi)
    ok[0] = False  # background
    return ok


def segment_frame(
    frame: np.ndarray, params: SegmentParams | None = None, *, frame_index: int = 0
) -> Rois:
    """Objects lying fully inside one flat-fielded frame (edge-touching ones are dropped).

    Use :func:`segment_stream` for line-scan video, where objects cross frame edges.

    Parameters
    ----------
    frame : (H, W) uint8 or uint16
        Flat-fielded, background bright, objects dark.
    params : SegmentParams
    frame_index : int
        Written to ``Rois.frame`` and used for ``Rois.line``.
    """
    params = params or SegmentParams()
    _check_frame(frame)
    levels, binary = _binarize_levels(frame, params)
    labels, stats = _components(frame, binary, levels, params)
    x, y, w, h = (stats[:, i] for i in range(4))
    inside = (x > 0) & (y > 0) & (x + w < frame.shape[1]) & (y + h < frame.shape[0])
    keep = np.flatnonzero(_size_ok(stats, params) & inside)
    height = frame.shape[0]
    return _extract(frame, labels, stats, keep, frame_index * height, height, params, levels)


def _binarize_levels(
    frame: np.ndarray, params: SegmentParams, carried: tuple[_BufLevels, int] | None = None
) -> tuple[_BufLevels | None, np.ndarray]:
    """Binary image of a buffer and, for ``adaptive``, its levels (``carried``: the last
    buffer's levels and the row where its carry starts; ``frame`` is then the buffer, whose
    last rows are the new frame)."""
    if params.method != "adaptive":
        return None, binarize(frame, params)
    src = _smoothed(frame, params)
    if carried is None:
        levels = _BufLevels.of_frame(src, params)
    else:
        prev, start = carried
        new_rows = frame.shape[0] - (prev.low.shape[0] - start)
        levels = prev.then(start, _BufLevels.of_frame(src[-new_rows:], params))
    levels.smooth = src
    # 0/1, not 0/255: labelling reads any non-zero as foreground, and a 0/1 mask is a
    # bool array for ``objects`` (np.less writes it in one pass, faster than cv2.compare)
    levels.binary = _close(np.less(src, levels.low).view(np.uint8), params.closing)
    return levels, levels.binary


# --------------------------------------------------------------------------- stream


def segment_stream(
    frames: Iterable[tuple[int, np.ndarray]],
    params: SegmentParams | None = None,
    *,
    first_owned: int | None = None,
    stop_owned: int | None = None,
) -> Iterator[Rois]:
    """Segment consecutive line-scan frames; objects crossing frame cuts come out whole, once.

    The bottom rows of each frame that hold unfinished objects (those reaching the last
    ``padding + 1`` rows) are carried on top of the next frame and labelled again together
    with it. An object is emitted from the first buffer in which it is complete, with its
    crop assembled from both frames.

    Chunk semantics: only objects whose top row lies in frames ``[first_owned, stop_owned)``
    are yielded. Frames before ``first_owned`` are context: pass the frame before the chunk
    (``first_owned - 1``) and objects starting there, or reaching into the chunk from it,
    are recognised as not owned, and top padding is identical to a whole-video run. If the
    input starts exactly at ``first_owned > 0``, objects touching the top edge of that first
    frame are dropped (they may have started in the previous frame). After frame
    ``stop_owned - 1`` the iterator is read further only while an owned object is still
    open, then the generator returns without reading more. So the union over chunks
    ``[0, k), [k, 2k), ...`` (each fed from one frame earlier) equals the whole-video result.

    Parameters
    ----------
    frames : iterable of (index, frame)
        Flat-fielded 2-D uint8/uint16 frames of equal shape, e.g. from
        ``video.iter_frames`` through ``FlatField.correct``. A gap in the indices (a lost
        frame) closes all open objects at the gap.
    params : SegmentParams
    first_owned, stop_owned : int or None
        Owned frame range; default: from the first frame read, to the end of the input.

    Yields
    ------
    Rois
        One batch per frame read (possibly empty), holding the objects completed when that
        frame arrived; plus, when the input ends with owned objects still open, one final
        batch with them (cut at the end of the video).
    """
    params = params or SegmentParams()
    pad = params.padding
    it = iter(frames)
    state: _Pending | None = None  # the last buffer and its still-open components
    prev_index: int | None = None
    owned_lo = first_owned
    frame_h = 0
    label_pool = [np.zeros(0, np.int32), np.zeros(0, np.int32)]  # see _label
    while True:
        if (
            stop_owned is not None
            and prev_index is not None
            and prev_index + 1 >= stop_owned
            and (state is None or not state.open_owned)
        ):
            return
        try:
            index, frame = next(it)
        except StopIteration:
            if state is not None:
                yield state.flush(params)
            return
        _check_frame(frame, f"frame {index}")
        if owned_lo is None:
            owned_lo = index
        if prev_index is not None and (
            index != prev_index + 1
            or frame.shape[1] != state.buf.shape[1]
            or frame.shape[0] != frame_h
        ):
            # Discontinuity: what was open ends here, the new frame starts afresh.
            yield state.flush(params)
            state = None
        frame_h = frame.shape[0]
        lo_line = owned_lo * frame_h
        hi_line = math.inf if stop_owned is None else stop_owned * frame_h
        if state is None:
            buf, carry_len, buf_line = frame, 0, index * frame_h
            carried = None
        else:
            carry = state.carry()
            carry_len = carry.shape[0]
            buf = np.vstack([carry, frame])
            buf_line = index * frame_h - carry_len
            carried = None if state.levels is None else (state.levels, state.carry_start())
        levels, binary = _binarize_levels(buf, params, carried)
        labels, stats = _components(buf, binary, levels, params, label_pool)
        top = stats[:, cv2.CC_STAT_TOP].astype(np.int64)
        bottom = top + stats[:, cv2.CC_STAT_HEIGHT] - 1
        bh = buf.shape[0]
        is_obj = np.ones(len(stats), bool)
        is_obj[0] = False
        open_ = is_obj & (bottom >= bh - 1 - pad)
        if state is not None:
            is_obj &= bottom >= carry_len - 1 - pad  # not already emitted from the last buffer
        elif index == owned_lo and index > 0:
            is_obj &= top > 0  # may have started in the unseen previous frame
        gline = buf_line + top
        owned = (gline >= lo_line) & (gline < hi_line)
        done = np.flatnonzero(is_obj & ~open_ & owned & _size_ok(stats, params))
        out = _extract(buf, labels, stats, done, buf_line, frame_h, params, levels)
        pending = np.flatnonzero(is_obj & open_)
        state = _Pending(
            buf, labels, stats, pending, buf_line, frame_h, owned[pending], pad, levels
        )
        if bh - state.carry_start() > params.max_object_lines:
            # A runaway object: cut it here rather than carry without bound.
            out = Rois.concat([out, state.flush(params)])
            state = _Pending(
                buf,
                labels,
                stats,
                pending[:0],
                buf_line,
                frame_h,
                owned[pending[:0]],
                pad,
                levels,
            )
        prev_index = index
        yield out


@dataclass
class _Pending:
    """The last labelled buffer and its components still open at its bottom edge."""

    buf: np.ndarray
    labels: np.ndarray | None  # None: no label image was made (see _components)
    stats: np.ndarray
    pending: np.ndarray
    buf_line: int
    frame_h: int
    pending_owned: np.ndarray
    pad: int
    levels: _BufLevels | None = None

    @property
    def open_owned(self) -> bool:
        return bool(self.pending_owned.any())

    def carry_start(self) -> int:
        bh = self.buf.shape[0]
        start = bh - self.pad
        if len(self.pending):
            start = min(start, int(self.stats[self.pending, cv2.CC_STAT_TOP].min()) - self.pad)
        return max(0, start)

    def carry(self) -> np.ndarray:
        return self.buf[self.carry_start() :]

    def flush(self, params: SegmentParams) -> Rois:
        """Emit the open owned components as they are (end of input or a gap)."""
        keep = self.pending[self.pending_owned]
        keep = keep[_size_ok(self.stats, params)[keep]]
        return _extract(
            self.buf,
            self.labels,
            self.stats,
            keep,
            self.buf_line,
            self.frame_h,
            params,
            self.levels,
        )


# --------------------------------------------------------------------------- standalone ROIs


def object_mask(crop: np.ndarray) -> np.ndarray:
    """Mask of the main object in a standalone ROI image (FlowCam, IFCB, EcoTaxa exports).

    Polarity is detected from the border (the background): dark-on-bright (ISIIS, FlowCam)
    or bright-on-dark (IFCB dark field). Otsu's threshold on a lightly smoothed image, then
    the largest 8-connected component with its holes filled.

    Parameters
    ----------
    crop : (h, w) or (h, w, 3|4) uint8/uint16
        Gray or BGR(A) image holding one object on a roughly uniform background.

    Returns
    -------
    (h, w) bool
        All False when the image is uniform.
    """
    if not isinstance(crop, np.ndarray) or crop.ndim not in (2, 3) or crop.size == 0:
        raise ValueError(
            f"crop must be a non-empty 2-D or 3-D image array, got "
            f"{getattr(crop, 'shape', type(crop).__name__)}"
        )
    img = crop
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.shape[2] in (3, 4):
            img = cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_BGR2GRAY)
        else:
            raise ValueError(f"crop must have 1, 3 or 4 channels, got {img.shape[2]}")
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img >> 8).astype(np.uint8)
        elif np.issubdtype(img.dtype, np.floating):
            img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        else:
            raise ValueError(f"crop dtype must be uint8, uint16 or float, got {img.dtype}")
    h, w = img.shape
    if int(img.max()) == int(img.min()):
        return np.zeros((h, w), bool)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    dark_objects = np.median(border) >= np.mean(img)
    work = 255 - img if dark_objects else img  # numpy: 8x cheaper than cv2 on small crops
    if min(h, w) >= 5:
        work = cv2.GaussianBlur(work, (3, 3), 0)
    return main_object(work)


def main_object(work: np.ndarray) -> np.ndarray:
    """Mask of the object of a standalone crop given bright on dark (``work``, uint8,
    smoothed): Otsu's threshold, the largest 8-connected component, holes filled.

    EcoTaxa-style vignettes (ZooScan, UVP5, FlowCam exports) carry a ruler under the
    organism: a black bar a few px tall and its legend ("1 mm") just above it. Darker
    than any organism, it was the "object" of 81 of the 400 ZooScan template vignettes
    in ``shared/data``, and with it passed over, the legend's letters were the object of
    58 faint ones (Otsu's level sat between the black ruler and the background). So a
    ruler (:func:`_ruler`) is taken out of the crop and Otsu's level found again.
    """
    h, w = work.shape
    # 16-bit labels are twice as fast on small crops; 8-connected components are at least
    # a pixel apart, so a crop holds at most ~h*w/4 of them
    label_type = cv2.CV_16U if h * w < 4 * 65535 else cv2.CV_32S
    for look_for_ruler in (True, False):
        binary = cv2.threshold(work, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]
        n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
            binary, 8, label_type, cv2.CCL_DEFAULT
        )
        if n <= 1:
            return np.zeros((h, w), bool)
        ruler = _ruler(stats, h) if look_for_ruler and n > 2 else []  # bar + legend
        if not ruler:
            break
        gone = cv2.dilate(np.isin(labels, ruler).view(np.uint8), np.ones((3, 3), np.uint8))
        work = np.where(gone != 0, np.uint8(0), work)
    main = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return _fill_holes(labels == main)


def _ruler(stats: np.ndarray, height: int) -> list[int]:
    """Labels of an EcoTaxa-style ruler among a crop's components (``stats`` as OpenCV's,
    row 0 the background), or none.

    The bar: a filled (>= 85 % of its box) horizontal rectangle at most 6 px tall and at
    least 5x (and 10 px) as wide, reaching into the crop's lower half; its legend:
    components at most 16 px tall within the 16 px (or 8 bar heights) above the bar,
    over its columns (4 px either side, or 40 px from its left end for a short bar). A
    bar without a legend is no ruler (a thin organism low in its crop). ZooProcess
    draws a 2 px bar of 1 mm with 8 px letters 4 px above it.
    """
    boxes = stats.tolist()  # a few components: plain Python beats NumPy's per-call cost
    for b, (left, top, wide, tall, area) in enumerate(boxes):
        if not (
            b > 0
            and tall <= 6
            and wide >= max(10, 5 * tall)
            and 100 * area >= 85 * wide * tall
            and 2 * (top + tall) >= height
        ):
            continue
        band_top = top - max(16, 8 * tall)
        x0, x1 = left - 4, max(left + wide, left + 40) + 4
        legend = [
            i
            for i, (x, y, w, h, _) in enumerate(boxes)
            if i > 0 and band_top <= y and y + h <= top and h <= 16 and x0 <= x and x + w <= x1
        ]
        if legend:
            return [b, *legend]
    return []
