"""Throughput of the streaming stack vs the batch CLI on the same video, in the same run.

Starts the real local stack (Tansu, SeaweedFS, Triton with the shipped model, one
process per service through the shared runner) and runs the same synthetic
ISIIS-like video (``--real``: one made from the real ISIIS frame) through it twice,
then through ``plankline run``:

1. *processing*: the video is already in the object store (put there first, not
   counted, as a cruise's videos are) and the services run; ``plankline submit
   s3://bucket/key`` plans it by reference (no copy) and the segmenter reads its
   frames with ranged GETs; timed from the submit to the last chunk's final
   outputs, downloaded by ``plankline results --wait``.
2. *end to end*: ``plankline submit`` of the local file (one upload) while the
   services run, timed from the submit to the last chunk's final outputs.

Prints frames/s of each beside the batch CLI with the ratio, and the CPU seconds per
frame of each beside the batch CLI's (target: the stack <= 1.25x batch), counting
every process of the stack (services, Tansu, SeaweedFS, Triton and its backend, the
submit and results CLIs). The services start before (once per deployment, not per
video: their start is printed apart and in one row). Then
the CPU seconds every process spent in each phase (where the overhead goes),
per-stage latency from the services' /metrics, and checks that the stack and the
batch CLI produced the same ROI ids, measurements and ROI tars.

Example::

    python scripts/bench_stack.py --frames 400 --chunk-frames 50
    python scripts/bench_stack.py --inference onnxruntime --segmenters 2
    python scripts/bench_stack.py --real --frames 48 --chunk-frames 12
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def children_cpu_s() -> float:
    """CPU seconds of this process's finished (waited-for) children, theirs included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stack_cpu_s(state: Path) -> dict[str, float]:
    """CPU seconds so far of every process the stack recorded, replicas summed."""
    from plankline.stream.stack import read_state

    seconds: dict[str, float] = {}
    for name, handle in read_state(state).items():
        cpu = handle.cpu_s()
        if cpu is not None:
            seconds[name.split("-")[0]] = seconds.get(name.split("-")[0], 0.0) + cpu
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--size", type=int, default=2048, help="Frame height and width.")
    parser.add_argument("--chunk-frames", type=int, default=50)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Batch workers.")
    parser.add_argument("--segmenters", type=int, default=1, help="Segmenter replicas.")
    parser.add_argument("--inference", default="triton", choices=["triton", "onnxruntime"])
    parser.add_argument("--keep", type=Path, default=None, help="Work folder to keep.")
    parser.add_argument(
        "--real",
        action="store_true",
        help="A video made from the real ISIIS frame in ../shared/data (bench_cli's) instead "
        "of the synthetic one: its bright background compresses, as real footage does",
    )
    args = parser.parse_args()

    from plankline.imaging.synth import write_synth_video
    from plankline.outputs.tables import read_csv
    from plankline.stream.launch import stage_stats, start_services, up, use_stack_env
    from plankline.stream.settings import S3Settings
    from plankline.stream.stack import stop_recorded
    from plankline.stream.store import S3Store

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-stack-"))
    raw = work / "raw"
    if args.real:
        from bench_cli import VIDEO_NAME, make_real_project

        video = raw / VIDEO_NAME
        if not video.exists():
            make_real_project(work, args.frames)
    else:
        video = raw / "20260101120000.000.avi"
        if not video.exists():
            raw.mkdir(parents=True, exist_ok=True)
            write_synth_video(video, args.frames, seed=7, height=args.size, width=args.size)
    fps = 13.7
    plankline = [sys.executable, "-m", "plankline.cli"]
    root = Path(__file__).resolve().parents[1]
    os.environ.setdefault("PLANKLINE_TRITON_VENV", str(root / ".stack" / "triton-venv"))
    env = dict(os.environ)
    stamp = time.time_ns()  # fresh stack and projects: nothing already done
    state = work / f"stack-{stamp}"
    settings = ["--chunk-frames", str(args.chunk_frames), "--set", f"fps={fps}"]

    def wait(job: str) -> list[str]:
        return ["--job", job, "--wait", "--timeout", "1800"]

    def cli(*argv: str) -> float:
        """Run a ``plankline`` command; returns its CPU seconds."""
        before = children_cpu_s()
        subprocess.run([*plankline, *argv], check=True, env=env, stdout=subprocess.DEVNULL)
        return children_cpu_s() - before

    def batch(run: int) -> tuple[Path, float, float]:
        """The batch CLI on a fresh project: (project, seconds, CPU seconds)."""
        project = work / f"batch-{stamp}-{run}"
        project.mkdir()
        (project / "raw").symlink_to(raw.resolve())
        t0 = time.perf_counter()
        cpu = cli("run", str(project), "--workers", str(args.workers), *settings)
        return project, time.perf_counter() - t0, cpu

    # The batch CLI before and after the stack: the machine's load drifts (shared cores
    # inflate CPU seconds too), so the baseline is their mean, and both are printed.
    batches = [batch(1)]

    t0 = time.perf_counter()
    up(
        state,
        inference=args.inference,
        partitions=max(4, args.segmenters),
        services=False,
        gateway=False,  # the figures are the pipeline's own CPU
    )
    print(f"servers up in {time.perf_counter() - t0:.1f} s")
    phases: dict[str, dict[str, float]] = {}
    try:
        common = ["--state-dir", str(state)]
        # 1. processing: the video already in the object store, submitted by reference
        use_stack_env(state)
        store = S3Store.from_settings(S3Settings())
        store.ensure_bucket()
        store.put_file(f"archive/{video.name}", video)
        cpu0 = stack_cpu_s(state)
        t0 = time.perf_counter()
        start_services(state, inference=args.inference, replicas={"segmenter": args.segmenters})
        ready_s = time.perf_counter() - t0
        cpu_ready = stack_cpu_s(state)
        start_cpu = sum(cpu_ready.get(k, 0.0) - cpu0.get(k, 0.0) for k in cpu_ready)
        t0 = time.perf_counter()
        url = f"s3://{store.bucket}/archive/{video.name}"
        upload_cpu = cli("submit", url, *common, "--job", "preloaded", *settings)
        upload_s = time.perf_counter() - t0
        results_cpu = cli(
            "results", str(work / f"out-preloaded-{stamp}"), *common, *wait("preloaded")
        )
        processing_s = time.perf_counter() - t0
        cpu1 = stack_cpu_s(state)
        phases["processing"] = {k: v - cpu_ready.get(k, 0.0) for k, v in cpu1.items()}
        phases["processing"] |= {"submit CLI": upload_cpu, "results CLI": results_cpu}
        # 2. end to end: submit while the services run
        t0 = time.perf_counter()
        submit_cpu = cli("submit", str(video), *common, "--job", "overlap", *settings)
        submit_s = time.perf_counter() - t0
        results_cpu = cli("results", str(work / f"out-overlap-{stamp}"), *common, *wait("overlap"))
        e2e_s = time.perf_counter() - t0
        cpu2 = stack_cpu_s(state)
        phases["end to end"] = {k: v - cpu1.get(k, 0.0) for k, v in cpu2.items()}
        phases["end to end"] |= {"submit CLI": submit_cpu, "results CLI": results_cpu}
        stages = stage_stats(state)
    finally:
        stop_recorded(state)

    batches.append(batch(2))
    project = batches[-1][0]
    batch_s = sum(b[1] for b in batches) / len(batches)
    batch_cpu = sum(b[2] for b in batches) / len(batches)

    def rois(folder: Path) -> list[str]:
        ids: list[str] = []
        for path in sorted((folder / "measurements").glob("*.csv")):
            ids += [str(i) for i in read_csv(path, dtypes={"image": str}).get("image", [])]
        return ids

    batch_ids = rois(project)
    same = all(  # the classes may differ in the last digit: Triton batches ROIs otherwise
        rois(work / out) == batch_ids
        and all(
            (work / out / p.relative_to(project)).read_bytes() == p.read_bytes()
            for kind in ("measurements", "segmentation")
            for p in (project / kind).iterdir()
        )
        for out in (f"out-preloaded-{stamp}", f"out-overlap-{stamp}")
    )
    n = len(batch_ids)
    print(
        f"\nvideo: {args.frames} frames of {args.size}x{args.size}, {n} ROIs, chunks of "
        f"{args.chunk_frames} frames; {os.cpu_count()} CPUs; inference {args.inference}, "
        f"{args.segmenters} segmenter(s)"
    )
    print(
        f"{'':44}{'seconds':>9}{'frames/s':>10}{'ratio':>7}{'CPU s':>8}"
        f"{'CPU ms/frame':>14}{'x batch':>9}"
    )
    processing_cpu = sum(phases["processing"].values())
    rows = [
        *(
            (f"batch CLI ({args.workers} workers), {when}", b[1], b[2])
            for when, b in zip(("before", "after"), batches, strict=True)
        ),
        (f"batch CLI ({args.workers} workers), mean", batch_s, batch_cpu),
        ("stack, processing (video in S3, by reference)", processing_s, processing_cpu),
        ("  the same, with the services' start", processing_s, processing_cpu + start_cpu),
        ("stack, end to end (upload + processing)", e2e_s, sum(phases["end to end"].values())),
    ]
    for label, seconds, cpu in rows:
        print(
            f"{label:44}{seconds:9.2f}{args.frames / seconds:10.2f}"
            f"{batch_s / seconds:7.2f}{cpu:8.1f}{1000 * cpu / args.frames:14.1f}"
            f"{cpu / batch_cpu:9.2f}"
        )
    print(
        f"ratio = batch seconds / stack seconds; x batch = CPU seconds per frame over the "
        f"mean batch CLI's (target <= 1.25). The services took {ready_s:.1f} s and {start_cpu:.1f} "
        f"CPU s to start; the by-reference submit took {upload_s:.1f} s and {upload_cpu:.1f} "
        f"CPU s; in the end-to-end run the submit (one upload) took {submit_s:.1f} s"
    )
    print(f"same ROI ids, measurements and ROI tars as batch, both stack runs: {same}")
    print("\nCPU seconds per process (where the stack's overhead goes):")
    names = sorted(
        {k for p in phases.values() for k in p}, key=lambda k: -phases["end to end"].get(k, 0)
    )
    print(f"  {'':14}{'processing':>12}{'end to end':>12}")
    for name in names:
        print(
            f"  {name:14}{phases['processing'].get(name, 0):12.1f}"
            f"{phases['end to end'].get(name, 0):12.1f}"
        )
    print(f"  {'batch CLI':14}{'':12}{batch_cpu:12.1f}  (mean of the runs before and after)")
    print("\nper-stage latency (handle + produce, per chunk message, both runs):")
    for row in stages:
        mean = row["mean_latency_s"]
        print(
            f"  {row['name']:14} {row['ok']:4} msgs  mean {mean * 1000 if mean else 0:8.1f} ms"
            f"  lag {row['lag']}"
        )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
