"""Benchmark: ROIs/s of ``measure_rois`` vs skimage ``regionprops_table`` (same features).

Prints figures and the ratio, measured in the same run on one core (never asserts).

    python scripts/bench_measure.py                 # ROIs segmented from a synthetic video
    python scripts/bench_measure.py --rois 5000 --min-size 20 --max-size 200

ROIs come from segmenting a synthetic ISIIS-like video (realistic power-law sizes), or
with ``--min-size/--max-size`` from rendered organisms of log-uniform size. skimage is run
the fastest way it can be: all masks packed on one label image, one call.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
from plankline.imaging.flatfield import FlatField
from plankline.imaging.measure import measure_rois
from plankline.imaging.segment import Rois, SegmentParams, segment_stream
from plankline.imaging.synth import SHAPE_CLASSES, render_organism, synth_frames
from skimage.measure import regionprops_table

SKIMAGE_PROPS = [
    "area",
    "perimeter",
    "major_axis_length",
    "minor_axis_length",
    "orientation",
    "eccentricity",
    "area_convex",
    "solidity",
    "extent",
    "feret_diameter_max",
    "bbox",
    "intensity_mean",
    "intensity_min",
    "intensity_max",
    "intensity_std",
    "moments_hu",
    "centroid",
]


def video_rois(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    crops: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    seed = 0
    while len(crops) < n:
        frames, _ = synth_frames(8, seed=seed, density=60)
        ff = FlatField()
        rois = Rois.concat(
            segment_stream(((i, ff.correct(f)) for i, f in enumerate(frames)), SegmentParams())
        )
        crops += rois.crops
        masks += rois.masks
        seed += 1
    return crops[:n], masks[:n]


def rendered_rois(n: int, lo: float, hi: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    crops, masks = [], []
    for i in range(n):
        size = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        img, m = render_organism(SHAPE_CLASSES[i % 5], rng, size)
        noisy = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
        crops.append(np.pad(noisy, 4, constant_values=255))
        masks.append(np.pad(m, 4))
    return crops, masks


def skimage_packed(crops: list[np.ndarray], masks: list[np.ndarray]) -> dict:
    """All masks on one label image with 2-px gaps (shelf packing), one regionprops call."""
    width = 4096
    pos, x, y, shelf = [], 2, 2, 0
    for m in masks:
        h, w = m.shape
        if x + w + 2 > width:
            x, y, shelf = 2, y + shelf + 2, 0
        pos.append((y, x))
        x += w + 2
        shelf = max(shelf, h)
    labels = np.zeros((y + shelf + 2, width), np.int32)
    inten = np.zeros(labels.shape, np.uint8)
    for i, ((yy, xx), c, m) in enumerate(zip(pos, crops, masks, strict=True)):
        h, w = m.shape
        labels[yy : yy + h, xx : xx + w][m] = i + 1
        inten[yy : yy + h, xx : xx + w][m] = 255 - c[m]
    return regionprops_table(labels, intensity_image=inten, properties=SKIMAGE_PROPS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rois", type=int, default=4000)
    ap.add_argument("--min-size", type=float, default=None, help="rendered ROIs: min length px")
    ap.add_argument("--max-size", type=float, default=None, help="rendered ROIs: max length px")
    ap.add_argument("--skimage-rois", type=int, default=1000, help="ROIs timed with skimage")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    if args.min_size or args.max_size:
        crops, masks = rendered_rois(args.rois, args.min_size or 20, args.max_size or 200)
        source = f"rendered organisms {args.min_size or 20:g}-{args.max_size or 200:g} px long"
    else:
        crops, masks = video_rois(args.rois)
        source = "segmented from a synthetic ISIIS video"
    sizes = np.array([max(m.shape) for m in masks])
    areas = np.array([m.sum() for m in masks])
    print(
        f"{len(crops)} ROIs {source}: bbox side median {np.median(sizes):.0f} px "
        f"(p10 {np.percentile(sizes, 10):.0f}, p90 {np.percentile(sizes, 90):.0f}), "
        f"area median {np.median(areas):.0f} px"
    )

    measure_rois(crops[:50], masks[:50])  # warm-up
    t = time.perf_counter()
    table = measure_rois(crops, masks)
    ours = len(crops) / (time.perf_counter() - t)
    k = min(args.skimage_rois, len(crops))
    t = time.perf_counter()
    sk = skimage_packed(crops[:k], masks[:k])
    theirs = k / (time.perf_counter() - t)
    print(f"plankline measure_rois:            {ours:9.0f} ROIs/s ({len(table)} columns)")
    print(f"skimage regionprops_table (packed):{theirs:9.0f} ROIs/s ({len(sk)} columns)")
    print(f"ratio: {ours / theirs:.1f}x")
    err = np.abs(table["perimeter"][:k] - sk["perimeter"]) / sk["perimeter"]
    print(f"check: perimeter max rel. difference to skimage {err.max():.2e}")


if __name__ == "__main__":
    main()
