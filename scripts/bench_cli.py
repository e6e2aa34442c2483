"""Benchmark: the whole batch CLI on real frames, beside a naive OpenCV path, with a
per-stage profile.

Prints figures and ratios (never asserts); every figure is measured in the same run,
because the development machine is shared and noisy (best of ``--repeat`` runs each,
ours and the naive path alternating).

    python scripts/bench_cli.py                      # real-frame video, 60 frames, one core
    python scripts/bench_cli.py --classify           # + classification on all cores
    python scripts/bench_cli.py --montage rois.png   # + a montage of the ROIs written

Sources:

* **real**: ``../shared/data/isiis-frames/mbari-isiis-raw-2048.jpg`` (a raw, vignetted
  2048x2048 ISIIS frame) made into an uncompressed ISIIS-named AVI of ``--frames``
  frames: its content rolled along the lines and mirrored under the camera's own fixed
  vignette (``plankline.imaging.synth.frames_from_still``, as ``bench_quality.py``);
  ``--codec h264`` (or ffv1, mjpeg, mpeg4) writes it compressed instead;
* **synthetic**: ``plankline.imaging.synth.write_synth_video`` (``--synth-frames``).

Paths, one core (``cv2.setNumThreads(1)``, BLAS single-threaded):

* **ours**: ``plankline.batch.run.run_batch`` with ``workers=1, classify=False`` and the
  CLI's other defaults, i.e. ``plankline run PROJECT --set workers=1 --set classify=false``
  without the progress bar: decode, flat-field, segmentation, measurement, ROI tar,
  measurements CSV, EcoTaxa zip, done markers and summary;
* **naive**: the usual first OpenCV script: column-mean flat-field in float64, fixed
  threshold, ``connectedComponentsWithStats``, crop and PNG-encode each object (nothing
  measured, nothing written);
* **profile**: ``pipeline.process_chunk`` with a ``StageTimes`` (the same calls as ours),
  seconds per stage turned into frames/s and ROIs/s so the slowest stage is visible.

With ``--classify``: ``run_batch`` on all cores without classification, with it (default
model, its own size gate), and with it at the ``--gates`` values (0:
every ROI through the network), same chunking, beside each other (frames/s, ROIs/s, the
share of the throughput without classification each keeps).

Besides wall-clock frames/s (best of ``--repeat``), the CPU seconds of ours and of the
naive path are printed per frame and per ROI: on a shared machine they drift less.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
from plankline import pipeline
from plankline.batch.project import Project
from plankline.batch.run import plan_video, run_batch
from plankline.config import BatchSettings
from plankline.imaging.synth import frames_from_still, write_synth_video
from plankline.imaging.video import ContinuousReader, write_video
from plankline.model.card import read_model_card
from plankline.model.infer import DEFAULT_MODEL_DIR
from plankline.outputs.rois import iter_roi_tar
from plankline.pipeline import STAGES, StageTimes, one_core, process_chunk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segment import naive_path

REAL = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "isiis-frames"
    / "mbari-isiis-raw-2048.jpg"
)
VIDEO_NAME = "20180706170805.476.avi"  # ISIIS names: the start time, to the millisecond


def make_real_project(root: Path, n: int, codec: str = "rawvideo") -> Path:
    frame = cv2.imread(str(REAL), cv2.IMREAD_GRAYSCALE)
    if frame is None:
        raise FileNotFoundError(f"{REAL}: cannot read the real ISIIS frame")
    (root / "raw").mkdir(parents=True)
    name = VIDEO_NAME if codec in ("rawvideo", "ffv1", "mjpeg") else f"{VIDEO_NAME[:-4]}.mp4"
    write_video(root / "raw" / name, frames_from_still(frame, n), fps=13.7, codec=codec)
    return root


def make_synth_project(root: Path, n: int) -> Path:
    (root / "raw").mkdir(parents=True)
    video = root / "raw" / VIDEO_NAME
    write_synth_video(video, n, seed=0)
    for extra in (root / "raw").iterdir():  # the ground truth CSV is no video: move it out
        if extra != video:
            extra.rename(root / extra.name)
    return root


def clear_outputs(project: Path) -> None:
    for sub in ("segmentation", "measurements", "classification", "ecotaxa", "summary"):
        shutil.rmtree(project / sub, ignore_errors=True)
    shutil.rmtree(project / ".plankline", ignore_errors=True)


def ours(project: Path, **settings: object) -> tuple[int, int, float, list[str], float]:
    """``run_batch`` as ``plankline run`` calls it; frames, ROIs, seconds, failures, and
    the CPU seconds of this process (the whole run with ``workers=1``, which runs inline)."""
    clear_outputs(project)
    s = BatchSettings(project=project, **{"workers": 1, "classify": False, **settings})
    t, c = time.perf_counter(), _cpu()
    report = run_batch(s)
    cpu = _cpu() - c
    return report.frames, report.rois, time.perf_counter() - t, report.failures, cpu


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the batch's workers,
    joined when ``run_batch`` returns)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def naive(video: Path, threshold: int = 200) -> tuple[int, int, float, float]:
    """The naive OpenCV path of ``bench_segment.py`` (one definition), as (frames, ROIs, s,
    CPU s)."""
    c = time.process_time()
    n, seconds, count = naive_path(video, threshold=threshold)
    return n, count, seconds, time.process_time() - c


def profile(project: Path, **settings: object) -> tuple[StageTimes, int, int, float]:
    """``process_chunk`` over every chunk with stage timers; times, frames, ROIs, seconds.

    The stage timers count this process's CPU seconds (``time.process_time`` in place of
    ``perf_counter`` for ``plankline.pipeline`` during the profile): the profile runs
    inline on one core, so CPU seconds are its work, and on a shared machine they do not
    count the time other processes hold the core.
    """
    real = pipeline.time
    pipeline.time = SimpleNamespace(perf_counter=time.process_time)  # type: ignore[assignment]
    try:
        return _profile(project, **settings)
    finally:
        pipeline.time = real


def _profile(project: Path, **settings: object) -> tuple[StageTimes, int, int, float]:
    one_core()
    clear_outputs(project)
    s = BatchSettings(project=project, **{"workers": 1, "classify": False, **settings})
    proj = Project(project)
    proj.create()
    total = StageTimes()
    frames = rois = 0
    t = time.process_time()
    for video in proj.videos():
        read = ContinuousReader(video, keep=s.prime_frames + 8)  # as the batch's workers
        for chunk in plan_video(video, s):
            times = StageTimes()
            try:
                rois += process_chunk(read, chunk, s, proj.outputs(chunk.name), times)[0]
            except Exception as error:  # report, keep the profile of what ran
                print(f"  profile: chunk {chunk.name} failed: {error!r}")
            total.add(times)
            frames += chunk.stop - chunk.start
    return total, frames, rois, time.process_time() - t


def print_profile(times: StageTimes, frames: int, rois: int, wall: float) -> None:
    """Seconds (CPU, see :func:`profile`) per stage, as a share, ms per frame, us per ROI
    and frames/s and ROIs/s of one core."""
    staged = sum(times.seconds.values())
    print(
        f"  {'stage':10s} {'CPU s':>8s} {'share':>6s} {'ms/frame':>9s} {'us/ROI':>7s}"
        f" {'frames/s':>9s} {'ROIs/s':>9s}"
    )

    def row(name: str, sec: float, note: str = "") -> None:
        print(
            f"  {name:10s} {sec:8.2f} {sec / wall:6.1%} {1e3 * sec / max(frames, 1):9.1f}"
            f" {1e6 * sec / max(rois, 1):7.1f} {frames / sec:9.1f} {rois / sec:9.0f}{note}"
        )

    for name in STAGES:
        sec = times.seconds[name]
        if sec == 0:
            print(f"  {name:10s} {'-':>8s}")
            continue
        row(name, sec)
    other = wall - staged
    print(f"  {'other':10s} {other:8.2f} {other / wall:6.1%}   (markers, planning, Python glue)")
    row("total", wall)
    if times.seconds["classify"]:
        # the all-cores runs below use small chunks, whose flat-field priming inflates the
        # run without classification: this share, of one core's CPU, is the fair one
        rest = wall - times.seconds["classify"]
        print(f"  with classification one core keeps {rest / wall:.0%} of its throughput")


def bench_source(
    label: str,
    project: Path,
    repeat: int,
    classify: bool,
    workers: int,
    gates: tuple[int, ...] = (),
) -> None:
    (video,) = (project / "raw").iterdir()
    print(f"\n== {label}: {video.name}, {video.stat().st_size / 2**20:.0f} MiB ==")
    best_ours = best_naive = None
    cpu_ours, cpu_naive = [], []
    for _ in range(repeat):
        r = ours(project)
        cpu_ours.append(r[4])
        if best_ours is None or r[2] < best_ours[2]:
            best_ours = r
        q = naive(video)
        cpu_naive.append(q[3])
        if best_naive is None or q[2] < best_naive[2]:
            best_naive = q
    assert best_ours is not None and best_naive is not None
    n, rois, dt, failures, _ = best_ours
    nn, nrois, ndt, _ = best_naive
    print(
        f"ours  (plankline run, workers=1, classify=false): {n / dt:6.1f} frames/s "
        f"{rois / dt:7.0f} ROIs/s  ({rois / max(n, 1):.0f} ROIs/frame, {dt:.2f} s)"
    )
    if failures:
        print(f"  FAILED chunks ({len(failures)}): {failures[0][:200]}")
    print(
        f"naive (col-mean, fixed threshold, PNG crops):     {nn / ndt:6.1f} frames/s "
        f"{nrois / ndt:7.0f} ROIs/s  ({nrois / max(nn, 1):.0f} ROIs/frame, {ndt:.2f} s)"
    )
    print(f"ratio ours/naive (frames/s): {(n / dt) / (nn / ndt):.2f}x   (best of {repeat} each)")
    # CPU seconds resist a shared machine's load better than wall time: what each path
    # costs a core, per frame and per ROI (best of the repeats)
    co, cn = min(cpu_ours), min(cpu_naive)
    print(
        f"CPU per frame: ours {1e3 * co / n:.1f} ms ({1e6 * co / max(rois, 1):.0f} us/ROI), "
        f"naive {1e3 * cn / nn:.1f} ms ({1e6 * cn / max(nrois, 1):.0f} us/ROI); "
        f"ratio (frames per CPU second) {(n / co) / (nn / cn):.2f}x, "
        f"(ROIs per CPU second) {(rois / co) / (nrois / cn):.2f}x"
    )
    times, pf, pr, pwall = profile(project, classify=classify)
    print(
        f"per-stage profile, CPU seconds, one core ({pf} frames, {pr} ROIs; process_chunk +"
        f" StageTimes"
        f"{', classification on' if classify else ''}):"
    )
    print_profile(times, pf, pr, pwall)
    if classify:
        chunk = max(1, -(-n // (2 * workers)))  # two chunks per worker: both cores busy
        gate = read_model_card(DEFAULT_MODEL_DIR).min_object_px  # the default model's own
        runs = {"without classification": {}, f"with (default gate, {gate} px)": {}}
        for px in gates:
            runs[f"with, classify_min_px={px}"] = {"classify_min_px": px}
        print(f"all cores ({workers} workers, chunks of {chunk} frames, best of {repeat}):")
        off = off_cpu = None
        for name, extra in runs.items():
            on = {} if name.startswith("without") else {"classify": True, **extra}
            results = [
                ours(project, workers=workers, chunk_frames=chunk, **on) for _ in range(repeat)
            ]
            fr, ro, sec, fail, _ = min(results, key=lambda r: r[2])
            cpu = min(r[4] for r in results)
            if off is None or off_cpu is None:
                off, off_cpu = sec, cpu
            keeps = (
                ""
                if name.startswith("without")
                else f"  keeps {off / sec:.0%} (by CPU {off_cpu / cpu:.0%})"
            )
            print(
                f"  {name:34s} {fr / sec:6.1f} frames/s {ro / sec:7.0f} ROIs/s ({sec:.2f} s,"
                f" {1e3 * cpu / fr:.0f} CPU ms/frame)"
                + keeps
                + (f"  FAILED: {fail[0][:120]}" if fail else "")
            )


def montage(project: Path, out: Path, n: int = 120, cell: int = 96) -> None:
    """Up to ``n`` ROIs of the project's tars on a grid, largest first, each scaled to fit a
    ``cell`` box (never enlarged more than 3x), its size in px written under it."""
    items = []
    for tar in sorted((project / "segmentation").glob("*.tar")):
        items += [img for _, img in iter_roi_tar(tar)]
    if not items:
        print(f"montage: no ROIs in {project / 'segmentation'}")
        return
    rng = np.random.default_rng(0)
    big = sorted(items, key=lambda a: -a.size)[: n // 3]
    rest = [items[i] for i in rng.permutation(len(items))[: n - len(big)]]
    chosen = big + rest
    cols = 12
    rows = -(-len(chosen) // cols)
    sheet = np.full((rows * (cell + 14), cols * cell), 128, np.uint8)
    for k, img in enumerate(chosen):
        h, w = img.shape[:2]
        s = min((cell - 4) / max(h, w), 3.0)
        small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), cv2.INTER_AREA)
        y0, x0 = (k // cols) * (cell + 14), (k % cols) * cell
        sh, sw = small.shape[:2]
        sheet[y0 + 2 : y0 + 2 + sh, x0 + 2 : x0 + 2 + sw] = small
        cv2.putText(sheet, f"{w}x{h}", (x0 + 2, y0 + cell + 10), 0, 0.35, 0, 1)
    cv2.imwrite(str(out), sheet)
    print(f"montage: {len(chosen)} of {len(items)} ROIs ({len(big)} largest + random) -> {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=60, help="real-frame video length")
    ap.add_argument("--synth-frames", type=int, default=30, help="synthetic video length")
    ap.add_argument(
        "--repeat", "--repeats", type=int, default=2, help="runs of each path (best kept)"
    )
    ap.add_argument(
        "--gates",
        type=int,
        nargs="*",
        default=[0, 12],
        help="with --classify: also these classify_min_px (0 = every ROI through the model)",
    )
    ap.add_argument("--classify", action="store_true", help="+ all cores with classification")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--codec",
        default="rawvideo",
        choices=["rawvideo", "ffv1", "mjpeg", "h264", "mpeg4"],
        help="the real-frame video's codec (h264/mpeg4 in MP4, the encoder's keyframe "
        "interval: x264 250); over 100 frames (a chunk) it shows what the chunks' reads cost",
    )
    ap.add_argument("--no-synth", action="store_true", help="skip the synthetic source")
    ap.add_argument("--montage", type=Path, help="PNG montage of the real video's ROIs")
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder")
    a = ap.parse_args()
    one_core()
    tmp = Path(tempfile.mkdtemp(prefix="bench_cli_", dir=a.tmp))
    try:
        if REAL.exists():
            real = make_real_project(tmp / "real", a.frames, a.codec)
            bench_source(
                f"real ISIIS frame x{a.frames} ({a.codec})",
                real,
                a.repeat,
                a.classify,
                a.workers,
                a.gates,
            )
            if a.montage:
                ours(real)
                montage(real, a.montage)
        else:
            print(f"real source skipped: {REAL} not found")
        if not a.no_synth:
            synth = make_synth_project(tmp / "synth", a.synth_frames)
            bench_source(
                f"synthetic x{a.synth_frames}", synth, a.repeat, a.classify, a.workers, a.gates
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
