"""Morphometry of ROIs: the ZooProcess/EcoTaxa feature set, fast enough for a billion ROIs.

Definitions follow scikit-image ``regionprops`` where they overlap (area, perimeter,
axes from the inertia tensor, orientation, eccentricity, convex area, solidity, extent,
Hu moments), so numbers agree with the seed pipeline, which used skimage.

Speed: real ISIIS ROIs are small (median ~40 px), so per-ROI call overhead, not pixel work,
is what costs. All masks and crops are laid end to end in one flat array each, and one
``flatnonzero`` gives every object pixel (position and gray value) in one vector, ROI after
ROI and row after row; everything is then computed for all ROIs at once:

- moments (hence axes, orientation, eccentricity, Hu invariants, centroid), bounding boxes
  and intensity moments are sums over contiguous runs of that vector
  (``np.add.reduceat``), first per image row, then per ROI; min, max and median come from
  one integer sort of (ROI, value) keys;
- the perimeter (skimage's 4-connectivity weighting) comes from one erosion and one 3x3
  filter on a canvas on which all masks are shelf-packed;
- the convex hull of each object is taken from the first and last pixel of each of its
  rows (one ``cv2.convexHull`` per ROI, no contour tracing), filled on a second packed
  canvas for the convex area, and the Feret diameters of all hulls are computed together.

Degenerate shapes (1-px lines, single pixels, empty masks, constant gray values) get the
documented values listed in :func:`measure_rois`, never an infinity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import cv2
import numpy as np

#: Pixel-unit numeric features, in table order (the classifier's feature baseline uses them).
FEATURE_COLUMNS: tuple[str, ...] = (
    "area",
    "perimeter",
    "major_axis_length",
    "minor_axis_length",
    "esd",
    "orientation",
    "eccentricity",
    "convex_area",
    "solidity",
    "extent",
    "feret_max",
    "feret_min",
    "bbox_width",
    "bbox_height",
    "elongation",
    "circularity",
    "mean",
    "std",
    "min",
    "max",
    "median",
    "skew",
    "kurtosis",
    "hu_1",
    "hu_2",
    "hu_3",
    "hu_4",
    "hu_5",
    "hu_6",
    "hu_7",
    "centroid_x",
    "centroid_y",
)

_LENGTHS = (
    "perimeter",
    "major_axis_length",
    "minor_axis_length",
    "esd",
    "feret_max",
    "feret_min",
    "bbox_width",
    "bbox_height",
)
_AREAS = ("area", "convex_area")

# skimage.measure.perimeter(neighborhood=4): weights of border-pixel configurations. Every
# configuration with a weight has the centre bit (1) set, so a non-border pixel weighs 0.
_PERIM_WEIGHTS = np.zeros(50, np.float64)
_PERIM_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIM_WEIGHTS[[21, 33]] = math.sqrt(2)
_PERIM_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2
_PERIM_KERNEL = np.array([[10, 2, 10], [2, 1, 2], [10, 2, 10]], np.float32)
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


class _Pixels(NamedTuple):
    """Every ROI's object pixels, concatenated ROI after ROI (row-major inside each ROI)."""

    row: np.ndarray  # (N,) int32 row inside the ROI's mask
    col: np.ndarray  # (N,) int32 column inside the ROI's mask
    value: np.ndarray  # (N,) int32 inverted gray value (dtype maximum - pixel)
    counts: np.ndarray  # (n,) pixels per ROI
    starts: np.ndarray  # (n,) first pixel of each ROI
    shapes: np.ndarray  # (n, 2) mask height, width
    sixteen: bool  # some crop is 16-bit
    run_starts: np.ndarray  # (R,) first pixel of each image row of each ROI
    run_rois: np.ndarray  # (n,) first row-run of each ROI

    def per_roi(self, values: np.ndarray) -> np.ndarray:
        """Sum of ``values`` (one per pixel) over each non-empty ROI's pixels."""
        return np.add.reduceat(values, self.starts[self.counts > 0])


def _gather(crops: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> _Pixels:
    """Object pixel positions and inverted gray values of every ROI, in one vector.

    All masks (and all crops) are laid end to end in one flat array, so a single
    ``flatnonzero`` finds every object pixel, already grouped ROI after ROI and row after
    row: no per-ROI numpy call (each costs ~2-5 us, more than a 40-px ROI's pixel work).
    """
    n = len(masks)
    mask_shapes = [m.shape for m in masks]
    if any(len(s) != 2 for s in mask_shapes):
        i = next(i for i, s in enumerate(mask_shapes) if len(s) != 2)
        raise ValueError(f"measure_rois: ROI {i}: mask {mask_shapes[i]} is not 2-D")
    if [c.shape[:2] for c in crops] != mask_shapes:
        i = next(
            i for i, (c, m) in enumerate(zip(crops, masks, strict=True)) if c.shape[:2] != m.shape
        )
        raise ValueError(
            f"measure_rois: ROI {i}: crop {crops[i].shape} and mask {masks[i].shape} differ"
        )
    shapes = np.array(mask_shapes, np.int64).reshape(n, 2)
    sizes = shapes[:, 0] * shapes[:, 1]
    offsets = np.cumsum(sizes) - sizes
    # bool masks concatenate without a copy per ROI; other dtypes: nonzero = object
    pixels = np.flatnonzero(np.concatenate([m.ravel() for m in masks]))
    bounds = np.searchsorted(pixels, np.append(offsets, sizes.sum()))
    counts = np.diff(bounds)
    starts = bounds[:-1]
    grays = [cv2.cvtColor(c, cv2.COLOR_BGR2GRAY) if c.ndim == 3 else c for c in crops]
    # mixed 8/16-bit crops concatenate as uint16, keeping every value
    raw = np.concatenate([g.ravel() for g in grays])[pixels]
    sixteen = raw.dtype.itemsize > 1
    raw = raw.astype(np.int32)
    flat = (pixels - np.repeat(offsets, counts)).astype(np.int32)
    row, col = np.divmod(flat, np.repeat(shapes[:, 1].astype(np.int32), counts))
    # each crop is inverted with its own dtype's maximum (8- and 16-bit crops may be mixed)
    if not sixteen:
        value = 255 - raw
    else:
        top = np.fromiter((65535 if g.itemsize > 1 else 255 for g in grays), np.int32, n)
        value = np.repeat(top, counts) - raw
    # image rows of each ROI: a new run where the row changes or a new ROI starts
    new_run = np.ones(len(row), bool)
    new_run[1:] = row[1:] != row[:-1]
    new_run[starts[counts > 0]] = True
    run_starts = np.flatnonzero(new_run)
    run_rois = np.searchsorted(run_starts, starts)
    return _Pixels(row, col, value, counts, starts, shapes, sixteen, run_starts, run_rois)


class _Canvas(NamedTuple):
    """All masks shelf-packed on one image, ``gap`` px apart (3x3 filters never mix ROIs)."""

    width: int
    height: int
    x: np.ndarray  # (n,) canvas column of each mask's left edge
    y: np.ndarray  # (n,) canvas row of each mask's top edge
    shelf: np.ndarray  # (n,) shelf of each mask
    shelf_y: np.ndarray  # (shelves + 1,) first canvas row of each shelf, then the height


def _pack(shapes: np.ndarray, gap: int = 1, width: int = 2048) -> _Canvas:
    """Shelf packing, vectorised: masks tallest first, left to right, a new shelf each
    ``width`` columns (a mask may run past ``width``; the canvas is that much wider)."""
    h, w = shapes[:, 0], shapes[:, 1] + gap
    order = np.argsort(-h, kind="stable")
    start = np.cumsum(w[order]) - w[order]
    shelf = np.empty(len(h), np.int64)
    shelf[order] = start // width
    x = np.empty(len(h), np.int64)
    x[order] = start % width + gap
    shelf_h = np.zeros(int(shelf.max()) + 1, np.int64)
    np.maximum.at(shelf_h, shelf, h)
    shelf_y = np.concatenate([[0], np.cumsum(shelf_h + gap)]) + gap
    return _Canvas(
        int(width + w.max() + 2 * gap), int(shelf_y[-1]), x, shelf_y[shelf], shelf, shelf_y
    )


def _perimeters(px: _Pixels, cv: _Canvas) -> np.ndarray:
    """skimage ``perimeter(mask, neighborhood=4)`` of every non-empty ROI.

    Erosion and the 3x3 border-configuration filter run once on the packed canvas; the
    weight of every object pixel is looked up and summed per ROI. Per-ROI OpenCV calls on
    tiny masks cost ~15 us each in call overhead; this ~1 us.
    """
    canvas = np.zeros((cv.height, cv.width), np.uint8)
    where = np.repeat(cv.y * cv.width + cv.x, px.counts) + px.row.astype(np.int64) * cv.width
    where += px.col
    canvas.ravel()[where] = 1
    border = canvas - cv2.erode(canvas, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    conf = cv2.filter2D(border, cv2.CV_8U, _PERIM_KERNEL, borderType=cv2.BORDER_CONSTANT)
    return px.per_roi(_PERIM_WEIGHTS[conf.ravel()[where]])


def _hulls(px: _Pixels, cv: _Canvas, valid: np.ndarray) -> tuple[list, np.ndarray]:
    """Convex hull (ordered (k, 1, 2) int32 canvas points) and convex area of every ROI.

    The hull of an object is the hull of the first and last pixel of each of its rows
    (every other pixel lies between them), so no contour is traced: one ``convexHull`` and
    one ``fillConvexPoly`` per ROI, on a packed canvas (no per-ROI allocation). The filled
    pixels are counted per ROI from the column sums of each shelf.
    """
    # the ends of every row-run, in canvas coordinates (hull points are integers, so
    # shifting them changes nothing but saves a per-ROI shift before filling)
    first = px.run_starts
    ends = np.empty(2 * len(first), np.int64)
    ends[0::2] = first
    ends[1::2] = np.append(first[1:], len(px.row)) - 1
    roi = np.repeat(np.arange(len(px.counts)), np.diff(np.append(px.run_rois, len(first))))
    roi = np.repeat(roi, 2)
    pts = np.stack([px.col[ends] + cv.x[roi], px.row[ends] + cv.y[roi]], 1).astype(np.int32)
    bounds = 2 * np.append(px.run_rois, len(first))
    filled = np.zeros((cv.height, cv.width), np.uint8)
    hulls = []
    for i in np.flatnonzero(valid).tolist():
        hull = cv2.convexHull(pts[bounds[i] : bounds[i + 1]])
        hulls.append(hull)
        cv2.fillConvexPoly(filled, hull, 1)
    cum = np.zeros((len(cv.shelf_y) - 1, cv.width + 1), np.int64)
    for s in range(len(cv.shelf_y) - 1):
        band = filled[cv.shelf_y[s] : cv.shelf_y[s + 1]]
        if band.size:
            np.cumsum(cv2.reduce(band, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0], out=cum[s, 1:])
    convex = (cum[cv.shelf, cv.x + px.shapes[:, 1]] - cum[cv.shelf, cv.x]).astype(np.float64)
    return hulls, np.where(valid, convex, np.nan)


def _ferets(hulls: Sequence[np.ndarray], span: int) -> tuple[np.ndarray, np.ndarray]:
    """Maximum and minimum caliper diameters of each hull (pixel centres), plus one pixel.

    The maximum is the largest distance between two hull points; the minimum is the
    smallest, over the hull's edges, of the largest distance of a hull point from the edge's
    line (the minimum width of a convex polygon is reached with one side flush with an
    edge, as ImageJ's MinFeret). Hulls of one or two points have width 0. Hulls with the
    same number of points are done together: a few numpy calls for thousands of ROIs.
    """
    sizes = np.fromiter(map(len, hulls), np.int64, len(hulls))
    # Integer arithmetic is exact; int32 (half the memory of float64) while coordinate
    # differences within a ROI (< span, its largest side) keep squares and cross products
    # below 2**31.
    pts = np.concatenate(hulls).reshape(-1, 2).astype(np.int32 if span < 2**15 else np.int64)
    offset = np.cumsum(sizes) - sizes
    dmax = np.zeros(len(hulls))
    wmin = np.zeros(len(hulls))
    for k in np.unique(sizes).tolist():
        same = np.flatnonzero(sizes == k)
        step = max(1, 1_000_000 // (k * k))
        for i in range(0, len(same), step):
            g = same[i : i + step]
            p = pts[offset[g, None] + np.arange(k)]  # (G, k, 2)
            dx = p[:, :, None, 0] - p[:, None, :, 0]  # dx[g, i, j] = x_i - x_j
            dy = p[:, :, None, 1] - p[:, None, :, 1]
            dmax[g] = (dx * dx + dy * dy).max(axis=(1, 2))
            if k < 3:
                continue  # a point or a segment: width 0
            ex = np.roll(p[..., 0], -1, axis=1) - p[..., 0]  # edge j runs from p_j to p_j+1
            ey = np.roll(p[..., 1], -1, axis=1) - p[..., 1]
            # |edge_j x (p_i - p_j)|: distance of point i from edge j's line, times |edge_j|
            cross = np.abs(ex[:, None, :] * dy - ey[:, None, :] * dx).max(axis=1)
            wmin[g] = (cross / np.hypot(ex, ey)).min(axis=1)
    # +1: diameters between pixel centres miss half a pixel at each end.
    return np.sqrt(dmax) + 1, wmin + 1


def _moments(px: _Pixels) -> dict[str, np.ndarray]:
    """Spatial, central and normalised moments up to order 3, as ``cv2.moments(mask, True)``.

    Raw moments are sums of integer powers of pixel coordinates, summed per image row and
    then per ROI (floats hold integers below 2**53 exactly), and central moments follow
    OpenCV's own formulas, so the values are OpenCV's. Arrays cover the non-empty ROIs.
    """
    x = px.col.astype(np.float64)
    xx = x * x
    first = px.run_starts
    # per row-run: pixel count, sum x, x^2, x^3, and the run's row y
    c = np.diff(np.append(first, len(x))).astype(np.float64)
    sx = np.add.reduceat(x, first)
    sxx = np.add.reduceat(xx, first)
    xx *= x
    sxxx = np.add.reduceat(xx, first)
    y = px.row[first].astype(np.float64)
    yy = y * y
    runs = px.run_rois[px.counts > 0]

    def total(v: np.ndarray) -> np.ndarray:
        return np.add.reduceat(v, runs)

    m00 = px.counts[px.counts > 0].astype(np.float64)
    m10, m01 = total(sx), total(y * c)
    m20, m11, m02 = total(sxx), total(y * sx), total(yy * c)
    m30, m21, m12, m03 = total(sxxx), total(y * sxx), total(yy * sx), total(yy * y * c)
    inv = 1.0 / m00
    cx, cy = m10 * inv, m01 * inv
    mu20 = m20 - m10 * cx
    mu11 = m11 - m10 * cy
    mu02 = m02 - m01 * cy
    mu30 = m30 - cx * (3 * mu20 + cx * m10)
    mu21 = m21 - cx * (2 * mu11 + cx * m01) - cy * mu20
    mu12 = m12 - cy * (2 * mu11 + cy * m10) - cx * mu02
    mu03 = m03 - cy * (3 * mu02 + cy * m01)
    s2 = inv * inv
    s3 = s2 * np.sqrt(inv)
    return {
        "m00": m00, "m10": m10, "m01": m01, "mu20": mu20, "mu11": mu11, "mu02": mu02,
        "nu20": mu20 * s2, "nu11": mu11 * s2, "nu02": mu02 * s2,
        "nu30": mu30 * s3, "nu21": mu21 * s3, "nu12": mu12 * s3, "nu03": mu03 * s3,
    }  # fmt: skip


def _hu(mo: Mapping[str, np.ndarray]) -> np.ndarray:
    """The 7 Hu invariants from normalised central moments (``cv2.HuMoments``'s formulas)."""
    nu20, nu11, nu02 = mo["nu20"], mo["nu11"], mo["nu02"]
    nu30, nu21, nu12, nu03 = mo["nu30"], mo["nu21"], mo["nu12"], mo["nu03"]
    t0, t1 = nu30 + nu12, nu21 + nu03
    q0, q1 = t0 * t0, t1 * t1
    n4 = 4 * nu11
    s, d = nu20 + nu02, nu20 - nu02
    hu = np.empty((len(nu20), 7))
    hu[:, 0] = s
    hu[:, 1] = d * d + n4 * nu11
    hu[:, 3] = q0 + q1
    hu[:, 5] = d * (q0 - q1) + n4 * t0 * t1
    t0 = t0 * (q0 - 3 * q1)
    t1 = t1 * (3 * q0 - q1)
    q0 = nu30 - 3 * nu12
    q1 = 3 * nu21 - nu03
    hu[:, 2] = q0 * q0 + q1 * q1
    hu[:, 4] = q0 * t0 + q1 * t1
    hu[:, 6] = q1 * t0 - q0 * t1
    return hu


def measure_rois(
    crops: Sequence[np.ndarray], masks: Sequence[np.ndarray], *, pixel_size_um: float | None = None
) -> dict[str, np.ndarray]:
    """Measure every ROI from its mask and the gray values under it.

    Parameters
    ----------
    crops : sequence of (h, w) uint8/uint16 (or (h, w, 3) BGR, converted to gray)
        Flat-fielded gray crops (dark objects on a bright background). Intensity features
        are computed on the *inverted* values (``dtype maximum - pixel``, ZooProcess
        convention: darker object, higher value); each crop uses its own dtype's maximum
        (255 or 65535), so 8- and 16-bit crops may be mixed.
    masks : sequence of (h, w) bool (or any numeric array, nonzero = object)
        Object pixels, same shape as the crop. The object may have several parts and may
        touch or fill the crop.
    pixel_size_um : float, optional
        Adds physical columns: lengths with ``_um``, areas with ``_um2`` suffixes.

    Returns
    -------
    dict of str -> (n,) float64 array
        The columns of :data:`FEATURE_COLUMNS` (pixel units; orientation in radians as
        skimage: angle between the row axis and the major axis), plus physical-unit
        columns when ``pixel_size_um`` is given. Every value is finite except the NaNs
        listed under Notes, which the writers turn into empty fields.

    Notes
    -----
    ``perimeter`` is skimage's 4-connectivity estimate; ``convex_area`` counts the pixels
    that OpenCV's ``fillConvexPoly`` fills for the convex hull of the object's pixel centres
    (skimage's ``area_convex`` uses pixel corners and is ~1 px wider: within a few percent
    for objects over ~100 px); ``feret_max`` is the largest distance between two hull
    points and ``feret_min`` the minimum caliper width of the hull (ImageJ's MinFeret), each
    plus one pixel; ``circularity`` is ``4 pi area / perimeter**2``.

    Degenerate shapes have these conventions, so one odd ROI never fails a chunk's outputs:

    - ``elongation`` is ``max(major, 1) / max(minor, 1)``: an axis shorter than one pixel is
      not resolved, so it counts as one pixel (the pixel width). A 1-pixel-wide line (a
      line-scan column defect: bbox width 1) has a minor axis of 0 and gets its major axis
      length, a single pixel gets 1; objects whose axes are at least one pixel long keep
      ``major / minor``.
    - ``minor_axis_length`` is skimage's value: 0 for a straight 1-px line, and
      ``major_axis_length`` is 0 for a single pixel. ``eccentricity`` is 1 for a line and
      0 for a single pixel; ``feret_min`` is 1 (one pixel) for a line or a single pixel.
    - ``perimeter`` is 0 for objects of one or two pixels (skimage's estimator finds no
      border configuration in them), and their ``circularity`` is NaN (an empty field):
      no value makes sense.
    - ``skew`` and ``kurtosis`` are NaN (empty) when every object pixel has the same gray
      value (``std`` 0: a single pixel, a saturated object), as in scipy.
    - An empty mask (no object pixel) gives ``area`` and ``esd`` 0 and NaN for every other
      feature.
    """
    n = len(crops)
    if len(masks) != n:
        raise ValueError(f"measure_rois: {n} crops but {len(masks)} masks")
    if pixel_size_um is not None and not pixel_size_um > 0:
        raise ValueError(f"pixel_size_um must be > 0, got {pixel_size_um}")
    out = {k: np.full(n, np.nan) for k in FEATURE_COLUMNS}
    if n == 0:
        return _add_units(out, pixel_size_um)
    px = _gather(crops, masks)
    area = px.counts.astype(np.float64)
    out["area"] = area
    out["esd"] = 2 * np.sqrt(area / np.pi)
    valid = px.counts > 0
    if not valid.any():
        return _add_units(out, pixel_size_um)
    a = area[valid]
    canvas = _pack(px.shapes)
    hulls, convex = _hulls(px, canvas, valid)
    perim = _perimeters(px, canvas)
    mo = _moments(px)
    # bounding box of the object inside its crop (rows are sorted within a ROI)
    first = px.starts[valid]
    bbox_h = px.row[first + px.counts[valid] - 1] - px.row[first] + 1.0
    bbox_w = np.maximum.reduceat(px.col, first) - np.minimum.reduceat(px.col, first) + 1.0

    # Same as skimage: inertia tensor eigenvalues, axes = 4 sqrt(eigenvalue).
    ia, ib, ic = mo["mu20"] / a, mo["mu11"] / a, mo["mu02"] / a
    root = np.sqrt(((ia - ic) / 2) ** 2 + ib**2)
    l1 = (ia + ic) / 2 + root
    l2 = np.maximum((ia + ic) / 2 - root, 0)
    major = 4 * np.sqrt(l1)
    minor = 4 * np.sqrt(l2)
    # skimage's inertia tensor, indexed (row, col), is [[a, -b], [-b, c]] with cv2's
    # mu20 along x (columns); its orientation is 0.5 atan2(-2 T01, T11 - T00).
    orientation = np.where(
        ia - ic == 0, np.where(ib > 0, np.pi / 4, -np.pi / 4), 0.5 * np.arctan2(2 * ib, ic - ia)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        ecc = np.where(l1 > 0, np.sqrt(np.maximum(1 - l2 / l1, 0)), 0.0)
        circularity = np.where(perim > 0, 4 * np.pi * a / perim**2, np.nan)
    feret_max, feret_min = _ferets(hulls, int(px.shapes.max()))
    hu = _hu(mo)
    columns = {
        "perimeter": perim,
        "major_axis_length": major,
        "minor_axis_length": minor,
        "orientation": orientation,
        "eccentricity": ecc,
        "solidity": a / convex[valid],
        "extent": a / (bbox_w * bbox_h),
        "feret_max": feret_max,
        "feret_min": feret_min,
        "bbox_width": bbox_w,
        "bbox_height": bbox_h,
        # axes under one pixel are unresolved: a 1-px line's elongation is its length
        "elongation": np.maximum(major, 1.0) / np.maximum(minor, 1.0),
        "circularity": circularity,
        "centroid_x": mo["m10"] / a,
        "centroid_y": mo["m01"] / a,
        **{f"hu_{k + 1}": hu[:, k] for k in range(7)},
        **_intensity(px),
    }
    for name, values in columns.items():
        out[name][valid] = values
    out["convex_area"] = convex
    return _add_units(out, pixel_size_um)


def _intensity(px: _Pixels) -> dict[str, np.ndarray]:
    """Mean, std, min, max, median, skewness, kurtosis of the inverted object pixels.

    Moments are sums over each ROI's run of the pixel vector; min, max and median come from
    one integer sort of (ROI, value) keys. Arrays cover the non-empty ROIs.
    """
    valid = px.counts > 0
    cnt = px.counts[valid]
    v = px.value.astype(np.float64)
    mean = px.per_roi(v) / cnt
    v -= np.repeat(mean, cnt)
    d2 = v * v
    m2 = px.per_roi(d2) / cnt
    d2 *= v
    m3 = px.per_roi(d2) / cnt
    d2 *= v
    m4 = px.per_roi(d2) / cnt
    levels = 65536 if px.sixteen else 256
    n = len(px.counts)
    key_type = np.int32 if n * levels < 2**31 else np.int64
    key = np.repeat(np.arange(n, dtype=key_type) * levels, px.counts)
    key += px.value
    key.sort()
    vs = (key & (levels - 1)).astype(np.float64)
    first = px.starts[valid]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "mean": mean,
            "std": np.sqrt(m2),
            "min": vs[first],
            "max": vs[first + cnt - 1],
            "median": (vs[first + (cnt - 1) // 2] + vs[first + cnt // 2]) / 2,
            "skew": np.where(m2 > 0, m3 / m2**1.5, np.nan),
            "kurtosis": np.where(m2 > 0, m4 / m2**2 - 3, np.nan),  # excess, as scipy
        }


def _add_units(table: dict[str, np.ndarray], pixel_size_um: float | None) -> dict[str, np.ndarray]:
    if pixel_size_um is None:
        return table
    for k in _LENGTHS:
        table[f"{k}_um"] = table[k] * pixel_size_um
    for k in _AREAS:
        table[f"{k}_um2"] = table[k] * pixel_size_um**2
    return table
