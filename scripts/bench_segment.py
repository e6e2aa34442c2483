"""Benchmark: decode + flat-field + segment throughput, beside a naive OpenCV baseline.

Prints figures and ratios (never asserts). Everything is measured in the same run, since
the development machine is shared and noisy.

    python scripts/bench_segment.py                      # 40 synthetic 2048x2048 frames
    python scripts/bench_segment.py --frames 80 --workers 2
    python scripts/bench_segment.py --video raw/20260101120000.000.avi
    python scripts/bench_segment.py --minutes 10         # long run: peak RSS stays flat

Paths measured (one core: ``pipeline.one_core``, OpenCV and BLAS single-threaded):

* decode only (rawvideo, and FFV1 separately: the decode cap of compressed archives);
* plankline: ``iter_frames`` -> ``FlatField.correct`` -> ``segment_stream`` (crops+masks);
* plankline + PNG encoding of every crop (what the batch writes);
* naive OpenCV: per-frame column-mean flat-field in float64, fixed threshold,
  ``connectedComponentsWithStats``, PNG-encode every crop (the usual first script).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import psutil
from plankline.imaging.flatfield import FlatField
from plankline.imaging.segment import Rois, SegmentParams, segment_stream
from plankline.imaging.synth import GroundTruth, truth_path, write_synth_video
from plankline.imaging.video import iter_frames, probe_video, write_video
from plankline.pipeline import one_core

REAL = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "isiis-frames"
    / "mbari-isiis-raw-2048.jpg"
)


def _one_core() -> None:
    one_core()  # BLAS too: a threaded flat-field product is 10x slower on a busy host


def decode_only(video: Path, stop: int | None = None) -> tuple[int, float]:
    t = time.perf_counter()
    n = sum(1 for _ in iter_frames(video, 0, stop))
    return n, time.perf_counter() - t


def plankline_path(
    video: Path,
    start: int = 0,
    stop: int | None = None,
    *,
    png: bool = False,
    mode: str = "column",
    params: SegmentParams | None = None,
) -> tuple[int, float, Rois]:
    """Decode -> flat-field -> segment; returns frames, seconds, ROIs (without crops if png)."""
    _one_core()
    params = params or SegmentParams()
    t = time.perf_counter()
    ff = FlatField(mode=mode)  # type: ignore[arg-type]
    ctx = max(0, start - 1)
    prime_stop = start + 2 if stop is None else min(stop, start + 2)
    ff.prime(f for _, f in iter_frames(video, start, prime_stop))
    frames = ((i, ff.correct(f)) for i, f in iter_frames(video, ctx))
    seen = 0
    parts = []
    for rois in segment_stream(frames, params, first_owned=start, stop_owned=stop):
        seen += 1
        if png:
            for c in rois.crops:
                cv2.imencode(".png", c, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            rois.crops, rois.masks = [np.empty(0)] * len(rois), [np.empty(0)] * len(rois)
        parts.append(rois)
    n = (stop if stop is not None else seen) - start
    return n, time.perf_counter() - t, Rois.concat(parts)


def stages(video: Path, n: int) -> None:
    """Flat-field alone and segmentation alone, on frames already in memory."""
    _one_core()
    raw = [f for _, f in iter_frames(video, 0, n)]
    ff = FlatField()
    ff.correct(raw[0])
    t = time.perf_counter()
    flat = [ff.correct(f) for f in raw]
    t_ff = (time.perf_counter() - t) / n
    t = time.perf_counter()
    count = sum(len(r) for r in segment_stream(enumerate(flat), SegmentParams()))
    t_seg = (time.perf_counter() - t) / n
    print(
        f"flat-field only (in memory):       {1 / t_ff:8.1f} frames/s ({t_ff * 1e3:.1f} ms/frame)"
    )
    print(
        f"segment only (threshold+label+crop):{1 / t_seg:7.1f} frames/s "
        f"({t_seg * 1e3:.1f} ms/frame, {count / n:.0f} ROIs/frame)"
    )


def naive_path(
    video: Path, stop: int | None = None, threshold: int = 192
) -> tuple[int, float, int]:
    """The straightforward OpenCV script: float64 column-mean flat-field, threshold, label,
    crop and PNG-encode each object."""
    _one_core()
    t = time.perf_counter()
    n = count = 0
    for _, f in iter_frames(video, 0, stop):
        col = f.mean(axis=0)
        flat = np.clip(f / col[None, :] * 235.0, 0, 255).astype(np.uint8)
        _, binary = cv2.threshold(flat, threshold - 1, 255, cv2.THRESH_BINARY_INV)
        _, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        for x, y, w, h, area in stats[1:]:
            if area >= 25:
                crop = flat[max(0, y - 6) : y + h + 6, max(0, x - 6) : x + w + 6]
                cv2.imencode(".png", crop)
                count += 1
        n += 1
    return n, time.perf_counter() - t, count


def _chunk(args: tuple[str, int, int]) -> tuple[int, float, int]:
    video, start, stop = args
    n, dt, rois = plankline_path(Path(video), start, stop)
    return n, dt, len(rois)


def all_cores(video: Path, n_frames: int, workers: int, chunk: int) -> tuple[float, int]:
    t = time.perf_counter()
    jobs = [(str(video), k, min(k + chunk, n_frames)) for k in range(0, n_frames, chunk)]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_chunk, jobs))
    return time.perf_counter() - t, sum(r[2] for r in results)


def score(rois: Rois, truth: GroundTruth, n_frames: int, min_area: int = 25) -> tuple[float, float]:
    """Recall over truth objects above the size filter, precision over ROIs (bbox IoU > 0.5)."""
    h = truth.frame_height
    keep = (truth.area_px >= min_area) & (truth.line + truth.height <= n_frames * h)
    t = np.stack(
        [truth.line, truth.column, truth.line + truth.height, truth.column + truth.width], 1
    )[keep]
    r = np.stack([rois.line, rois.column, rois.line + rois.height, rois.column + rois.width], 1)
    # sort-and-sweep on lines keeps this O(n log n)-ish for long videos
    best_t = np.zeros(len(t))
    best_r = np.zeros(len(r))
    order = np.argsort(r[:, 0])
    rs = r[order]
    for i, box in enumerate(t):
        lo, hi = np.searchsorted(rs[:, 0], [box[0] - 2 * h, box[2]])
        cand = rs[lo:hi]
        y0, x0 = np.maximum(box[0], cand[:, 0]), np.maximum(box[1], cand[:, 1])
        y1, x1 = np.minimum(box[2], cand[:, 2]), np.minimum(box[3], cand[:, 3])
        inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
        area_t = (box[2] - box[0]) * (box[3] - box[1])
        iou = inter / (area_t + (cand[:, 2] - cand[:, 0]) * (cand[:, 3] - cand[:, 1]) - inter)
        if len(iou):
            best_t[i] = iou.max()
            np.maximum.at(best_r, order[lo:hi], iou)
    return float((best_t > 0.5).mean()), float((best_r > 0.5).mean())


def long_run(video: Path, n_video: int, minutes: float, fps: float = 13.7) -> None:
    """Stream ``minutes`` of video (looping the file) through the pipeline; sample RSS."""
    _one_core()
    total = int(minutes * 60 * fps)
    proc = psutil.Process()

    def frames():
        i = 0
        while i < total:
            for _, f in iter_frames(video):
                if i >= total:
                    return
                yield i, f
                i += 1

    ff = FlatField()
    rss = []
    count = 0
    t = time.perf_counter()
    for k, rois in enumerate(
        segment_stream(((i, ff.correct(f)) for i, f in frames()), SegmentParams())
    ):
        count += len(rois)
        if k % 50 == 0:
            rss.append(proc.memory_info().rss / 2**20)
    dt = time.perf_counter() - t
    print(
        f"long run: {total} frames ({minutes:g} min of ISIIS at {fps} fps) in {dt:.0f} s "
        f"= {total / dt:.1f} frames/s, {count} ROIs; RSS MiB first/median/peak/last: "
        f"{rss[0]:.0f}/{np.median(rss):.0f}/{max(rss):.0f}/{rss[-1]:.0f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--video", type=Path, help="existing video (default: synthesise one)")
    ap.add_argument("--frames", type=int, default=40, help="synthetic frames (2048x2048)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--chunk", type=int, default=10, help="frames per chunk for the pool")
    ap.add_argument("--minutes", type=float, default=0.0, help="long-run length for the RSS check")
    ap.add_argument("--no-real", action="store_true", help="skip the real-frame video")
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_segment_", dir=args.tmp))
    truth = None
    if args.video:
        video = args.video
        if truth_path(video).exists():
            truth = GroundTruth.read_csv(truth_path(video))
    else:
        video = tmp / "20260101120000.000.avi"
        t = time.perf_counter()
        truth = write_synth_video(video, args.frames, seed=0)
        print(
            f"synthesised {args.frames} frames + truth in {time.perf_counter() - t:.1f} s: {video}"
        )
    info = probe_video(video)
    n_frames = info.n_frames or 0
    mb = info.width * info.height / 1e6
    print(
        f"video: {info.n_frames} frames {info.width}x{info.height} {info.dtype}, "
        f"{video.stat().st_size / 2**20:.0f} MiB; one core unless stated"
    )

    _one_core()
    n, dt = decode_only(video)
    print(f"decode only (rawvideo):            {n / dt:8.1f} frames/s")
    stages(video, min(n_frames, 12))
    n, dt, rois = plankline_path(video)
    fast = n / dt
    print(
        f"plankline decode+flatfield+segment:{fast:8.1f} frames/s  "
        f"({fast * mb:.0f} Mpx/s, {len(rois) / n:.0f} ROIs/frame)"
    )
    n, dt, _ = plankline_path(video, png=True)
    fast_png = n / dt
    print(f"plankline + PNG-encode crops:      {fast_png:8.1f} frames/s")
    n, dt, naive_count = naive_path(video)
    naive = n / dt
    print(
        f"naive OpenCV path (+PNG):          {naive:8.1f} frames/s  "
        f"({naive_count / n:.0f} ROIs/frame)"
    )
    print(
        f"ratio plankline/naive: {fast / naive:.2f}x (segment only), "
        f"{fast_png / naive:.2f}x (both with PNG)"
    )
    if truth is not None:
        rec, prec = score(rois, truth, n_frames)
        print(
            f"vs truth: recall {rec:.3f}, precision {prec:.3f} "
            f"({len(rois)} ROIs, {(truth.area_px >= 25).sum()} truth objects >= 25 px)"
        )

    if args.workers > 1 and n_frames >= 2 * args.chunk:
        dt, count = all_cores(video, n_frames, args.workers, args.chunk)
        print(
            f"all cores ({args.workers} processes, chunks of {args.chunk}): "
            f"{n_frames / dt:.1f} frames/s, {count} ROIs (single-process run: {len(rois)})"
        )

    # FFV1: the decode cap of losslessly compressed archives.
    n_ffv1 = min(n_frames, 12)
    ffv1 = tmp / "ffv1.avi"
    write_video(ffv1, (f for _, f in iter_frames(video, 0, n_ffv1)), fps=13.7, codec="ffv1")
    n, dt = decode_only(ffv1)
    print(
        f"FFV1 decode only:                  {n / dt:8.1f} frames/s "
        f"({ffv1.stat().st_size / n_ffv1 / 2**20:.1f} MiB/frame vs {mb:.1f} raw)"
    )
    n, dt, _ = plankline_path(ffv1)
    print(f"FFV1 decode+flatfield+segment:     {n / dt:8.1f} frames/s")
    ffv1.unlink()

    if REAL.exists() and not args.no_real:
        real = cv2.imread(str(REAL), cv2.IMREAD_GRAYSCALE)
        rv = tmp / "real.avi"
        write_video(rv, (real for _ in range(20)), fps=13.7)
        for mode in ("column", "vignetting"):
            n, dt, rr = plankline_path(rv, mode=mode, params=SegmentParams(threshold=200))
            print(
                f"real ISIIS frame x20, {mode:10s}:  {n / dt:8.1f} frames/s, "
                f"{len(rr) / n:.0f} ROIs/frame"
            )
        n, dt, c = naive_path(rv, threshold=200)
        print(f"real ISIIS frame x20, naive:       {n / dt:8.1f} frames/s, {c / n:.0f} ROIs/frame")
        rv.unlink()

    if args.minutes > 0:
        long_run(video, n_frames, args.minutes)
    if not args.video:
        video.unlink()
        truth_path(video).unlink()
    with contextlib.suppress(OSError):
        tmp.rmdir()


if __name__ == "__main__":
    sys.exit(main())
