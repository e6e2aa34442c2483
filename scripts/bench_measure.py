"""Benchmark: ROIs/s of ``measure_rois`` vs skimage ``regionprops_table`` (same features).

Prints figures and the ratio, measured in the same run on one core (never asserts).
ROIs/s are per CPU-second of this process (``time.process_time``, one OpenCV thread), so
other work on a shared machine does not count against either side; wall-clock figures are
printed beside them.

    python scripts/bench_measure.py                  # real ISIIS ROIs (default)
    python scripts/bench_measure.py --flatfield column  # ... as on a raw vignetted camera
    python scripts/bench_measure.py --source flowcam # FlowCam collages with the instrument's masks
    python scripts/bench_measure.py --source synthetic
    python scripts/bench_measure.py --source rendered --min-size 20 --max-size 200
    python scripts/bench_measure.py --repeats 3      # three timed runs, each printed

Sources:

- ``isiis`` (default): the raw MBARI ISIIS frame in ``../shared/data/isiis-frames/``,
  flat-fielded and segmented with the pipeline's own default settings
  (:class:`~plankline.imaging.flatfield.FlatField`, :func:`~plankline.pipeline.segment_params`,
  :func:`~plankline.imaging.segment.segment_stream`): ~50 ROIs per frame, median ~40 px.
  The frame is used in its 8 orientations (rotations and mirror images).
  ``--flatfield column`` corrects only the columns, as on the raw, vignetted camera of
  issue 11: ~220 ROIs per frame, median ~45 px, plus a few huge dark vignetted corners
  (up to 600,000 px) that dominate the time.
- ``flowcam``: the FlowCam collage pages in ``../shared/data/flowcam-collages/``, ROIs
  being the connected components of the instrument's own ``_bin.tif`` masks.
- ``synthetic``: ROIs segmented from a synthetic ISIIS-like video (power-law sizes).
- ``rendered``: rendered organisms of log-uniform length ``--min-size..--max-size``.

The ROI set is cycled up to ``--rois`` ROIs for timing. skimage is run the fastest way it
can be: all masks packed on one label image, one ``regionprops_table`` call, with the
ZooProcess-equivalent property set (shape, convex hull, Feret, Hu moments, intensity).
"""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import cv2
import numpy as np
from plankline.config import PipelineSettings
from plankline.imaging.flatfield import FlatField
from plankline.imaging.measure import measure_rois
from plankline.imaging.segment import Rois, SegmentParams, segment_stream
from plankline.imaging.synth import SHAPE_CLASSES, render_organism, synth_frames
from plankline.pipeline import segment_params
from skimage.measure import regionprops_table

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

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

Set = tuple[list[np.ndarray], list[np.ndarray]]


def _orientations(frame: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations/mirror images of a frame (same organisms, other poses)."""
    out = []
    for flip in (frame, frame[:, ::-1]):
        for k in range(4):
            out.append(np.ascontiguousarray(np.rot90(flip, k)))
    return out


def isiis_rois(flatfield: str | None = None, data: Path = DATA) -> Set:
    """Real ISIIS ROIs: the MBARI frame through the pipeline's flat-field and segmentation.

    ``flatfield`` overrides the pipeline's flat-field mode (``column`` leaves the vignetted
    corners of this camera dark: ~220 ROIs per frame, a few of them huge).
    """
    path = data / "isiis-frames" / "mbari-isiis-raw-2048.jpg"
    raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if raw is None:
        raise SystemExit(f"{path}: missing or unreadable (real ISIIS frame needed)")
    settings = PipelineSettings()
    params = segment_params(settings)
    crops: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for frame in _orientations(raw):
        flat = FlatField(mode=flatfield or settings.flatfield)
        flat.prime([frame] * max(1, settings.prime_frames))
        rois = Rois.concat(segment_stream([(0, flat.correct(frame))], params))
        crops += rois.crops
        masks += rois.masks
    return crops, masks


def flowcam_rois(data: Path = DATA) -> Set:
    """Real FlowCam ROIs: components of the instrument's masks, crops from the gray page."""
    crops: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for bin_path in sorted(glob.glob(str(data / "flowcam-collages" / "*" / "*_bin.tif"))):
        binary = cv2.imread(bin_path, cv2.IMREAD_GRAYSCALE)
        page = cv2.imread(bin_path.replace("_bin.tif", ".tif"), cv2.IMREAD_GRAYSCALE)
        if binary is None or page is None:
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats((binary > 0).view(np.uint8))
        for k in range(1, n):
            x, y, w, h = stats[k, :4]
            y0, x0 = max(y - 2, 0), max(x - 2, 0)
            y1, x1 = min(y + h + 2, page.shape[0]), min(x + w + 2, page.shape[1])
            crops.append(page[y0:y1, x0:x1].copy())
            masks.append(labels[y0:y1, x0:x1] == k)
    if not crops:
        raise SystemExit(f"{data / 'flowcam-collages'}: no collage with a _bin.tif mask")
    return crops, masks


def video_rois(n: int) -> Set:
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


def rendered_rois(n: int, lo: float, hi: float) -> Set:
    rng = np.random.default_rng(0)
    crops, masks = [], []
    for i in range(n):
        size = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        img, m = render_organism(SHAPE_CLASSES[i % 5], rng, size)
        noisy = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
        crops.append(np.pad(noisy, 4, constant_values=255))
        masks.append(np.pad(m, 4))
    return crops, masks


def load_set(
    source: str, n: int, lo: float, hi: float, flatfield: str | None = None
) -> tuple[Set, str]:
    """The named ROI set and a one-line description of it."""
    if source == "isiis":
        how = f"flat-field {flatfield}" if flatfield else "pipeline defaults"
        return isiis_rois(flatfield), f"real ISIIS frame (MBARI), {how}, 8 orientations"
    if source == "flowcam":
        return flowcam_rois(), "real FlowCam collages, the instrument's masks"
    if source == "synthetic":
        return video_rois(n), "segmented from a synthetic ISIIS video"
    return rendered_rois(n, lo, hi), f"rendered organisms {lo:g}-{hi:g} px long"


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
    ap.add_argument(
        "--source", choices=("isiis", "flowcam", "synthetic", "rendered"), default="isiis"
    )
    ap.add_argument(
        "--flatfield",
        choices=("column", "vignetting", "both"),
        default=None,
        help="isiis: flat-field mode instead of the pipeline's default",
    )
    ap.add_argument("--rois", type=int, default=4000, help="ROIs timed (the set is cycled)")
    ap.add_argument("--min-size", type=float, default=20, help="rendered ROIs: min length px")
    ap.add_argument("--max-size", type=float, default=200, help="rendered ROIs: max length px")
    ap.add_argument("--skimage-rois", type=int, default=1000, help="ROIs timed with skimage")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs, each printed")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    (base_crops, base_masks), source = load_set(
        args.source, args.rois, args.min_size, args.max_size, args.flatfield
    )
    n_base = len(base_crops)
    crops = [base_crops[i % n_base] for i in range(args.rois)]
    masks = [base_masks[i % n_base] for i in range(args.rois)]
    sizes = np.array([max(m.shape) for m in base_masks])
    areas = np.array([np.count_nonzero(m) for m in base_masks])
    print(
        f"{n_base} distinct ROIs ({source}), cycled to {len(crops)}: bbox side median "
        f"{np.median(sizes):.0f} px (p10 {np.percentile(sizes, 10):.0f}, "
        f"p90 {np.percentile(sizes, 90):.0f}), area median {np.median(areas):.0f} px "
        f"(p10 {np.percentile(areas, 10):.0f}, p90 {np.percentile(areas, 90):.0f})"
    )

    measure_rois(crops[:50], masks[:50])  # warm-up
    k = min(args.skimage_rois, len(crops))
    # skimage is slow: it gets every (N/k)-th ROI, so its sample spans the whole set
    pick = np.linspace(0, len(crops) - 1, k).astype(int)
    sk_crops, sk_masks = [crops[i] for i in pick], [masks[i] for i in pick]
    ratios = []
    for run in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        table = measure_rois(crops, masks)
        ours = len(crops) / (time.process_time() - cpu)
        ours_wall = len(crops) / (time.perf_counter() - wall)
        wall, cpu = time.perf_counter(), time.process_time()
        sk = skimage_packed(sk_crops, sk_masks)
        theirs = k / (time.process_time() - cpu)
        theirs_wall = k / (time.perf_counter() - wall)
        ratios.append(ours / theirs)
        print(
            f"run {run + 1}: plankline measure_rois {ours:7.0f} ROIs/s ({len(table)} columns), "
            f"skimage regionprops_table (packed) {theirs:6.0f} ROIs/s ({len(sk)} columns), "
            f"ratio {ours / theirs:.1f}x  [wall clock: {ours_wall:.0f} vs {theirs_wall:.0f}]"
        )
    if args.repeats > 1:
        print(f"ratio median {np.median(ratios):.1f}x over {args.repeats} runs")
    finite = np.isfinite(sk["perimeter"]) & (sk["perimeter"] > 0)
    ours_p = table["perimeter"][pick][finite]
    err = np.abs(ours_p - sk["perimeter"][finite]) / sk["perimeter"][finite]
    print(f"check: perimeter max rel. difference to skimage {err.max():.2e}")


if __name__ == "__main__":
    main()
