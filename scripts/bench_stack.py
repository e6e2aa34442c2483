"""Throughput of the streaming stack vs the batch CLI on the same video, in the same run.

Starts the real local stack (Tansu, SeaweedFS, Triton with the shipped model, one
process per service through the shared runner), submits a synthetic ISIIS-like
video, waits for every chunk's final outputs, then runs ``plankline run`` on the
same video with the same settings. Prints frames/s and ROIs/s of both, their
ratio (target >= 0.8), per-stage latency from the services' /metrics, and checks
that both produced the same ROI ids and measurements.

Example::

    python scripts/bench_stack.py --frames 40 --size 2048 --chunk-frames 10
    python scripts/bench_stack.py --inference onnxruntime --segmenters 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=2048, help="Frame height and width.")
    parser.add_argument("--chunk-frames", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Batch workers.")
    parser.add_argument("--segmenters", type=int, default=1, help="Segmenter replicas.")
    parser.add_argument("--inference", default="triton", choices=["triton", "onnxruntime"])
    parser.add_argument("--keep", type=Path, default=None, help="Work folder to keep.")
    args = parser.parse_args()

    from plankline.imaging.synth import write_synth_video
    from plankline.outputs.tables import read_csv
    from plankline.stream.launch import stage_stats, up
    from plankline.stream.stack import stop_recorded

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-stack-"))
    raw = work / "batch" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    video = raw / "20260101120000.000.avi"
    if not video.exists():
        write_synth_video(video, args.frames, seed=7, height=args.size, width=args.size)
    fps = 13.7
    plankline = [sys.executable, "-m", "plankline.cli"]
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[1]
    env.setdefault("PLANKLINE_TRITON_VENV", str(root / ".stack" / "triton-venv"))
    os.environ.update(env)

    state = work / "stack"
    t0 = time.perf_counter()
    handles = up(
        state,
        inference=args.inference,
        replicas={"segmenter": args.segmenters},
        partitions=max(4, args.segmenters),
    )
    print(f"stack up in {time.perf_counter() - t0:.1f} s: {', '.join(handles)}")
    try:
        common = ["--state-dir", str(state), "--job", "bench"]
        t0 = time.perf_counter()
        subprocess.run(
            [
                *plankline,
                "submit",
                str(video),
                *common,
                "--chunk-frames",
                str(args.chunk_frames),
                "--set",
                f"fps={fps}",
            ],
            check=True,
            env=env,
        )
        submit_s = time.perf_counter() - t0
        out = work / "stream-out"
        subprocess.run(
            [*plankline, "results", str(out), *common, "--wait", "--timeout", "1800"],
            check=True,
            env=env,
        )
        stream_s = time.perf_counter() - t0
        stages = stage_stats(state)
    finally:
        stop_recorded(state)

    t0 = time.perf_counter()
    subprocess.run(
        [
            *plankline,
            "run",
            str(work / "batch"),
            "--chunk-frames",
            str(args.chunk_frames),
            "--workers",
            str(args.workers),
            "--set",
            f"fps={fps}",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    batch_s = time.perf_counter() - t0

    def rois(folder: Path) -> tuple[list[str], int]:
        ids: list[str] = []
        for path in sorted((folder / "measurements").glob("*.csv")):
            ids += [str(i) for i in read_csv(path, dtypes={"image": str}).get("image", [])]
        return ids, len(ids)

    stream_ids, n = rois(out)
    batch_ids, _ = rois(work / "batch")
    same = stream_ids == batch_ids and all(
        (out / "measurements" / p.name).read_bytes() == p.read_bytes()
        for p in (work / "batch" / "measurements").glob("*.csv")
    )
    print(
        f"\nvideo: {args.frames} frames of {args.size}x{args.size}, {n} ROIs, "
        f"chunks of {args.chunk_frames} frames; 2-core machine: {os.cpu_count()} CPUs"
    )
    print(f"{'':28}{'seconds':>9}{'frames/s':>10}{'ROIs/s':>9}")
    print(
        f"{'batch CLI (' + str(args.workers) + ' workers)':28}{batch_s:9.2f}"
        f"{args.frames / batch_s:10.2f}{n / batch_s:9.1f}"
    )
    label = f"stack ({args.inference}, {args.segmenters} seg)"
    print(f"{label:28}{stream_s:9.2f}{args.frames / stream_s:10.2f}{n / stream_s:9.1f}")
    print(f"ratio stack/batch throughput: {batch_s / stream_s:.2f} (target >= 0.8)")
    print(
        f"  of the stack's time, submit (remux + upload; services already busy): {submit_s:.2f} s"
    )
    print(f"same ROI ids and measurements as batch: {same}")
    print("\nper-stage latency (handle + produce, per chunk message):")
    for row in stages:
        mean = row["mean_latency_s"]
        print(
            f"  {row['name']:14} {row['ok']:4} msgs  mean {mean * 1000 if mean else 0:8.1f} ms"
            f"  lag {row['lag']}"
        )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
