"""Benchmark: segmentation quality on the hard synthetic mode, and speed on real frames.

Prints figures (never asserts); every comparison is measured in the same run.

    python scripts/bench_quality.py                       # hard mode, defaults vs static
    python scripts/bench_quality.py --set k_high=4 --set k_low=2
    python scripts/bench_quality.py --easy                # the original generator
    python scripts/bench_quality.py --dark-field          # the same organisms, dark-field
    python scripts/bench_quality.py --montage out.png     # ROIs found on the real video

Quality: ``synth_frames(difficulty="hard")`` (contrast 0.1-0.7, soft textured organisms,
2-D vignette, shot noise, stuck columns, streaks, lamp flicker) through ``FlatField`` and
``segment_stream``, scored by ``imaging.score.score_video``: recall, precision, whole,
frame-edge-crossing whole, area and ESD errors (objects >= 200 px), recall by contrast.

Speed (one core: ``pipeline.one_core``, OpenCV and BLAS single-threaded): decode +
flat-field + segment of a video made from the real MBARI ISIIS frame in
``shared/data/isiis-frames`` (its vignette kept fixed, its content shifted and flipped
from frame to frame, as organisms pass a fixed camera), for
the adaptive default and the static threshold side by side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from plankline.imaging.flatfield import FlatField
from plankline.imaging.score import score_video
from plankline.imaging.segment import Rois, SegmentParams, segment_stream
from plankline.imaging.synth import frames_from_still, synth_frames
from plankline.imaging.video import iter_frames, write_video
from plankline.pipeline import one_core

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "isiis-frames"


def run(frames, params: SegmentParams, mode: str = "both", prime: int = 8):
    """Decode-free path on frames in memory: flat-field + segment; (rois, seconds, ff)."""
    one_core()  # BLAS too: a threaded flat-field product is 10x slower on a busy host
    t = time.perf_counter()
    ff = FlatField(mode=mode)  # type: ignore[arg-type]
    ff.prime(frames[:prime])
    rois = Rois.concat(segment_stream(((i, ff.correct(f)) for i, f in enumerate(frames)), params))
    return rois, time.perf_counter() - t, ff


def video_path(video: Path, params: SegmentParams, mode: str = "both"):
    """Decode + flat-field + segment from a video file; (rois, frames, seconds)."""
    one_core()  # BLAS too: a threaded flat-field product is 10x slower on a busy host
    t = time.perf_counter()
    ff = FlatField(mode=mode)  # type: ignore[arg-type]
    ff.prime(f for _, f in iter_frames(video, 0, 8))
    n = 0
    parts = []
    for rois in segment_stream(((i, ff.correct(f)) for i, f in iter_frames(video)), params):
        parts.append(rois)
        n += 1
    return Rois.concat(parts), n, time.perf_counter() - t


def montage(rois: Rois, path: Path, n: int = 96, tile: int = 96) -> None:
    """The ``n`` largest ROIs, each scaled into a tile with its mask outline in red."""
    order = np.argsort(-rois.area_px)[:n]
    tiles = []
    for i in order:
        crop = cv2.cvtColor(rois.crops[i], cv2.COLOR_GRAY2BGR)
        cnt, _ = cv2.findContours(
            rois.masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(crop, cnt, -1, (0, 0, 255), 1)
        s = tile / max(crop.shape[:2])
        crop = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        pad = np.full((tile, tile, 3), 255, np.uint8)
        pad[: crop.shape[0], : crop.shape[1]] = crop
        cv2.putText(pad, str(int(rois.area_px[i])), (2, tile - 4), 0, 0.35, (200, 0, 0), 1)
        tiles.append(pad)
    while len(tiles) % 12:
        tiles.append(np.full((tile, tile, 3), 255, np.uint8))
    rows = [np.hstack(tiles[k : k + 12]) for k in range(0, len(tiles), 12)]
    cv2.imwrite(str(path), np.vstack(rows))


def _params(pairs: list[str], **base) -> SegmentParams:
    kw = dict(base)
    for pair in pairs:
        key, value = pair.split("=", 1)
        kw[key] = value if key == "method" else float(value)
        if key in ("noise_cell", "smooth", "split_gap", "min_area_px", "padding"):
            kw[key] = int(float(value))
    return SegmentParams(**kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=12, help="synthetic frames per seed")
    ap.add_argument("--height", type=int, default=512, help="synthetic frame lines")
    ap.add_argument("--width", type=int, default=1024, help="synthetic frame width (px)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--easy", action="store_true", help="the original (easy) generator")
    ap.add_argument("--dark-field", action="store_true", help="dark-field synthetic video")
    ap.add_argument("--set", action="append", default=[], help="SegmentParams field=value")
    ap.add_argument("--real-frames", type=int, default=20, help="real-frame video length")
    ap.add_argument("--montage", type=Path, help="PNG of the ROIs found on the real video")
    ap.add_argument("--no-real", action="store_true")
    args = ap.parse_args()

    tuned = _params(args.set)
    methods = [("static 192", SegmentParams(method="static")), ("default", tuned)]
    kind = "easy" if args.easy else "hard"
    print(
        f"{kind} synthetic{' dark-field' if args.dark_field else ''}: seeds {args.seeds}, "
        f"{args.frames} frames of {args.height}x{args.width} each (line-scan cuts every "
        f"{args.height} lines)"
    )
    table: dict[str, list[tuple[float, ...]]] = {name: [] for name, _ in methods}
    for seed in args.seeds:
        frames, truth = synth_frames(
            args.frames,
            height=args.height,
            width=args.width,
            seed=seed,
            difficulty=kind,
            density=160 * args.height * args.width / 2048**2,
            polarity="dark-field" if args.dark_field else "bright-field",
        )
        frames = list(frames)
        for name, params in methods:
            rois, dt, ff = run(frames, params)
            sc = score_video(truth, rois, min_area_px=params.min_area_px)
            d = sc.detection
            row = (sc.recall, sc.precision, sc.whole, sc.edge_whole, d.area_error, d.esd_error)
            table[name].append((*row, args.frames / dt))
            print(f"-- seed {seed}, {name} ({params.method}): {args.frames / dt:.1f} frames/s")
            print(sc.summary())
            print(f"artefacts: {rois.artefacts}, flat-field: {ff.artefacts()}")
    cols = ("recall", "precision", "whole", "edge-whole", "area err", "ESD err", "frames/s")
    for name, rows in table.items():
        arr = np.array(rows)
        print(
            f"== {name}, mean (worst) over {len(rows)} seeds: "
            + ", ".join(
                f"{c} {m:.3f} ({w:.3f})"
                for c, m, w in zip(
                    cols,
                    arr.mean(0),
                    np.r_[arr[:, :4].min(0), arr[:, 4:6].max(0), arr[:, 6].min()],
                    strict=True,
                )
            )
        )

    real = sorted(REAL.glob("*.jpg")) + sorted(REAL.glob("*.png")) if REAL.exists() else []
    if args.no_real or not real:
        return
    frame = cv2.imread(str(real[0]), cv2.IMREAD_GRAYSCALE)
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "real.avi"
        write_video(video, frames_from_still(frame, args.real_frames), fps=13.7)
        print(f"real-frame video: {args.real_frames} x {frame.shape}, rawvideo, one core")
        res = {}
        # static 240: a fixed level that finds about as many ROIs as the default on this
        # video, so the per-ROI cost (crops, masks) is the same on both sides
        real_methods = [*methods, ("static 240", SegmentParams(method="static", threshold=240))]
        for name, params in real_methods:
            rois, n, dt = video_path(video, params)
            res[name] = n / dt
            print(
                f"-- {name}: decode+flat-field+segment {n / dt:.1f} frames/s, "
                f"{len(rois) / dt:.0f} ROIs/s, {len(rois) / n:.0f} ROIs/frame, "
                f"artefacts {rois.artefacts}"
            )
            if name == "default" and args.montage:
                montage(rois, args.montage)
                print(f"montage of the largest ROIs: {args.montage}")
        print(
            f"ratio default/static 192: {res['default'] / res['static 192']:.2f}; "
            f"default/static 240 (as many ROIs): {res['default'] / res['static 240']:.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
