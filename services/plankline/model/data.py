"""ROI preprocessing for the classifier: one way from a crop to a network input.

Every path (training, evaluation, ONNX inference, the Triton python model)
goes through :func:`model_inputs`, so a model never sees pixels prepared
differently from the ones it was trained on.

The recipe follows Plankline's sparse CNN (DESIGN.md, "Classifier notes"):

1. colour -> gray (most plankton imagers are monochrome; FlowCam and NDSB
   JPEGs are RGB copies of a gray image). Colour imagers (the Scripps Plankton
   Camera of the lake set) keep their colour as six numbers measured first
   (:func:`colour_features`), fed beside the measurements of step 4;
2. invert and subtract the background, estimated as the median of the crop's
   border pixels, so the (bright) background becomes exactly 0 and the
   (dark) organism positive. A zero background is what makes the dense
   execution of a sparse-CNN equivalent to the sparse one, and it removes
   illumination differences between instruments and frames;
3. place the crop UNSCALED at the centre of a fixed ``canvas x canvas``
   field, so absolute size stays a cue (a big copepod and a small one look
   different, as they do to a taxonomist). Only crops larger than the canvas
   are shrunk (``cv2.INTER_AREA``); how much they were shrunk is returned as
   ``log2(shrink)`` and fed to the network in its second input, so a big
   shrunk object keeps its size cue;
4. measure the organism on the unshrunk crop (:data:`SHAPE_FEATURES`: size,
   shape, grey levels, Hu moments; what the random-forest baseline that
   ecologists use sees) and append the measurements to that second input.
   The network sees both what a taxonomist sees and what ZooProcess
   measures: on the real FlowCam set, one network reaches macro-F1 0.839
   over 20 seeded splits with them (0.807 without, on 10), the RF alone
   0.809 (``scripts/eval_classifier.py``; README "Classifier").

Also here: reading a folder-per-class training library with the checks
users expect (class minimum, empty classes, unreadable files), deterministic
augmentation of single crops, and the torch ``Dataset`` used by training.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
"""File suffixes read as ROI images (case-insensitive)."""


# --------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------


POLARITIES: tuple[str, ...] = ("bright", "dark")
"""Imager conventions. ``bright``: bright-field, a dark organism on a bright background
(ISIIS, FlowCam, ZooScan); ``dark``: dark-field, a bright organism on a black background
(UVP5/UVP6, the Scripps Plankton Camera, IFCB dark-field)."""


def _gray(crop: np.ndarray) -> tuple[np.ndarray, float]:
    """The crop as one gray channel (unchanged dtype) and the factor that maps it to [0, 1]."""
    a = np.asarray(crop)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if a.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        a = cv2.cvtColor(a, code)
    if a.ndim != 2:
        raise ValueError(f"ROI must be 2-D gray or (h, w, 3|4) colour, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"ROI is empty, shape {a.shape}")
    if a.dtype == np.uint8:
        return a, 1.0 / 255.0
    if a.dtype == np.uint16:
        return a, 1.0 / 65535.0
    if a.dtype.kind == "f":
        return a, 1.0
    raise ValueError(f"ROI must be uint8, uint16 or float, got {a.dtype}")


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate((a[0], a[-1], a[:, 0], a[:, -1]))


def normalize_crop(crop: np.ndarray, polarity: str = "bright") -> np.ndarray:
    """Gray, background-subtracted float32 copy of one ROI in [0, 1], organism positive.

    Every imager's crops end in the same internal convention (background 0,
    organism > 0), so one network, one canvas and one set of measurements
    serve bright-field and dark-field instruments alike.

    Parameters
    ----------
    crop : ndarray
        ``(h, w)`` gray or ``(h, w, 3|4)`` BGR(A) image, uint8 or uint16.
    polarity : {"bright", "dark"}
        The imager's convention (:data:`POLARITIES`): ``bright`` (dark organism
        on a bright background) is inverted, ``dark`` (bright organism on
        black) is not. The library's polarity is found by
        :func:`library_polarity` at training and stored with the model.

    Returns
    -------
    ndarray
        ``(h, w)`` float32: 0 where the pixel is as bright as the background
        (median of the border pixels) or on the background's side of it, up to
        1 for black on white (bright-field) or white on black (dark-field).

    Raises
    ------
    ValueError
        On empty crops, unsupported shapes/dtypes or an unknown polarity.
    """
    return _normalize(crop, polarity, check=False)[0]


def _normalize(crop: np.ndarray, polarity: str, *, check: bool) -> tuple[np.ndarray, str | None]:
    """:func:`normalize_crop`, and with ``check`` the crop's own polarity from the same pass."""
    a, scale = _gray(crop)
    border = _border(a)
    bg = _median(border)
    if polarity == "bright":
        out = np.subtract(bg, a, dtype=np.float32)
    elif polarity == "dark":
        out = np.subtract(a, bg, dtype=np.float32)
    else:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    own = _own_polarity(out, border, bg, scale, polarity) if check else None
    out *= scale
    np.maximum(out, 0.0, out=out)
    return out, own


def _own_polarity(d: np.ndarray, border: np.ndarray, bg: float, scale: float, assumed: str) -> str:
    """The polarity a crop shows, from its departure ``d`` from the background towards the
    ``assumed`` polarity's organism side (in the crop's own units); see :func:`detect_polarity`."""
    noise = 1.4826 * _median(np.abs(border.astype(np.float32) - np.float32(bg)))
    t = np.float32(max(3.0 * noise, 0.04 / scale))
    if d.size > 1024:  # every 4th pixel weighs an organism as well, at a quarter of the cost
        d = d[::2, ::2]
    toward = float(np.maximum(d - t, 0.0).sum())
    away = float(np.maximum(-d - t, 0.0).sum())
    if toward == away:  # nothing departs from the background: decide by its level
        return "bright" if bg * scale >= 0.5 else "dark"
    other = "dark" if assumed == "bright" else "bright"
    return assumed if toward > away else other


def detect_polarity(crop: np.ndarray) -> str:
    """``"bright"`` or ``"dark"``: which side of the background the organism lies on.

    The background is the median of the border pixels; the organism is what
    departs from it by more than the border's noise (3 robust standard
    deviations, at least 4% of the grey range). Whichever side holds more of
    that departure (sum of the excess) is the organism's: darker than the
    background means bright-field. Thin bright halos around a dark FlowCam cell
    or dark specks on a dark-field image weigh less than the organism's body.
    A uniform crop (no organism) is decided by the background's level.

    Examples
    --------
    >>> img = np.full((20, 20), 220, np.uint8); img[5:15, 5:15] = 40
    >>> detect_polarity(img), detect_polarity(255 - img)
    ('bright', 'dark')
    """
    own = _normalize(crop, "bright", check=True)[1]
    assert own is not None
    return own


def _median(v: np.ndarray) -> float:
    """Median of a 1-D array by partial sort (np.median costs ~40 us per call on small ones)."""
    n = len(v)
    k = n // 2
    if n % 2:
        return float(np.partition(v, k)[k])
    p = np.partition(v, (k - 1, k))
    return 0.5 * (float(p[k - 1]) + float(p[k]))


def library_polarity(crops: Sequence[np.ndarray]) -> tuple[str, int]:
    """The majority polarity of a set of raw ROIs and how many images disagree with it.

    One imager records one polarity; single crops can fool
    :func:`detect_polarity` (an empty frame, a crop cut through a big
    organism), the majority of a library does not. Ties go to ``bright``
    (the convention of models trained before polarity was detected).
    """
    n_dark = sum(detect_polarity(c) == "dark" for c in crops)
    n_bright = len(crops) - n_dark
    return ("dark", n_bright) if n_dark > n_bright else ("bright", n_dark)


def to_bright_field(crop: np.ndarray, polarity: str) -> np.ndarray:
    """The crop in the bright-field convention (gray, inverted when ``polarity == "dark"``).

    For code that reads raw crops with the bright-field convention in mind
    (the feature baseline's measurements of grey levels). Bright-field crops
    are returned unchanged.
    """
    if polarity == "bright":
        return crop
    if polarity != "dark":
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    a, scale = _gray(crop)
    top = a.dtype.type(1.0 / scale) if a.dtype.kind != "f" else a.dtype.type(1.0)
    return np.subtract(top, a)


def place_on_canvas(
    norm_crops: Sequence[np.ndarray], canvas: int, fill: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Centre normalised crops on zero canvases; shrink what doesn't fit, enlarge what is tiny.

    Parameters
    ----------
    norm_crops : sequence of ndarray
        Outputs of :func:`normalize_crop` (2-D float32, background 0).
    canvas : int
        Side of the square input field in pixels.
    fill : int
        Crops whose longer side is under ``fill`` px are enlarged to it
        (bilinear), so that a 15 px organism still spans several cells after
        the network's first stride; 0 (models before it) places them unscaled.

    Returns
    -------
    x : ndarray
        ``(n, 1, canvas, canvas)`` float32.
    log_shrink : ndarray
        ``(n, 1)`` float32, ``log2(original side / placed side)``: 0 for crops
        placed unscaled, negative for enlarged ones, so absolute size survives.
    """
    n = len(norm_crops)
    x = np.zeros((n, 1, canvas, canvas), np.float32)
    log_shrink = np.zeros((n, 1), np.float32)
    fill = min(fill, canvas)
    for i, c in enumerate(norm_crops):
        h, w = c.shape
        side = max(h, w)
        if side > canvas or side < fill:
            target = canvas if side > canvas else fill
            s = target / side
            nw, nh = max(1, round(w * s)), max(1, round(h * s))
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            c = cv2.resize(c, (nw, nh), interpolation=interp)
            log_shrink[i, 0] = math.log2(side / target)
            h, w = nh, nw
        y0, x0 = (canvas - h) // 2, (canvas - w) // 2
        x[i, 0, y0 : y0 + h, x0 : x0 + w] = c
    return x, log_shrink


SHAPE_FEATURES: tuple[str, ...] = (
    "area",
    "perimeter",
    "major_axis_length",
    "minor_axis_length",
    "convex_area",
    "solidity",
    "eccentricity",
    "feret_max",
    "feret_min",
    "elongation",
    "circularity",
    "mean",
    "std",
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
)
"""Measurements given to the network beside the image: the random-forest baseline's
features that do not change when an organism is rotated or flipped (no orientation,
bounding box, extent or position), measured on the unshrunk crop."""

_LOG_SCALED = frozenset(
    {
        "area",
        "perimeter",
        "major_axis_length",
        "minor_axis_length",
        "convex_area",
        "feret_max",
        "feret_min",
        "elongation",
    }
)


def _imager_uint8(norm_crop: np.ndarray) -> np.ndarray:
    """A normalised crop back in the imager's convention: dark organism, white background."""
    v = norm_crop * np.float32(255.0)
    np.rint(v, out=v)
    np.clip(v, 0, 255, out=v)
    out = v.astype(np.uint8)
    return np.subtract(255, out, out=out)


def object_measurements(norm_crops: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Measurements (:func:`plankline.imaging.measure.measure_rois`) of each normalised
    crop's object (:func:`object_masks`): what :func:`shape_features` and
    :func:`min_object_px` read, so training measures its library once for both."""
    from plankline.imaging.measure import measure_rois

    if len(norm_crops) == 0:
        return measure_rois([], [])
    return measure_rois(*_imager_masks(norm_crops))


def shape_features(norm_crops: Sequence[np.ndarray]) -> np.ndarray:
    """The :data:`SHAPE_FEATURES` of each normalised crop, scaled for a network
    (:func:`shape_features_of` its :func:`object_measurements`)."""
    return shape_features_of(object_measurements(norm_crops))


def shape_features_of(measured: Mapping[str, np.ndarray]) -> np.ndarray:
    """The :data:`SHAPE_FEATURES` of crops' :func:`object_measurements`, scaled for a network.

    Sizes are ``log1p`` (a 10 px and a 10,000 px object differ by 3 units, not
    10,000), Hu moments ``-sign * log10 |hu|`` (their usual scale), intensities
    in [0, 1]; what cannot be measured (no object) is 0.

    Returns
    -------
    ndarray
        ``(n, len(SHAPE_FEATURES))`` float32.
    """
    n = len(measured["area"])
    out = np.zeros((n, len(SHAPE_FEATURES)), np.float32)
    for j, name in enumerate(SHAPE_FEATURES):
        v = np.asarray(measured[name], np.float64)
        if name in _LOG_SCALED:
            v = np.log1p(np.maximum(v, 0.0))
        elif name.startswith("hu_"):
            v = -np.sign(v) * np.log10(np.maximum(np.abs(v), 1e-30))
        elif name in ("mean", "std", "max", "median"):
            v = v / 255.0
        out[:, j] = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def _imager_masks(
    norm_crops: Sequence[np.ndarray],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The crops in the imager's convention (as :func:`_imager_uint8`) and their object
    masks (:func:`object_masks`), in one pass over the crops laid end to end."""
    n = len(norm_crops)
    h = np.fromiter((c.shape[0] for c in norm_crops), np.int64, n)
    w = np.fromiter((c.shape[1] for c in norm_crops), np.int64, n)
    v = np.concatenate([c.ravel() for c in norm_crops]) * np.float32(255.0)
    np.rint(v, out=v)
    np.clip(v, 0, 255, out=v)
    q = v.astype(np.uint8)  # q = 255 - img
    flat = np.subtract(255, q)
    ends = np.cumsum(h * w).tolist()
    imgs = [
        flat[e - hi * wi : e].reshape(hi, wi)
        for e, hi, wi in zip(ends, h.tolist(), w.tolist(), strict=True)
    ]
    return imgs, _object_masks(q, h, w, imgs)


MIN_OBJECT_SHARE = 0.02
"""Most of a model's training objects its size gate may hold back (:func:`min_object_px`).
On the 30,336 NDSB vignettes 0.6 % of the objects are under 7 px, 1.1 % under 8, 2.1 %
under 9: 2 % gives the shipped model's gate of 8 px (before it was recorded per model,
the one gate of every model)."""


def min_object_px(measured: Mapping[str, np.ndarray]) -> int:
    """The size gate a model trained on these crops should apply (``meta.json``).

    ``measured``: the training crops' :func:`object_measurements`. The largest size that
    at most :data:`MIN_OBJECT_SHARE` of their objects are under (the longer side of the
    object's bounding box, as ``plankline run`` gates ROIs): a ROI smaller than 98 % of
    the objects a model learned from is outside what it knows, and its answer would be
    a guess (``plankline run`` labels it ``below_model_size``). 0 (no gate) when no
    crop holds an object.
    """
    sides = np.maximum(measured["bbox_height"], measured["bbox_width"])
    sides = sides[np.asarray(measured["area"]) > 0].astype(np.int64)
    if not len(sides):
        return 0
    held_back = int(MIN_OBJECT_SHARE * len(sides))  # at most this many are under the gate
    return int(np.partition(sides, held_back)[held_back])


def _ragged(counts: np.ndarray) -> np.ndarray:
    """``0 .. k-1`` for each ``k`` of ``counts``, end to end."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def object_masks(imgs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """:func:`~plankline.imaging.segment.object_mask` of each crop, with less work per crop.

    Equal to ``[object_mask(i) for i in imgs]`` (tested on real ROIs of every set, both
    polarities). For 2-D uint8 crops whose border is more than half white, which is every
    crop the classifier makes (its background is exactly white), ``object_mask``'s polarity
    decision (border median against the mean) is settled by that count: the median is
    white, which no mean exceeds, so the object is dark. The counts of all crops come from
    one vector of their border pixels; the median, mean, minimum and maximum per crop are
    not computed, and the blur, Otsu threshold, labelling and hole filling run as in
    ``object_mask``. Other crops go to ``object_mask`` itself.
    """
    from plankline.imaging.segment import object_mask

    n = len(imgs)
    if n == 0 or any(i.ndim != 2 or i.dtype != np.uint8 or i.size == 0 for i in imgs):
        return [object_mask(i) for i in imgs]
    h = np.fromiter((i.shape[0] for i in imgs), np.int64, n)
    w = np.fromiter((i.shape[1] for i in imgs), np.int64, n)
    q = np.concatenate([i.ravel() for i in imgs])
    np.subtract(255, q, out=q)
    return _object_masks(q, h, w, imgs)


def _object_masks(
    q: np.ndarray, h: np.ndarray, w: np.ndarray, imgs: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """:func:`object_masks` of crops given end to end as ``q = 255 - img`` (flat uint8)."""
    from plankline.imaging.segment import main_object, object_mask

    n = len(imgs)
    size = h * w
    off = np.cumsum(size) - size
    # border pixels as object_mask's: first row, last row, first column, last column
    rw, rh, ow, oh, wh = (
        _ragged(w),
        _ragged(h),
        np.repeat(off, w),
        np.repeat(off, h),
        np.repeat(w, h),
    )
    border = np.concatenate(
        [ow + rw, ow + np.repeat((h - 1) * w, w) + rw, oh + rh * wh, oh + rh * wh + wh - 1]
    )
    owner = np.concatenate([np.repeat(np.arange(n), w)] * 2 + [np.repeat(np.arange(n), h)] * 2)
    white = np.bincount(owner[q[border] == 0], minlength=n)
    dark = (white >= h + w + 1).tolist()  # more than half of the 2 (h + w) border pixels
    masks: list[np.ndarray] = []
    for i, (o, hi, wi) in enumerate(zip(off.tolist(), h.tolist(), w.tolist(), strict=True)):
        if not dark[i]:
            masks.append(object_mask(imgs[i]))
            continue
        work = q[o : o + hi * wi].reshape(hi, wi)
        if hi >= 5 and wi >= 5:
            work = cv2.GaussianBlur(work, (3, 3), 0)
        # a uniform crop (object_mask: no object) is all 0 here: nothing passes Otsu
        masks.append(main_object(work))
    return masks


COLOUR_FEATURES: tuple[str, ...] = (
    "blue_share",
    "green_share",
    "red_share",
    "blue_spread",
    "green_spread",
    "red_spread",
)
"""The organism's colour, for colour imagers (the Scripps Plankton Camera): each channel's
share of the departure from the background, and how much that share varies over the
organism. Gray crops (and colour copies of gray ones) give ``1/3, 1/3, 1/3, 0, 0, 0``."""

_GRAY_COLOUR = np.array([1 / 3, 1 / 3, 1 / 3, 0.0, 0.0, 0.0], np.float32)


def colour_features(crops: Sequence[np.ndarray]) -> np.ndarray:
    """The :data:`COLOUR_FEATURES` of raw ROIs (before they are made gray).

    Every pixel's departure from the background (per-channel median of the border)
    is split into channel shares; their mean and spread, weighted by the square of
    the departure, describe the organism's colour and not the background's noise.
    No mask and no polarity are needed: the departure has the same sign-free shares
    on bright-field and dark-field images, and its weight picks out the organism.
    On the real dark-field lake camera (35 classes of 10 colour crops) the random
    forest on our measurements rises from macro-F1 0.47 to 0.61 with them.

    Parameters
    ----------
    crops : sequence of ndarray
        Raw ROIs: ``(h, w)`` gray or ``(h, w, 3|4)`` BGR(A), any dtype.

    Returns
    -------
    ndarray
        ``(n, 6)`` float32: blue, green, red share (summing to 1), then their
        weighted standard deviations over the organism.

    Examples
    --------
    >>> img = np.zeros((20, 20, 3), np.uint8); img[5:15, 5:15] = (0, 100, 200)
    >>> np.round(colour_features([img, img[:, :, 0]]).astype(float), 3).tolist()
    [[0.0, 0.333, 0.667, 0.0, 0.0, 0.0], [0.333, 0.333, 0.333, 0.0, 0.0, 0.0]]
    """
    out = np.tile(_GRAY_COLOUR, (len(crops), 1))
    for i, crop in enumerate(crops):
        a = np.asarray(crop)
        if a.ndim != 3 or a.shape[2] < 3:
            continue
        a = a[:, :, :3]
        if (a[:, :, 0] == a[:, :, 1]).all() and (a[:, :, 1] == a[:, :, 2]).all():
            continue  # a colour copy of a gray image (FlowCam, NDSB JPEGs)
        f = a.astype(np.float32)
        bg = np.median(_border(f), axis=0)
        d = np.abs(f - bg).reshape(-1, 3)
        s = d.sum(1)
        w = s * s
        total = float(w.sum())
        if total <= 0.0:
            continue
        q = d / np.maximum(s, np.float32(1e-12))[:, None]
        mean = w @ q / total
        sd = np.sqrt(np.maximum(w @ np.square(q - mean) / total, 0.0))
        out[i, :3] = mean
        out[i, 3:] = sd
    return out


def feature_names(shapes: bool, colour: bool = False) -> list[str]:
    """Names of the network's ``features`` input columns, in order."""
    return [
        "log2_shrink",
        *(SHAPE_FEATURES if shapes else ()),
        *(COLOUR_FEATURES if colour else ()),
    ]


def network_inputs(
    norm_crops: Sequence[np.ndarray],
    canvas: int,
    *,
    shapes: bool,
    colour: np.ndarray | None = None,
    fill: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`model_inputs` for crops already normalised (training keeps them so).

    ``colour`` is :func:`colour_features` of the raw crops (colour models), appended last.
    """
    x, s = place_on_canvas(norm_crops, canvas, fill)
    if shapes:
        s = np.hstack([s, shape_features(norm_crops)])
    if colour is not None:
        s = np.hstack([s, np.asarray(colour, np.float32)])
    return x, s


def model_inputs(
    crops: Sequence[np.ndarray],
    canvas: int,
    *,
    shapes: bool,
    polarity: str = "bright",
    colour: bool = False,
    fill: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs for a batch of raw ROIs (the one preprocessing path).

    Parameters
    ----------
    crops : sequence of ndarray
        Raw ROIs as read from disk or a ROI tar (gray or colour, any size).
    canvas : int
        Input field side in pixels (the model's ``canvas``, see ``meta.json``).
    shapes : bool
        Whether the model takes the measurements (``meta.json`` ``shapes``).
    polarity : {"bright", "dark"}
        The imager's convention the model was trained on (``meta.json``
        ``polarity``; models without it are bright-field).
    colour : bool
        Whether the model takes the :data:`COLOUR_FEATURES` (``meta.json``
        ``colour``; models without it do not).
    fill : int
        Enlarge crops smaller than this to it (``meta.json`` ``fill``; 0 for
        models without it), see :func:`place_on_canvas`.

    Returns
    -------
    image : ndarray
        ``(n, 1, canvas, canvas)`` float32, background 0, organism > 0.
    features : ndarray
        ``(n, len(feature_names(shapes, colour)))`` float32: ``log2`` shrink
        factor, then the :data:`SHAPE_FEATURES` when ``shapes``, then the
        :data:`COLOUR_FEATURES` when ``colour``.

    Examples
    --------
    >>> x, f = model_inputs([np.full((10, 20), 200, np.uint8)], 64, shapes=False)
    >>> x.shape, float(x.max()), f.shape
    ((1, 1, 64, 64), 0.0, (1, 1))
    """
    if canvas < 8:
        raise ValueError(f"canvas must be >= 8 px, got {canvas}")
    return network_inputs(
        [normalize_crop(c, polarity) for c in crops],
        canvas,
        shapes=shapes,
        colour=colour_features(crops) if colour else None,
        fill=fill,
    )


def checked_model_inputs(
    crops: Sequence[np.ndarray],
    canvas: int,
    *,
    shapes: bool,
    polarity: str,
    colour: bool = False,
    fill: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`model_inputs`, plus which crops look like the other polarity than ``polarity``.

    The check comes from the normalisation's own pass (one more sum per crop):
    a bright-field model fed dark-field ROIs (or the reverse) sees the
    background as the organism and its answers are noise, so the classifier
    warns instead of failing silently.

    Returns
    -------
    image, features : ndarray
        As :func:`model_inputs` (identical values).
    disagree : ndarray
        ``(n,)`` bool, True where :func:`detect_polarity` of the crop differs
        from ``polarity``.
    """
    if canvas < 8:
        raise ValueError(f"canvas must be >= 8 px, got {canvas}")
    norm: list[np.ndarray] = []
    disagree = np.zeros(len(crops), bool)
    for i, c in enumerate(crops):
        n, own = _normalize(c, polarity, check=True)
        norm.append(n)
        disagree[i] = own != polarity
    x, f = network_inputs(
        norm, canvas, shapes=shapes, colour=colour_features(crops) if colour else None, fill=fill
    )
    return x, f, disagree


# --------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Augment:
    """Random geometric and photometric changes applied to one normalised crop.

    Plankton have no "up", so any rotation angle and both flips are label
    preserving: the defaults. Scale, shear, translation and noise are off by
    default: on the real benchmark (``scripts/eval_classifier.py``, split 0)
    turning off scale 0.15, shear 0.15, translate 4 px and noise 0.02 raised
    the NDSB subset 0.561 -> 0.666, FlowCam 0.897 -> 0.943, vicko 0.874 ->
    0.875 and cost the lake camera 0.636 -> 0.613 (mean 0.742 -> 0.774):
    absolute size and grey levels are cues, and the measurements beside the
    image already describe them exactly.

    ``contrast`` is for a model meant for *other* cameras than its library's (the shipped
    ISIIS model, ``scripts/train_default_model.py``): half the draws show the organism at
    a contrast factor drawn from ``[1 - contrast, 1]`` (:meth:`contrast_factor`; the
    dataset scales the grey-level measurements to match). Trained without it, the NDSB
    model's held-out accuracy fell 0.59 -> 0.45 at 0.6x contrast and to 0.17 at 0.35x,
    where it called most organisms ``diatom_chain_string`` (faint and thin in NDSB), as it
    called the faint specks of the MBARI ISIIS frame. A user's own library is the camera
    the model will see: off by default there.
    """

    rotate: bool = True
    flip: bool = True
    scale: float = 0.0
    shear: float = 0.0
    translate: float = 0.0
    noise: float = 0.0
    contrast: float = 0.0

    def contrast_factor(self, rng: np.random.Generator) -> float:
        """The factor one draw scales the organism's contrast by: 1 for half the draws,
        uniform in ``[1 - contrast, 1]`` for the rest; 1 without drawing when off."""
        if self.contrast <= 0 or rng.random() < 0.5:
            return 1.0
        return float(rng.uniform(1.0 - self.contrast, 1.0))

    def __call__(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return an augmented copy of ``crop`` (2-D float32, background 0).

        The warp's output grows so that rotated corners are never cut, then is
        trimmed to the organism's bounding box; the crop is later shrunk by
        :func:`place_on_canvas` only if it no longer fits.
        """
        h, w = crop.shape
        ang = rng.uniform(0, 2 * np.pi) if self.rotate else 0.0
        s = math.exp(rng.uniform(-self.scale, self.scale))
        sh = rng.uniform(-self.shear, self.shear)
        fx = -1.0 if (self.flip and rng.random() < 0.5) else 1.0
        ca, sa = math.cos(ang), math.sin(ang)
        rot = np.array([[ca, -sa], [sa, ca]])
        a = rot @ np.array([[1.0, sh], [0.0, 1.0]]) @ np.diag([fx * s, s])
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float) - [w / 2, h / 2]
        tc = corners @ a.T
        ow = max(1, math.ceil(tc[:, 0].max() - tc[:, 0].min()))
        oh = max(1, math.ceil(tc[:, 1].max() - tc[:, 1].min()))
        t = rng.uniform(-self.translate, self.translate, 2)
        centre_out = np.array([ow / 2, oh / 2]) + t
        m = np.hstack([a, (centre_out - a @ [w / 2, h / 2])[:, None]])
        # translation may push pixels out: grow the output by |t| on each side
        pad = math.ceil(abs(t).max())
        m[:, 2] += pad
        out = cv2.warpAffine(
            crop,
            m,
            (ow + 2 * pad, oh + 2 * pad),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        )
        # Trim to the organism's new bounding box, as a segmenter would crop it: otherwise
        # the rotated *array* (up to sqrt(2) larger than the object) decides the shrinking,
        # and big organisms are shown smaller in training than at inference (measured: a
        # systematic train/test size mismatch for ROIs near the canvas size).
        ys, xs = np.nonzero(out > 1e-3)
        if len(ys):
            out = out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            # translation = jitter of the segmenter's box: pad one side so the organism
            # sits off-centre by up to ``translate`` px once the crop is centred
            tx, ty = (int(np.rint(v)) for v in t)
            out = np.pad(out, ((max(ty, 0), max(-ty, 0)), (max(tx, 0), max(-tx, 0))))
        if self.noise > 0:
            out = out.copy()
            out += rng.normal(0.0, self.noise, out.shape).astype(np.float32)
            np.clip(out, 0.0, 1.0, out=out)
        return out


# --------------------------------------------------------------------------
# training library
# --------------------------------------------------------------------------


@dataclass
class Library:
    """A folder-per-class training library, read into memory.

    Attributes
    ----------
    class_names : list of str
        Sorted class folder names kept (spaces allowed).
    crops : list of ndarray
        Normalised crops (:func:`normalize_crop`), one per image.
    labels : ndarray
        ``(n,)`` int64 class index per crop.
    paths : list of str
        Source file of each crop.
    skipped : list of str
        Human-readable reasons for every class or file left out.
    polarity : str
        The imager's convention the crops were normalised with (:data:`POLARITIES`).
    polarity_disagree : int
        Images whose own polarity (:func:`detect_polarity`) differs from the
        library's majority (when it was detected).
    colour : ndarray or None
        ``(n, 6)`` :func:`colour_features` of the raw images (the crops are gray);
        None for libraries built from gray crops alone.
    """

    class_names: list[str]
    crops: list[np.ndarray]
    labels: np.ndarray
    paths: list[str]
    skipped: list[str] = field(default_factory=list)
    polarity: str = "bright"
    polarity_disagree: int = 0
    colour: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.crops)

    def counts(self) -> np.ndarray:
        """Images per class, in ``class_names`` order."""
        return np.bincount(self.labels, minlength=len(self.class_names))

    def subset(self, idx: np.ndarray) -> Library:
        """The images at ``idx`` (same class list)."""
        return Library(
            self.class_names,
            [self.crops[i] for i in idx],
            self.labels[idx],
            [self.paths[i] for i in idx],
            polarity=self.polarity,
            colour=None if self.colour is None else self.colour[idx],
        )

    def colour_matrix(self) -> np.ndarray:
        """:attr:`colour`, or the gray value of :func:`colour_features` for every crop."""
        if self.colour is not None:
            return self.colour
        return colour_features(self.crops)


def read_image(path: Path) -> np.ndarray | None:
    """Read one ROI file unchanged (gray or colour, 8 or 16 bit); None if unreadable."""
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        return None
    return img


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted for reproducibility."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def load_library(root: Path, *, class_min: int = 1, polarity: str = "auto") -> Library:
    """Read a folder-per-class library: ``root/<class name>/**/*.png|jpg|...``.

    Warns (``UserWarning``) and skips, naming the culprit: unreadable or empty
    images, class folders without images, classes with fewer than
    ``class_min`` readable images (the seed's class minimum).

    Parameters
    ----------
    root : Path
        Library folder; each sub-folder is a class (its name is the label).
    class_min : int
        Minimum readable images for a class to be kept.
    polarity : {"auto", "bright", "dark"}
        The imager's convention; ``auto`` takes the majority of the images' own
        (:func:`library_polarity`), so dark-field libraries need no setting.

    Returns
    -------
    Library

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder.
    ValueError
        If fewer than two classes remain, or on an unknown polarity.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"training library {root} is not a folder")
    if polarity != "auto" and polarity not in POLARITIES:
        raise ValueError(f"polarity must be 'auto' or one of {POLARITIES}, got {polarity!r}")
    skipped: list[str] = []
    per_class: dict[str, tuple[list[np.ndarray], list[str], list[np.ndarray]]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = list_images(d)
        if not files:
            msg = f"class '{d.name}' ({d}) has no images: skipped"
            warnings.warn(msg, stacklevel=2)
            skipped.append(msg)
            continue
        raws, paths, colours = [], [], []
        for f in files:
            img = read_image(f)
            if img is None:
                msg = f"unreadable image {f}: skipped"
                warnings.warn(msg, stacklevel=2)
                skipped.append(msg)
                continue
            try:
                colour = colour_features([img])[0]  # measured before the colour is dropped
                img, _ = _gray(img)  # one channel: the library is held twice for a moment
            except ValueError as e:
                msg = f"bad image {f}: {e}: skipped"
                warnings.warn(msg, stacklevel=2)
                skipped.append(msg)
                continue
            raws.append(img)
            paths.append(str(f))
            colours.append(colour)
        if len(raws) < class_min:
            msg = (
                f"class '{d.name}' has {len(raws)} readable images, "
                f"fewer than class_min={class_min}: dropped"
            )
            warnings.warn(msg, stacklevel=2)
            skipped.append(msg)
            continue
        per_class[d.name] = (raws, paths, colours)
    if len(per_class) < 2:
        raise ValueError(
            f"training library {root} needs at least 2 classes with >= {class_min} "
            f"images, found {sorted(per_class)}"
        )
    names = sorted(per_class)
    disagree = 0
    if polarity == "auto":
        polarity, disagree = library_polarity([r for n in names for r in per_class[n][0]])
    crops_all: list[np.ndarray] = []
    paths_all: list[str] = []
    labels: list[int] = []
    colours_all: list[np.ndarray] = []
    for k, name in enumerate(names):
        raws, p, c = per_class[name]
        crops_all += [normalize_crop(r, polarity) for r in raws]
        paths_all += p
        colours_all += c
        labels += [k] * len(raws)
    return Library(
        names,
        crops_all,
        np.asarray(labels, np.int64),
        paths_all,
        skipped,
        polarity=polarity,
        polarity_disagree=disagree,
        colour=np.asarray(colours_all, np.float32).reshape(-1, len(COLOUR_FEATURES)),
    )


def split_indices(
    labels: np.ndarray, vsp: float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation split: ``vsp`` percent of each class to validation.

    Every class with at least 2 images keeps >= 1 image on each side, so
    per-class metrics exist for all classes. ``vsp=0`` puts everything in
    training (the seed's final re-training without validation).

    Returns
    -------
    train_idx, val_idx : ndarray
        Sorted int64 indices.
    """
    if not 0 <= vsp < 100:
        raise ValueError(f"vsp (validation percentage) must be in [0, 100), got {vsp}")
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        rng.shuffle(idx)
        nv = round(len(idx) * vsp / 100)
        if vsp > 0 and len(idx) >= 2:
            nv = min(max(nv, 1), len(idx) - 1)
        va.append(idx[:nv])
        tr.append(idx[nv:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))


PRESHRINK = 2.0
"""Training shrinks crops wider than this many canvas sides before augmenting them: every
augmented view of such a crop (rotated, scaled by at most ``exp(0.15)``: its box shrinks by at
most ``sqrt(2) * 1.16 < 2``) is still wider than the canvas, so it is still shrunk to fit, as
the unaugmented crop is at inference."""


_CONTRAST_SCALED = frozenset({"mean", "std", "max", "median"})
"""The measurements (:data:`SHAPE_FEATURES`) proportional to the organism's contrast."""


class CanvasDataset:
    """Torch-style map dataset of augmented crops on canvases, keyed by ``(epoch, draw, index)``.

    The training sampler yields the keys. The random stream of a draw depends
    only on ``(seed, epoch, draw, index)``, so results do not depend on the
    number of DataLoader workers or on resuming from a checkpoint, and an
    image drawn several times in one epoch (balanced sampling of a small
    library) gets a fresh augmentation each time. Keyed by ``(seed, epoch,
    index)`` alone, as before, every repeat was the very same view: an epoch
    of 512 draws of 84 FlowCam images held only 84 distinct views, and
    cross-validated macro-F1 was lower (``scripts/eval_classifier.py``).

    Crops much larger than the canvas are shrunk once, here, to
    :data:`PRESHRINK` times the canvas side before they are augmented: every
    view of them is shrunk to fit the canvas anyway, and warping a 2,000 px
    crop to show it at 64 px cost ~30 ms per draw, more than the network's
    step (zoolake, zooscan). The ``log2`` shrink fed to the network counts
    both shrinks, and the augmentation's translation is scaled so that the
    organism moves as far on the canvas as without it. The noise is not: its
    clipping at 0 leaves a mean offset on the background that shrinking does
    not average away, and that offset stays the same; its random part is
    averaged over fewer pixels, so it stays at most what small crops get.
    """

    def __init__(
        self,
        crops: Sequence[np.ndarray],
        labels: np.ndarray,
        canvas: int,
        *,
        augment: Augment | None = None,
        seed: int = 0,
        shapes: np.ndarray | None = None,
        shape_names: Sequence[str] | None = None,
        fill: int = 0,
    ) -> None:
        if shapes is not None and shape_names is not None and len(shape_names) != shapes.shape[1]:
            raise ValueError(f"{len(shape_names)} shape_names for {shapes.shape[1]} columns")
        self.shapes = shapes
        self.shape_names = shape_names
        self.fill = fill
        self.crops = list(crops)
        self.labels = np.asarray(labels, np.int64)
        self.canvas = canvas
        self.augment = augment
        self.seed = seed
        # per crop: the augmentation to use and log2 of the pre-shrink (0 when none)
        self._aug: list[Augment | None] = [augment] * len(self.crops)
        self._log_pre = np.zeros(len(self.crops), np.float32)
        if augment is not None:
            limit = PRESHRINK * canvas
            for i, c in enumerate(self.crops):
                side = max(c.shape)
                if side <= limit:
                    continue
                p = side / limit
                h, w = c.shape
                size = (max(1, round(w / p)), max(1, round(h / p)))
                self.crops[i] = cv2.resize(c, size, interpolation=cv2.INTER_AREA)
                self._log_pre[i] = math.log2(p)
                self._aug[i] = replace(augment, translate=augment.translate / p)

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, int]:
        epoch, draw, i = key
        c = self.crops[i]
        aug = self._aug[i]
        shapes = None if self.shapes is None else self.shapes[i]
        if aug is not None:
            rng = np.random.default_rng((self.seed, epoch, draw, i))
            c = aug(c, rng)
            k = aug.contrast_factor(rng)
            if k != 1.0:
                c = c * np.float32(k)
                shapes = self._with_contrast(shapes, k)
        x, s = place_on_canvas([c], self.canvas, self.fill)
        s[0, 0] += self._log_pre[i]
        f = s[0] if shapes is None else np.concatenate([s[0], shapes])
        return x[0], f, int(self.labels[i])

    def _with_contrast(self, shapes: np.ndarray | None, k: float) -> np.ndarray | None:
        """A crop's measurements (:func:`shape_features_of` layout) at ``k`` times its
        contrast: the grey levels (ZooProcess's inverted values, ``255 - pixel``, over a
        white background) and their spread scale by ``k``; the mask (Otsu) and so the sizes
        and shape moments move by a few % at most on soft edges, skew, kurtosis and the
        colour shares not at all (checked against measuring the scaled crops:
        ``tests/test_model_data.py``)."""
        if shapes is None or self.shape_names is None:
            return shapes
        out = shapes.copy()
        for j, name in enumerate(self.shape_names):
            if name in _CONTRAST_SCALED:
                out[j] *= k
        return out
