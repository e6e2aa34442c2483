#!/usr/bin/env python3
"""Plan a drive for SLURM: which videos each segmentation task takes, which chunks each
classification task takes, so that every job fits the wall-time limit.

Runs where ``plankline`` is importable: ``submit_drive.py`` calls it through
``$PLANKLINE_EXEC python3`` (the container on a login node, or a venv), so the chunks it
plans are the ones ``plankline run`` will make (same ``.ini``, same ``--set``, same
``plan_video``). Two sub-commands:

``plan DRIVE --out PLAN_DIR ...``
    Writes ``PLAN_DIR/plan.json`` and, per array task, plain text lists the sbatch
    templates read with bash: ``segment/<task>.videos`` (file names in ``raw/``),
    ``segment/<task>.markers`` (chunk and video names whose done/failed markers the task
    stages in, so ``plankline run`` skips what is done), ``classify/<task>.chunks``, and
    ``run.args`` / ``classify.args`` (the options passed on to ``plankline run`` and
    ``plankline classify``, one a line).
    A task whose work is all done is listed with ``"pending": false`` and not submitted.

``finish PLAN_DIR``
    After classification: writes ``summary/`` from the done markers (as ``plankline run``
    does at its end), then checks every planned chunk has its done marker and
    classification CSV; exit 1 naming the missing ones.

Wall time: a segmentation task's estimate is its frames / (frames per second per core x
cores) plus staging its bytes to node scratch; a classification task's is its ROIs /
(ROIs per second per GPU x GPUs) plus staging. Frames per second per core and ROIs per
frame are *measured* from the drive's own done markers when some exist (an earlier or pilot
run: each marker holds a chunk's frames, ROIs and seconds on one core), else the given
values are used. Tasks are filled in time order (next fit) up to ``fill`` x the limit; a
video alone over the budget gets its own task and a warning: the task saves finished
chunks when the limit nears (``--signal=B:USR1``) and a resubmission finishes it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Given rates used when the drive has no done markers to measure them from.
SEG_FPS_PER_CORE = 2.0
"""Frames/s one core segments (2048x2048 ISIIS; the seed's OSU pipeline: 2.4-2.9)."""
ROIS_PER_FRAME = 284.0
"""ROIs per frame: the seed's 14 million ROIs per hour at 13.7 frames/s."""
CLASS_ROIS_PER_S_PER_GPU = 400.0
"""ROIs/s one GPU classifies (WHOI's figure for a V100; conservative)."""
STAGE_MB_PER_S = 200.0
"""Copy speed shared file system <-> node scratch."""


def parse_walltime(text: str) -> int:
    """sbatch's ``--time`` formats to seconds: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.

    >>> parse_walltime("48:00:00"), parse_walltime("1-12"), parse_walltime("90")
    (172800, 129600, 5400)
    """
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ValueError(f"--time {text!r}: expected M, M:S, H:M:S, D-H, D-H:M or D-H:M:S")
    days, a, b, c = match.groups()
    if days is not None:
        h, m, s = int(a), int(b or 0), int(c or 0)
    elif c is not None:
        h, m, s = int(a), int(b), int(c)
    elif b is not None:
        h, m, s = 0, int(a), int(b)
    else:
        h, m, s = 0, int(a), 0
    return ((int(days or 0) * 24 + h) * 60 + m) * 60 + s


def pack(seconds: Sequence[float], budget: float) -> list[list[int]]:
    """Consecutive items into groups whose total stays within ``budget`` (next fit).

    Time order is kept (a task covers a stretch of the transect); an item over the budget
    alone makes its own group.

    >>> pack([3, 3, 3, 9, 1], budget=6)
    [[0, 1], [2], [3], [4]]
    """
    groups: list[list[int]] = []
    total = math.inf
    for index, cost in enumerate(seconds):
        if total + cost > budget:
            groups.append([])
            total = 0.0
        groups[-1].append(index)
        total += cost
    return groups


def measured_rates(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Frames/s per core and ROIs per frame from done markers (empty when none has data)."""
    frames = sum(r["stop"] - r["start"] for r in records)
    seconds = sum(r.get("seconds") or 0.0 for r in records)
    if not frames or seconds <= 0:
        return {}
    return {
        "seg_fps_per_core": frames / seconds,
        "rois_per_frame": sum(r["rois"] for r in records) / frames,
    }


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.iterdir())


def plan(args: argparse.Namespace) -> dict[str, Any]:
    from plankline.batch.project import Project
    from plankline.batch.run import plan_video
    from plankline.config import BatchSettings

    drive = args.drive.resolve()
    sets = {}
    for pair in args.set:  # as plankline run --set: KEY=VALUE, dashes or underscores
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        sets[key.strip().replace("-", "_")] = value.strip()
    settings = BatchSettings(
        project=drive, **({"config": args.config} if args.config else {}), **sets
    )
    project = Project(drive)
    if not project.raw.is_dir():
        raise SystemExit(f"{project.raw}: no raw/ folder (put the drive's videos there)")
    records = list(project.done_records())
    measured = measured_rates(records)
    fps = args.seg_fps or measured.get("seg_fps_per_core") or SEG_FPS_PER_CORE
    rois_per_frame = args.rois_per_frame or measured.get("rois_per_frame") or ROIS_PER_FRAME
    limit = parse_walltime(args.time)
    budget = args.fill * limit
    warnings: list[str] = []

    def needs_segmenting(name: str) -> bool:
        return not project.is_done(name) and (args.retry_failed or not project.has_failed(name))

    videos = []
    for video in project.videos():
        try:
            chunks = plan_video(video, settings)
        except Exception as error:  # recorded as failed by the task's plankline run
            warnings.append(f"{video.name}: cannot be read ({error}); its task will record it")
            chunks = []
        frames = sum(c.stop - c.start for c in chunks)
        cost = frames / (fps * args.seg_cpus) + _size(video) / 1e6 / STAGE_MB_PER_S
        if cost > budget:
            warnings.append(
                f"{video.name}: ~{cost / 3600:.1f} h at {fps:.2f} frames/s/core on "
                f"{args.seg_cpus} cores exceeds {args.fill:.0%} of --time {args.time}; it gets "
                "a task of its own and is finished by resubmitting (done markers resume it)"
            )
        pending = (needs_segmenting(video.name) and not chunks) or any(
            needs_segmenting(c.name) for c in chunks
        )
        videos.append({"video": video.name, "chunks": chunks, "cost": cost, "pending": pending})

    segment = []
    for task, members in enumerate(pack([v["cost"] for v in videos], budget)):
        group = [videos[i] for i in members]
        segment.append(
            {
                "task": task,
                "videos": [v["video"] for v in group],
                "chunks": [c.name for v in group for c in v["chunks"]],
                "frames": sum(c.stop - c.start for v in group for c in v["chunks"]),
                "estimate_s": round(sum(v["cost"] for v in group), 1),
                "pending": any(v["pending"] for v in group),
            }
        )

    rate = args.class_rate * args.gpus
    chunk_costs = []
    chunk_rows = []
    for v in videos:
        for c in v["chunks"]:
            record = project.done_record(c.name)
            rois = record["rois"] if record else (c.stop - c.start) * rois_per_frame
            size = rois * 4e3  # bytes of a PNG ROI, roughly, for staging
            chunk_costs.append(rois / rate + size / 1e6 / STAGE_MB_PER_S)
            todo = not project.outputs(c.name)["classification"].is_file() and (
                project.is_done(c.name) or needs_segmenting(c.name)
            )
            chunk_rows.append((c.name, rois, todo))
    classify = []
    for task, members in enumerate(pack(chunk_costs, budget)):
        classify.append(
            {
                "task": task,
                "chunks": [chunk_rows[i][0] for i in members],
                "rois_estimate": round(sum(chunk_rows[i][1] for i in members)),
                "estimate_s": round(sum(chunk_costs[i] for i in members), 1),
                "pending": any(chunk_rows[i][2] for i in members),
            }
        )

    out = args.out
    for sub in ("segment", "classify", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for task in segment:
        (out / "segment" / f"{task['task']}.videos").write_text(
            "".join(f"{v}\n" for v in task["videos"])
        )
        (out / "segment" / f"{task['task']}.markers").write_text(
            "".join(f"{n}\n" for n in [*task["chunks"], *task["videos"]])
        )
    for task in classify:
        (out / "classify" / f"{task['task']}.chunks").write_text(
            "".join(f"{c}\n" for c in task["chunks"])
        )
    # the arguments the templates pass on, one a line (bash: mapfile -t)
    run_args = ["--no-classify"]
    if args.config:
        run_args += ["--config", str(Path(args.config).resolve())]
    for pair in args.set:
        run_args += ["--set", pair]
    if args.retry_failed:
        run_args.append("--retry-failed")
    classify_args = []  # run's size gate: the model's own unless the settings set one
    if settings.classify_min_px is not None:
        classify_args += ["--min-px", str(settings.classify_min_px)]
    if settings.model:
        classify_args += ["--model", str(Path(settings.model).resolve())]
    (out / "run.args").write_text("".join(f"{a}\n" for a in run_args))
    (out / "classify.args").write_text("".join(f"{a}\n" for a in classify_args))
    result = {
        "drive": str(drive),
        "config": str(Path(args.config).resolve()) if args.config else None,
        "set": args.set,
        "model": str(Path(settings.model).resolve()) if settings.model else None,
        "chunk_frames": settings.chunk_frames,
        "time": args.time,
        "time_s": limit,
        "budget_s": budget,
        "rates": {
            "seg_fps_per_core": fps,
            "seg_fps_source": "given" if args.seg_fps else ("measured" if measured else "default"),
            "rois_per_frame": rois_per_frame,
            "class_rois_per_s_per_gpu": args.class_rate,
        },
        "seg_cpus": args.seg_cpus,
        "gpus": args.gpus,
        "retry_failed": args.retry_failed,
        "allow_failed": args.allow_failed,
        "segment": segment,
        "classify": classify,
        "warnings": warnings,
    }
    (out / "plan.json").write_text(json.dumps(result, indent=1))
    return result


def finish(plan_dir: Path) -> int:
    """Summary from the done markers, then a check that every planned chunk is complete."""
    from plankline.batch.project import Project
    from plankline.batch.run import write_summary

    planned = json.loads((plan_dir / "plan.json").read_text())
    project = Project(Path(planned["drive"]))
    # the cores SLURM gave this step (Linux), else the machine's
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    write_summary(project, len(cores) if cores else os.cpu_count() or 1)
    missing = []
    failed = []
    chunks = [c for task in planned["segment"] for c in task["chunks"]]
    for chunk in chunks:
        if project.has_failed(chunk) and not project.is_done(chunk):
            failed.append(chunk)
        elif not project.is_done(chunk):
            missing.append(f"{chunk} (not segmented)")
        elif not project.outputs(chunk)["classification"].is_file():
            missing.append(f"{chunk} (not classified)")
    print(
        f"{planned['drive']}: {len(chunks) - len(missing) - len(failed)} of {len(chunks)} "
        f"chunks segmented and classified; summary in {project.summary}"
    )
    for chunk in failed:
        print(f"failed: {chunk} (see .plankline/failed/{chunk}.json)")
    for chunk in missing:
        print(f"missing: {chunk}")
    return 1 if missing or (failed and not planned["allow_failed"]) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="plan a drive's array tasks")
    p.add_argument("drive", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("-c", "--config", help="plankline .ini (as for plankline run)")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE, as plankline run")
    p.add_argument("--time", default="48:00:00", help="wall-time limit per job")
    p.add_argument("--fill", type=float, default=0.8, help="share of --time to plan for")
    p.add_argument("--seg-cpus", type=int, default=24, help="cores per segmentation task")
    p.add_argument("--seg-fps", type=float, help="frames/s per core (default: measured)")
    p.add_argument("--rois-per-frame", type=float, help="(default: measured)")
    p.add_argument("--gpus", type=int, default=4, help="GPUs per classification task")
    p.add_argument("--class-rate", type=float, default=CLASS_ROIS_PER_S_PER_GPU)
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--allow-failed", action="store_true")
    f = sub.add_parser("finish", help="summary and completeness check after classification")
    f.add_argument("plan_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "finish":
        return finish(args.plan_dir)
    if not 0 < args.fill <= 1:
        parser.error("--fill must be in (0, 1]")
    result = plan(args)
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
