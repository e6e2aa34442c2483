"""Synthetic ISIIS-like plankton imagery with exact ground truth.

Real ISIIS video cannot be shipped with the project, and even if it could it has no
per-object truth. This module draws five morphological classes of plankton and particles
(copepods with antennae, spiny protists, diatom chains, larval fish, marine snow) and lays
them on a continuous line-scan "tape" that is cut into frames, so objects cross frame
boundaries exactly as they do in ISIIS. The tape is then degraded the way a line-scan
camera degrades it: per-column gain stripes, a 1-D vignetting profile across the sensor,
slow background drift along the tape, and sensor noise.

Darkness model: every organism is a *darkness map* ``d`` in [0, 1]; the raw camera value is
``background(row, col) * (1 - d) + noise``. A perfect flat-field therefore gives
``255 * (1 - d)``. The ground-truth mask of an organism is ``d >= MASK_LEVEL``; with the
default flat-field level (255) that is every pixel darker than ``255 * (1 - MASK_LEVEL)``
= 191, which is what the default static threshold of :mod:`plankline.imaging.segment`
looks for. Ground-truth area therefore means "the area visible at quarter contrast".

Everything is reproducible from ``seed``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from plankline.imaging.flatfield import blur_grid, close_grid

SHAPE_CLASSES: tuple[str, ...] = (
    "copepod",
    "protist",
    "diatom_chain",
    "larval_fish",
    "marine_snow",
)

#: Darkness at and above which a pixel belongs to the organism's ground-truth mask.
MASK_LEVEL = 0.25

#: Class-specific body-length ranges (px) for the ROI training library. They overlap on
#: purpose: a classifier must use shape, not size alone.
LIBRARY_SIZE_RANGES: dict[str, tuple[float, float]] = {
    "copepod": (24.0, 160.0),
    "protist": (16.0, 110.0),
    "diatom_chain": (30.0, 200.0),
    "larval_fish": (50.0, 240.0),
    "marine_snow": (12.0, 180.0),
}

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_DF_GAIN, _DF_BLACK = 1.4, 10.0  # dark-field: organism gain, black level
_ONE = 1 << _SHIFT


# --------------------------------------------------------------------------- drawing


class _Pen:
    """Draws into a supersampled uint8 darkness canvas centred on (0, 0) in body units.

    Coordinates are in output pixels relative to the canvas centre; the pen applies the
    supersampling factor and cv2's sub-pixel shift so shapes stay smooth at any size.
    """

    def __init__(self, half: int, ss: int) -> None:
        self.ss = ss
        self.half = half
        side = (2 * half + 1) * ss
        self.canvas = np.zeros((side, side), np.uint8)
        self.c = (half + 0.5) * ss

    def _pt(self, x: float, y: float) -> tuple[int, int]:
        return (round((self.c + x * self.ss) * _ONE), round((self.c + y * self.ss) * _ONE))

    def _v(self, darkness: float) -> int:
        return int(np.clip(round(darkness * 255), 0, 255))

    def ellipse(self, x: float, y: float, a: float, b: float, angle: float, d: float) -> None:
        axes = (max(1, round(a * self.ss * _ONE)), max(1, round(b * self.ss * _ONE)))
        cv2.ellipse(
            self.canvas,
            self._pt(x, y),
            axes,
            math.degrees(angle),
            0,
            360,
            self._v(d),
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )

    def circle(self, x: float, y: float, r: float, d: float) -> None:
        cv2.circle(
            self.canvas,
            self._pt(x, y),
            max(1, round(r * self.ss * _ONE)),
            self._v(d),
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )

    def ring(self, x: float, y: float, r: float, width: float, d: float) -> None:
        cv2.circle(
            self.canvas,
            self._pt(x, y),
            max(1, round(r * self.ss * _ONE)),
            self._v(d),
            max(1, round(width * self.ss)),
            cv2.LINE_AA,
            _SHIFT,
        )

    def polyline(self, pts: np.ndarray, width: float, d: float) -> None:
        p = np.round((self.c + pts * self.ss) * _ONE).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(
            self.canvas, [p], False, self._v(d), max(1, round(width * self.ss)), cv2.LINE_AA, _SHIFT
        )

    def polygon(self, pts: np.ndarray, d: float) -> None:
        p = np.round((self.c + pts * self.ss) * _ONE).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(self.canvas, [p], self._v(d), cv2.LINE_AA, _SHIFT)

    def darkness(self) -> np.ndarray:
        side = 2 * self.half + 1
        if self.ss == 1:
            out = self.canvas.astype(np.float32)
        else:
            out = cv2.resize(self.canvas, (side, side), interpolation=cv2.INTER_AREA).astype(
                np.float32
            )
        return out * np.float32(1 / 255)


def _rot(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]], dtype=np.float64)


def _curve(
    rng: np.random.Generator,
    start: np.ndarray,
    direction: float,
    length: float,
    bend: float,
    n: int = 12,
) -> np.ndarray:
    """A smooth random curve (antenna, spine, chain axis) of given length from ``start``."""
    steps = np.full(n, length / n)
    turn = np.cumsum(rng.normal(bend / n, abs(bend) / (2 * n) + 1e-3, n))
    ang = direction + turn
    xy = np.cumsum(np.stack([np.cos(ang) * steps, np.sin(ang) * steps], 1), 0)
    return np.vstack([start, start + xy])


def _draw_copepod(pen: _Pen, rng: np.random.Generator, size: float) -> None:
    body_len = size * rng.uniform(0.55, 0.65)
    width = body_len * rng.uniform(0.32, 0.45)
    line_w = max(1.5, size * 0.018)
    # Antennae first (fainter), from the head forwards/outwards, curving back.
    head = np.array([body_len * 0.38, 0.0])
    for side in (-1, 1):
        ang = side * rng.uniform(0.9, 1.5)
        pts = _curve(
            rng,
            head + np.array([0.0, side * width * 0.25]),
            ang,
            size * rng.uniform(0.45, 0.75),
            side * rng.uniform(0.4, 1.2),
        )
        pen.polyline(pts, line_w, rng.uniform(0.55, 0.7))
    # Swimming legs: short strokes under the prosome.
    for k in range(rng.integers(3, 6)):
        x = body_len * (0.15 - 0.12 * k)
        for side in (-1, 1):
            pts = np.array(
                [[x, side * width * 0.3], [x - size * 0.05, side * (width * 0.5 + size * 0.07)]]
            )
            pen.polyline(pts, line_w, 0.45)
    # Urosome (tail) with furca.
    tail_len = size * rng.uniform(0.28, 0.36)
    tail = np.array(
        [[-body_len * 0.4, 0.0], [-body_len * 0.4 - tail_len, rng.normal(0, size * 0.03)]]
    )
    pen.polyline(tail, max(1.5, width * 0.22), rng.uniform(0.6, 0.75))
    for side in (-1, 1):
        end = tail[1]
        pen.polyline(
            np.array([end, end + np.array([-size * 0.06, side * size * 0.04])]), line_w, 0.5
        )
    # Prosome: dark, with a darker gut/eye.
    pen.ellipse(0, 0, body_len / 2, width / 2, rng.normal(0, 0.05), rng.uniform(0.65, 0.85))
    pen.circle(body_len * 0.38, 0, max(1.0, width * 0.12), 0.95)
    pen.ellipse(-body_len * 0.05, 0, body_len * 0.22, width * 0.15, 0, rng.uniform(0.8, 0.95))


def _draw_protist(pen: _Pen, rng: np.random.Generator, size: float) -> None:
    r = size * rng.uniform(0.26, 0.34)
    n_spines = int(rng.integers(8, 22))
    spine_len = size * rng.uniform(0.12, 0.2)
    line_w = max(1.5, size * 0.015)
    phase = rng.uniform(0, 2 * math.pi)
    for k in range(n_spines):
        a = phase + 2 * math.pi * k / n_spines + rng.normal(0, 0.05)
        p0 = np.array([math.cos(a), math.sin(a)]) * r * 0.95
        p1 = np.array([math.cos(a), math.sin(a)]) * (r + spine_len * rng.uniform(0.7, 1.1))
        pen.polyline(np.vstack([p0, p1]), line_w, rng.uniform(0.4, 0.55))
    pen.circle(0, 0, r * 1.12, 0.2)  # faint halo (below the mask level)
    pen.circle(0, 0, r, rng.uniform(0.45, 0.6))
    pen.ring(0, 0, r * 0.97, max(1.0, r * 0.08), rng.uniform(0.7, 0.85))
    pen.circle(
        rng.normal(0, r * 0.15),
        rng.normal(0, r * 0.15),
        r * rng.uniform(0.3, 0.45),
        rng.uniform(0.75, 0.95),
    )


def _draw_diatom_chain(pen: _Pen, rng: np.random.Generator, size: float) -> None:
    n_cells = int(rng.integers(3, 11))
    axis = _curve(rng, np.array([-size / 2, 0.0]), 0.0, size, rng.normal(0, 0.8), n=n_cells * 4)
    idx = np.linspace(0, len(axis) - 1, n_cells).round().astype(int)
    cell_len = size / n_cells * rng.uniform(0.6, 0.85)
    cell_w = max(2.0, min(cell_len * rng.uniform(0.6, 1.2), size * 0.2))
    pen.polyline(axis, max(1.0, cell_w * 0.18), 0.45)  # connecting girdle
    d_cell = rng.uniform(0.5, 0.7)
    for i in idx:
        j = min(i + 1, len(axis) - 1)
        k = max(i - 1, 0)
        ang = math.atan2(axis[j, 1] - axis[k, 1], axis[j, 0] - axis[k, 0])
        pen.ellipse(axis[i, 0], axis[i, 1], cell_len / 2, cell_w / 2, ang, d_cell)
        pen.circle(axis[i, 0], axis[i, 1], max(0.8, cell_w * 0.15), min(1.0, d_cell + 0.25))


def _draw_larval_fish(pen: _Pen, rng: np.random.Generator, size: float) -> None:
    body_w = size * rng.uniform(0.09, 0.14)
    t = np.linspace(0, 1, 24)
    bend = rng.normal(0, 0.1) * size
    centre_x = size * (0.5 - t)
    centre_y = bend * np.sin(np.pi * t) ** 2
    half_w = (
        body_w
        / 2
        * (0.55 + 0.9 * np.sqrt(np.clip(np.sin(np.pi * np.clip(t, 0, 0.999)), 0, 1)))
        * (1 - 0.75 * t)
    )
    half_w = np.maximum(half_w, 0.6)
    # Translucent fin fold around the tail (faint but above the mask level).
    tail = slice(9, None)
    fin_w = body_w * 0.45 + half_w[tail]
    fin = np.vstack(
        [
            np.column_stack([centre_x[tail], centre_y[tail] - fin_w]),
            np.column_stack([centre_x[tail], centre_y[tail] + fin_w])[::-1],
        ]
    )
    pen.polygon(fin, rng.uniform(0.28, 0.38))
    body = np.vstack(
        [
            np.column_stack([centre_x, centre_y - half_w]),
            np.column_stack([centre_x, centre_y + half_w])[::-1],
        ]
    )
    pen.polygon(body, rng.uniform(0.5, 0.65))
    # Gut and eye.
    pen.ellipse(
        size * 0.22,
        centre_y[5] + body_w * 0.1,
        size * 0.12,
        body_w * 0.28,
        0,
        rng.uniform(0.7, 0.85),
    )
    pen.circle(size * 0.42, centre_y[1], max(1.0, body_w * rng.uniform(0.3, 0.42)), 0.97)


def _draw_marine_snow(pen: _Pen, rng: np.random.Generator, size: float) -> None:
    n = int(rng.integers(8, 30))
    # A random walk of blobs: irregular, fluffy, variable density.
    pts = np.cumsum(rng.normal(0, size * 0.12, (n, 2)), 0)
    pts -= pts.mean(0)
    scale = (size * 0.38) / max(1e-6, np.abs(pts).max())
    pts *= min(1.0, scale)
    for p in pts:
        pen.circle(p[0], p[1], size * rng.uniform(0.06, 0.16), rng.uniform(0.3, 0.6))
    for p in pts[rng.random(n) < 0.3]:
        pen.circle(p[0], p[1], size * rng.uniform(0.02, 0.06), rng.uniform(0.6, 0.85))


_DRAW = {
    "copepod": _draw_copepod,
    "protist": _draw_protist,
    "diatom_chain": _draw_diatom_chain,
    "larval_fish": _draw_larval_fish,
    "marine_snow": _draw_marine_snow,
}


def render_darkness(
    kind: str,
    rng: np.random.Generator,
    size_px: float,
    *,
    blur_sigma: float = 0.6,
    texture: tuple[float, float] = (0.85, 1.08),
    texture_cell: float = 8.0,
    relative: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one organism as a darkness map in [0, 1] and its ground-truth mask.

    The mask is the single 8-connected component ``darkness >= MASK_LEVEL``: any smaller
    detached pieces (a lone spine tip, a stray snow flake) are faded below the mask level,
    so ground truth is always one object, as a segmenter should find it.

    Parameters
    ----------
    kind : str
        One of :data:`SHAPE_CLASSES`.
    rng : numpy.random.Generator
        Source of all randomness (orientation, proportions, texture).
    size_px : float
        Overall body length in pixels, >= 4 (6-600 is the realistic range).
    blur_sigma : float
        Optical blur (px): 0.6 is a sharp image, 1-2.5 the soft edges of a slightly
        defocused or moving organism.
    texture, texture_cell :
        Range of the multiplicative low-frequency texture and its cell size as a fraction
        divisor of the body length (``size_px / texture_cell`` px per cell).
    relative : bool
        Normalise the map so its darkest pixel is 1 before taking the mask: the mask is
        then the organism at a quarter of *its own* contrast, and the caller scales the
        map by the contrast it wants (the hard video mode). Edge at a fraction of the
        object's own contrast is what the eye calls the outline of a faint organism, and it
        does not depend on the camera's noise.

    Returns
    -------
    darkness : (h, w) float32
        Tight patch around the organism, 1 px margin.
    mask : (h, w) bool
    """
    if kind not in _DRAW:
        raise ValueError(f"kind must be one of {SHAPE_CLASSES}, got {kind!r}")
    if not size_px >= 4:
        raise ValueError(f"size_px must be >= 4, got {size_px}")
    ss = 4 if size_px < 60 else 2 if size_px < 200 else 1
    half = math.ceil(size_px * 0.75) + 3
    pen = _Pen(half, ss)
    angle = rng.uniform(0, 2 * math.pi)
    # Draw in an unrotated frame then rotate the finished canvas: simpler than rotating
    # every primitive, and the canvas is large enough for any rotation.
    _DRAW[kind](pen, rng, size_px)
    canvas = pen.canvas
    m = cv2.getRotationMatrix2D(
        (canvas.shape[1] / 2, canvas.shape[0] / 2), math.degrees(angle), 1.0
    )
    pen.canvas = cv2.warpAffine(canvas, m, canvas.shape[::-1], flags=cv2.INTER_LINEAR)
    dark = pen.darkness()
    # Optical blur and a low-frequency texture so the interior is not flat.
    dark = cv2.GaussianBlur(dark, (0, 0), blur_sigma)
    tex_side = max(2, int(size_px / texture_cell))
    tex = rng.uniform(texture[0], texture[1], (tex_side, tex_side)).astype(np.float32)
    tex = cv2.resize(tex, dark.shape[::-1], interpolation=cv2.INTER_CUBIC)
    dark = np.clip(dark * tex, 0, 1)
    if relative and dark.max() > 0:
        dark *= np.float32(1 / dark.max())

    mask = dark >= MASK_LEVEL
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    if n <= 1:  # too faint to be visible at all: make the core just visible
        dark[dark.shape[0] // 2, dark.shape[1] // 2] = MASK_LEVEL + 0.1
        mask = dark >= MASK_LEVEL
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = labels == keep
    stray = (labels > 0) & ~mask
    if relative:
        # Detached pieces would be organisms in their own right at a quarter of *their*
        # contrast (what the hard mode's truth means), and a sensitive segmenter sees
        # them even at a tenth of it, so they are erased with the pixels around them.
        near = cv2.dilate(stray.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool) & ~mask
        dark[near] = 0
    else:
        dark[stray] = np.minimum(dark[stray], MASK_LEVEL * 0.6)
    # Halo pixels that touch the mask but sit below the mask level stay; crop tight.
    ys, xs = np.nonzero(dark > 0.02)
    y0, y1 = max(0, ys.min() - 1), min(dark.shape[0], ys.max() + 2)
    x0, x1 = max(0, xs.min() - 1), min(dark.shape[1], xs.max() + 2)
    return np.ascontiguousarray(dark[y0:y1, x0:x1]), np.ascontiguousarray(mask[y0:y1, x0:x1])


def render_organism(
    kind: str, rng: np.random.Generator, size_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one organism as a noise-free, flat-fielded, dark-on-bright uint8 patch.

    Background is 255, the organism is ``255 * (1 - darkness)``; see :func:`render_darkness`.

    Returns
    -------
    image : (h, w) uint8
    mask : (h, w) bool, ``image <= 191`` (quarter contrast) as one 8-connected object.

    Examples
    --------
    >>> img, mask = render_organism("copepod", np.random.default_rng(0), 80)
    >>> img.dtype, bool(mask.any())
    (dtype('uint8'), True)
    """
    dark, mask = render_darkness(kind, rng, size_px)
    return np.round(255 * (1 - dark)).astype(np.uint8), mask


# --------------------------------------------------------------------------- ROI library


def make_roi_library(
    out_dir: str | Path,
    n_per_class: int = 200,
    *,
    seed: int = 0,
    size_range: dict[str, tuple[float, float]] | None = None,
    classes: tuple[str, ...] = SHAPE_CLASSES,
) -> dict[str, int]:
    """Write a folder-per-class library of single-ROI PNGs for classifier training.

    Each image looks like a segmenter's crop: gray, dark organism on a bright background
    of random level, 3-10 px padding, sensor noise, random contrast and occasional slight
    defocus. Sizes are drawn log-uniformly from class-specific ranges that overlap, so size
    alone does not separate classes.

    Parameters
    ----------
    out_dir : path
        Created if missing; gets one sub-folder per class, files ``<class>_<i:05d>.png``.
    n_per_class : int
        Images per class.
    seed : int
        Same seed, same library (byte for byte).
    size_range : dict, optional
        Per-class (min, max) body length in px; defaults to :data:`LIBRARY_SIZE_RANGES`.
    classes : tuple of str
        Subset of :data:`SHAPE_CLASSES` to write.

    Returns
    -------
    dict
        Number of images written per class.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    ranges = {**LIBRARY_SIZE_RANGES, **(size_range or {})}
    out = Path(out_dir)
    counts: dict[str, int] = {}
    for ci, kind in enumerate(classes):
        if kind not in _DRAW:
            raise ValueError(f"unknown class {kind!r}; expected one of {SHAPE_CLASSES}")
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, ci])
        lo, hi = ranges[kind]
        for i in range(n_per_class):
            size = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            image = _library_image(kind, rng, size)
            cv2.imwrite(str(folder / f"{kind}_{i:05d}.png"), image)
        counts[kind] = n_per_class
    return counts


def _library_image(kind: str, rng: np.random.Generator, size: float) -> np.ndarray:
    dark, _ = render_darkness(kind, rng, size)
    pad = int(rng.integers(3, 11))
    dark = np.pad(dark, pad)
    dark *= rng.uniform(0.8, 1.15)
    if rng.random() < 0.2:
        dark = cv2.GaussianBlur(dark, (0, 0), rng.uniform(0.6, 1.4))
    level = rng.uniform(225, 252)
    img = level * (1 - np.clip(dark, 0, 1)) + rng.normal(0, rng.uniform(1.0, 4.0), dark.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- line-scan video


@dataclass
class GroundTruth:
    """Columnar ground truth of a synthetic video, one row per organism, sorted by ``line``.

    ``line`` is the global top line (``frame * height + row``) of the mask's bounding box,
    ``column`` its left column; ``height``/``width`` the mask's bbox; ``area_px`` the mask's
    pixel count; ``esd_px`` the equivalent circular diameter ``2 sqrt(area / pi)``;
    ``contrast`` the organism's peak darkness (0-1 of the local background: 0.1 is barely
    visible, 0.95 nearly black). The mask is the organism at a quarter of full contrast
    (default mode) or at a quarter of its own contrast (hard mode, see ``render_darkness``).
    """

    frame: np.ndarray
    line: np.ndarray
    row: np.ndarray
    column: np.ndarray
    height: np.ndarray
    width: np.ndarray
    area_px: np.ndarray
    esd_px: np.ndarray
    kind: np.ndarray
    frame_height: int = 2048
    contrast: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.contrast is None:
            self.contrast = np.ones(len(self.line), np.float64)

    def __len__(self) -> int:
        return len(self.line)

    def to_csv(self, path: str | Path) -> None:
        """Write as CSV with a header; ``frame_height`` goes in the file name-free header row."""
        names = [f.name for f in fields(self) if f.name != "frame_height"]
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([*names, "frame_height"])
            cols = [getattr(self, n) for n in names]
            for i in range(len(self)):
                w.writerow([*(c[i] for c in cols), self.frame_height])

    @classmethod
    def read_csv(cls, path: str | Path) -> GroundTruth:
        """Read a file written by :meth:`to_csv`."""
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        ints = ("frame", "line", "row", "column", "height", "width", "area_px")
        data: dict = {n: np.array([int(r[n]) for r in rows], np.int64) for n in ints}
        data["esd_px"] = np.array([float(r["esd_px"]) for r in rows], np.float64)
        data["kind"] = np.array([r["kind"] for r in rows], dtype=object)
        if rows and "contrast" in rows[0]:
            data["contrast"] = np.array([float(r["contrast"]) for r in rows], np.float64)
        fh_ = int(rows[0]["frame_height"]) if rows else 2048
        return cls(**data, frame_height=fh_)


@dataclass
class _Placed:
    line: int  # global top line of the patch
    col: int
    dark: np.ndarray


def _plan(
    n_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    density: float,
    size_range: tuple[float, float],
    size_exponent: float,
    kinds: tuple[str, ...],
    kind_weights: np.ndarray,
    hard: bool = False,
    contrast_range: tuple[float, float] = (0.1, 0.7),
) -> tuple[list[_Placed], GroundTruth]:
    """Place organisms on the tape without overlap; render each once.

    ``hard``: soft edges (blur 0.8-2.2 px), strong texture, and a peak contrast drawn
    uniformly from ``contrast_range`` with the mask at a quarter of that contrast.
    """
    placed: list[_Placed] = []
    rows: list[tuple] = []
    active: list[tuple[int, int, int, int]] = []  # mask bboxes (y0, x0, y1, x1), global lines
    lo, hi = size_range
    a = 1.0 - size_exponent
    gap = 3
    for f in range(n_frames):
        n = rng.poisson(density)
        active = [b for b in active if b[2] + gap > f * height]
        for _ in range(n):
            # Power-law sizes: many small particles, few large organisms (as in the sea).
            u = rng.random()
            size = (lo**a + u * (hi**a - lo**a)) ** (1 / a) if a != 0 else lo * (hi / lo) ** u
            kind = kinds[rng.choice(len(kinds), p=kind_weights)]
            if hard:
                dark, mask = render_darkness(
                    kind,
                    rng,
                    size,
                    blur_sigma=float(rng.uniform(0.8, 2.2)),
                    texture=(0.5, 1.1),
                    texture_cell=5.0,
                    relative=True,
                )
                contrast = float(rng.uniform(*contrast_range))
                dark *= np.float32(contrast)
            else:
                dark, mask = render_darkness(kind, rng, size)
                contrast = float(dark.max())
            pw = dark.shape[1]
            if pw + 4 >= width:
                continue
            ys, xs = np.nonzero(mask)
            my0, my1, mx0, mx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            for _try in range(20):
                line = f * height + int(rng.integers(0, height)) - my0
                col = int(rng.integers(2, width - pw - 1))
                box = (line + my0, col + mx0, line + my1, col + mx1)
                if box[0] < 0 or box[2] > n_frames * height:  # whole inside the video
                    continue
                if all(
                    box[0] >= b[2] + gap
                    or box[2] + gap <= b[0]
                    or box[1] >= b[3] + gap
                    or box[3] + gap <= b[1]
                    for b in active
                ):
                    break
            else:
                continue
            active.append(box)
            placed.append(_Placed(line, col, dark))
            area = int(mask.sum())
            rows.append(
                (
                    box[0] // height,
                    box[0],
                    box[0] % height,
                    box[1],
                    my1 - my0,
                    mx1 - mx0,
                    area,
                    2 * math.sqrt(area / math.pi),
                    kind,
                    contrast,
                )
            )
    order = np.argsort([r[1] for r in rows], kind="stable")
    rows = [rows[i] for i in order]
    placed.sort(key=lambda p: p.line)
    cols = list(zip(*rows, strict=True)) if rows else [()] * 10
    truth = GroundTruth(
        *(np.array(c, np.int64) for c in cols[:7]),
        esd_px=np.array(cols[7], np.float64),
        kind=np.array(cols[8], dtype=object),
        frame_height=height,
        contrast=np.array(cols[9], np.float64),
    )
    return placed, truth


def column_profile(
    width: int, rng: np.random.Generator, *, column_gain: float = 0.08, vignetting: float = 0.3
) -> np.ndarray:
    """Per-column gain of a line-scan sensor: stripes (pixel response) times 1-D vignetting."""
    x = np.linspace(-1, 1, width)
    vig = 1 - vignetting * x**2
    stripes = rng.normal(0, column_gain / 2, width)
    stripes += column_gain / 2 * np.sin(2 * np.pi * (x * rng.uniform(3, 9) + rng.uniform(0, 1)))
    return (vig * (1 + stripes)).astype(np.float32)


def synth_frames(
    n_frames: int,
    *,
    height: int = 2048,
    width: int = 2048,
    seed: int = 0,
    difficulty: Literal["easy", "hard"] = "easy",
    density: float = 40.0,
    size_range: tuple[float, float] = (8.0, 500.0),
    size_exponent: float = 2.2,
    kinds: tuple[str, ...] = SHAPE_CLASSES,
    kind_weights: tuple[float, ...] | None = None,
    background: float | None = None,
    column_gain: float = 0.08,
    vignetting: float = 0.3,
    drift: float = 0.06,
    drift_period_frames: float = 25.0,
    noise_sigma: float = 2.0,
    contrast_range: tuple[float, float] = (0.1, 0.7),
    artefacts: dict[str, float] | None = None,
    polarity: Literal["bright-field", "dark-field"] = "bright-field",
) -> tuple[Iterator[np.ndarray], GroundTruth]:
    """A raw (not flat-fielded) ISIIS-like line-scan video with ground truth.

    Organisms are placed on a continuous tape and rendered once; frames are cut from the
    tape lazily, so objects straddle frame boundaries and memory holds only the organisms,
    not the frames.

    ``difficulty="hard"`` is the footage defaults are chosen on (the quality benchmark's
    default). Organisms: peak contrast uniform in ``contrast_range`` (down to 0.1 of the
    background), soft edges (blur 0.8-2.2 px), strong texture; ground truth is each
    organism at a quarter of its own contrast. Camera, modelled on the MBARI ISIIS frame
    in ``shared/data``: a 2-D vignette on top of the column profile (edges at ~55% of the
    centre), shot noise ``sqrt(read**2 + gain * signal)`` rather than constant Gaussian
    noise, and line-scan artefacts that are *not* organisms and have no truth rows:

    * stuck columns: ``dead`` columns read ~0-12, ``hot`` ones 255, ``stuck`` ones a
      constant mid-grey, for the whole video;
    * ``streaks``: Poisson mean per frame of 1-2 px wide vertical dark streaks 30-600
      lines long (dust on the sensor line, a transient column defect), placed off the
      organisms;
    * lamp flicker: per-line jitter (``jitter``, relative sigma), a frame-wide level change
      per frame (``frame_flicker``) and, in ``flicker_prob`` of the frames, a sinusoidal
      ripple of 2-6% with a 60-400 line period over part of the frame.

    ``artefacts`` overrides those rates, e.g. ``{"streaks": 0}``.

    ``polarity="dark-field"`` (hard mode only) draws the same organisms as a dark-field
    imager (UVP5/6) records them: bright, ``black + gain * illumination * darkness`` on a
    near-black background (10 grey levels), so the illumination falloff dims the organisms
    rather than the background; streaks are bright. Same ground truth.

    Parameters
    ----------
    n_frames, height, width : int
        Video length and frame size.
    seed : int
        Everything (placement, shapes, artefacts, noise) follows from it.
    difficulty : {"easy", "hard"}
        See above; "easy" is the original generator (byte-identical for a seed).
    density : float
        Mean organisms starting per frame (Poisson).
    size_range, size_exponent :
        Body length in px follows a truncated power law ``p(s) ~ s**-size_exponent``.
    kinds, kind_weights :
        Classes to draw and their relative frequencies (uniform by default).
    background : float or None
        Mean raw background level (0-255) before gain and vignetting; default 200 (easy)
        or 170 (hard, whose centre still reaches ~200 after the row/column gains).
    column_gain, vignetting, drift, drift_period_frames, noise_sigma :
        Artefacts: stripe amplitude (relative), 1-D edge falloff (relative), slow
        background drift amplitude (relative) and period (frames), Gaussian noise (levels;
        hard mode: the read noise is ``noise_sigma / 2`` and shot noise gives
        ``noise_sigma`` at the mean background).
    contrast_range : (float, float)
        Hard mode: range of the organisms' peak contrast.

    Returns
    -------
    frames : iterator of (height, width) uint8
    truth : GroundTruth
    """
    if n_frames < 1 or height < 16 or width < 16:
        raise ValueError(
            f"need n_frames >= 1 and frames >= 16x16, got {n_frames} x {height}x{width}"
        )
    if difficulty not in ("easy", "hard"):
        raise ValueError(f"difficulty must be 'easy' or 'hard', got {difficulty!r}")
    hard = difficulty == "hard"
    if polarity not in ("bright-field", "dark-field"):
        raise ValueError(f"polarity must be 'bright-field' or 'dark-field', got {polarity!r}")
    dark_field = polarity == "dark-field"
    if dark_field and not hard:
        raise ValueError("polarity='dark-field' needs difficulty='hard'")
    if background is None:
        background = 170.0 if hard else 200.0
    rng = np.random.default_rng(seed)
    weights = np.ones(len(kinds)) if kind_weights is None else np.asarray(kind_weights, float)
    weights = weights / weights.sum()
    placed, truth = _plan(
        n_frames,
        height,
        width,
        rng,
        density,
        size_range,
        size_exponent,
        tuple(kinds),
        weights,
        hard,
        contrast_range,
    )
    colp = column_profile(width, rng, column_gain=column_gain, vignetting=vignetting)
    phase = rng.uniform(0, 2 * np.pi)
    noise = rng.standard_normal((height + 128, width), dtype=np.float32) * noise_sigma
    offsets = rng.integers(0, 128, n_frames)
    camera = _HardCamera(n_frames, height, width, rng, truth, artefacts) if hard else None
    if camera is not None:
        colp = colp * camera.vignette_cols
        noise *= np.float32(1 / noise_sigma)  # unit noise, scaled per pixel below
        read2 = (noise_sigma / 2) ** 2
        shot_gain = (noise_sigma**2 - read2) / background

    def frames() -> Iterator[np.ndarray]:
        start = 0
        active: list[_Placed] = []
        for f in range(n_frames):
            top, bottom = f * height, (f + 1) * height
            while start < len(placed) and placed[start].line < bottom:
                active.append(placed[start])
                start += 1
            active = [p for p in active if p.line + p.dark.shape[0] > top]
            dark = np.zeros((height, width), np.float32)
            for p in active:
                ph, pw = p.dark.shape
                y0, y1 = max(p.line, top), min(p.line + ph, bottom)
                region = dark[y0 - top : y1 - top, p.col : p.col + pw]
                np.maximum(region, p.dark[y0 - p.line : y1 - p.line], out=region)
            lines = np.arange(top, bottom, dtype=np.float32)
            rowp = background * (
                1 + drift * np.sin(2 * np.pi * lines / (drift_period_frames * height) + phase)
            ).astype(np.float32)
            img = dark if dark_field else np.subtract(1.0, dark, out=dark)
            if camera is not None:
                if not dark_field:
                    camera.streaks(f, img)
                rowp = rowp * camera.flicker(f)
                img *= camera.vignette_rows[:, None]
            img *= colp[None, :]
            img *= rowp[:, None]
            if dark_field:
                # the organisms scatter the light: bright on a black background
                img *= np.float32(_DF_GAIN)
                img += np.float32(_DF_BLACK)
                camera.streaks(f, img, bright=True)
            if camera is None:
                img += noise[offsets[f] : offsets[f] + height]
            else:
                sd = np.sqrt(np.float32(shot_gain) * np.maximum(img, 0) + np.float32(read2))
                img += sd * noise[offsets[f] : offsets[f] + height]
                camera.stuck(img)
            np.clip(img, 0, 255, out=img)
            yield img.astype(np.uint8)

    return frames(), truth


class _HardCamera:
    """The line-scan artefacts and uneven illumination of ``synth_frames(difficulty="hard")``."""

    def __init__(
        self,
        n_frames: int,
        height: int,
        width: int,
        rng: np.random.Generator,
        truth: GroundTruth,
        rates: dict[str, float] | None,
    ) -> None:
        r = {
            "dead": 2,
            "hot": 1,
            "stuck": 1,
            "streaks": 1.5,
            "jitter": 0.003,
            "frame_flicker": 0.02,
            "flicker_prob": 0.3,
        }
        unknown = set(rates or {}) - set(r)
        if unknown:
            raise ValueError(f"unknown artefacts {sorted(unknown)}; known: {sorted(r)}")
        r.update(rates or {})
        self.height, self.width = height, width
        # A 2-D vignette (area-scan-like, as the MBARI frame): edges ~55% of the centre.
        y = np.linspace(-1, 1, height, dtype=np.float32)
        x = np.linspace(-1, 1, width, dtype=np.float32)
        self.vignette_rows = (1 - 0.25 * y**2).astype(np.float32)
        self.vignette_cols = (1 - 0.25 * x**2).astype(np.float32)
        n_dead, n_hot, n_stuck = int(r["dead"]), int(r["hot"]), int(r["stuck"])
        cols = rng.choice(np.arange(4, width - 4), n_dead + n_hot + n_stuck, replace=False)
        values = np.concatenate(
            [
                rng.uniform(0, 12, n_dead),
                np.full(n_hot, 255.0),
                rng.uniform(90, 160, n_stuck),
            ]
        )
        self.stuck_cols = cols.astype(np.int64)
        self.stuck_values = values.astype(np.float32)
        # Per-line lamp gain for the whole video, one array (n_frames * height,).
        n_lines = n_frames * height
        gain = 1 + rng.normal(0, r["jitter"], n_lines)
        gain *= np.repeat(1 + rng.normal(0, r["frame_flicker"], n_frames), height)
        for f in np.flatnonzero(rng.random(n_frames) < r["flicker_prob"]):
            length = int(rng.integers(height // 4, height + 1))
            start = f * height + int(rng.integers(0, height - length + 1))
            t = np.arange(length)
            period = rng.uniform(60, 400)
            window = np.sin(np.pi * t / length) ** 2
            gain[start : start + length] *= 1 + rng.uniform(0.02, 0.06) * window * np.sin(
                2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)
            )
        self.gain = gain.astype(np.float32)
        # Streaks: (line0, line1, col, width, darkness), off every organism's box (+3 px).
        boxes = np.stack(
            [truth.line, truth.column, truth.line + truth.height, truth.column + truth.width], 1
        )
        streaks = []
        for _ in range(rng.poisson(r["streaks"] * n_frames)):
            w = int(rng.integers(1, 3))
            length = int(rng.integers(30, 601))
            l0 = int(rng.integers(0, max(1, n_lines - length)))
            c = int(rng.integers(8, width - 10))
            hit = (
                (boxes[:, 0] - 3 < l0 + length)
                & (boxes[:, 2] + 3 > l0)
                & (boxes[:, 1] - 3 < c + w)
                & (boxes[:, 3] + 3 > c)
            )
            if not hit.any():
                streaks.append((l0, l0 + length, c, w, float(rng.uniform(0.15, 0.5))))
        self.streak_list = streaks

    def flicker(self, f: int) -> np.ndarray:
        return self.gain[f * self.height : (f + 1) * self.height]

    def streaks(self, f: int, img: np.ndarray, *, bright: bool = False) -> None:
        """Darken (bright-field, multiplicative) or brighten (dark-field, additive) the
        streaks crossing frame ``f``, before noise."""
        top = f * self.height
        for l0, l1, c, w, d in self.streak_list:
            y0, y1 = max(l0, top) - top, min(l1, top + self.height) - top
            if y0 < y1:
                if bright:
                    img[y0:y1, c : c + w] += np.float32(d * 120)
                else:
                    img[y0:y1, c : c + w] *= np.float32(1 - d)

    def stuck(self, img: np.ndarray) -> None:
        img[:, self.stuck_cols] = self.stuck_values[None, :]


def write_synth_video(
    path: str | Path,
    n_frames: int,
    *,
    seed: int = 0,
    codec: str = "rawvideo",
    fps: float = 13.7,
    **kwargs: object,
) -> GroundTruth:
    """Write a synthetic line-scan video and its ground truth CSV (``<path>.truth.csv``).

    ISIIS names videos by their start time, e.g. ``20260101120000.000.avi``; the demo follows
    that convention, but any name works.

    Parameters
    ----------
    path : path
        Output video (AVI for rawvideo/ffv1/mjpeg).
    n_frames, seed, **kwargs :
        Passed to :func:`synth_frames`.
    codec : str
        See :func:`plankline.imaging.video.write_video`.
    fps : float
        ISIIS runs at ~13.7 frames/s of 2048 lines.
    """
    from .video import write_video

    frames, truth = synth_frames(n_frames, seed=seed, **kwargs)  # type: ignore[arg-type]
    write_video(path, frames, fps=fps, codec=codec)
    truth.to_csv(truth_path(path))
    return truth


def truth_path(video_path: str | Path) -> Path:
    """Where :func:`write_synth_video` puts the ground truth of ``video_path``."""
    p = Path(video_path)
    return p.with_name(p.name + ".truth.csv")


def frames_from_still(frame: np.ndarray, n: int, *, seed: int = 0) -> list[np.ndarray]:
    """``n`` frames of moving content under a real frame's own, fixed vignette.

    One real frame (e.g. the MBARI ISIIS frame in ``shared/data``) becomes a short video a
    flat-field can learn from: the vignette is the frame's smooth background (a grey
    closing and a wide blur of a 16x downscaled copy); the content (frame / vignette) is
    rolled along the lines and flipped upside down from frame to frame and multiplied
    back, as organisms pass a fixed line-scan camera. Rolling the raw frame instead would
    move the vignette with the content; rolling across the columns would carry the noise
    of the dark edge columns (amplified 2.5x by the division) into the bright centre as
    noisy vertical bands no camera makes. Frame 0 is the original.

    The closing and the blur are the flat-field's (:func:`flatfield.close_grid`,
    :func:`flatfield.blur_grid`, on the grid extended by linear extrapolation): with
    the grid's own border they flattened the falloff toward the edges, so the content
    kept the still's darkest corner 18 % and its edges ~10 % too dark, and rolling moved
    that dark patch along the left edge, where it came out as ~100 x 100 px "objects" of
    noise no fixed camera makes (now flat to ~1 %).

    A roll puts the frame's top edge at content line ``h - shift``: a line-scan frame's
    cut is no cut of the scene (the next frame continues it), so a roll that would cut
    an organism spanning 24 px or more (the MBARI frame's radiolarian, ~210 px, and its
    dark ~35 px organism) is moved to the nearest line clear of them
    (:func:`_cuttable_lines`; 86 % of that frame's lines are). Otherwise the organism
    comes out as two part-organisms, one a band of its end lines along the frame's top
    edge (the radiolarian's: 47-62 x 175-202 px), joined to whatever the previous frame
    ended with.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 2 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be a 2-D uint8 array, got {getattr(frame, 'shape', frame)}")
    h, w = frame.shape
    small = cv2.resize(frame, (max(1, w // 16), max(1, h // 16)), interpolation=cv2.INTER_AREA)
    vig = cv2.resize(blur_grid(close_grid(small), 3), (w, h))
    content = frame.astype(np.float32) / np.maximum(vig, 1)
    cuttable = _cuttable_lines(content)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = content if i == 0 else np.roll(content, _roll_at(int(rng.integers(0, h)), cuttable), 0)
        if i % 2:
            c = c[::-1]
        out.append(np.clip(c * vig, 0, 255).astype(np.uint8))
    return out


def _cuttable_lines(content: np.ndarray, big: int = 24, margin: int = 8) -> np.ndarray:
    """Lines of a still's content (background ~1) that cross no large organism: no
    8-connected region of pixels under 0.8 whose box spans ``big`` px or more, within
    ``margin`` lines (its soft edge). All lines when every one crosses one."""
    h = content.shape[0]
    dark = (content < 0.8).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    ok = np.ones(h, bool)
    for _x, y, bw, bh, _area in stats[1:]:
        if bw >= big or bh >= big:
            ok[max(0, y - margin) : min(h, y + bh + margin)] = False
    return ok if ok.any() else np.ones(h, bool)


def _roll_at(shift: int, cuttable: np.ndarray) -> int:
    """The roll nearest ``shift`` whose cut (content line ``h - shift``) is cuttable."""
    h = len(cuttable)
    for d in range(h):
        for s in (shift + d, shift - d):
            if cuttable[(h - s) % h]:
                return s % h
    return shift
