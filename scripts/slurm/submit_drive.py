#!/usr/bin/env python3
"""Submit a whole drive to SLURM: segmentation array -> classification array -> summary.

Run it on the login node from the folder holding ``plankline.sif`` (any python3; it needs
nothing but the standard library and ``sbatch``/``squeue``):

    python3 scripts/slurm/submit_drive.py /oasis/projects/nsf/osu119/$USER/cruise42 \\
        -A osu119 --time 48:00:00 --gres gpu:p100:4 --tasks-per-gpu 7

What it does:

1. Plans the drive with ``plan_drive.py plan`` run through ``$PLANKLINE_EXEC python3``
   (the image: the same ``plan_video`` and settings as ``plankline run``): videos grouped
   into segmentation tasks and chunks into classification tasks that fit ``--time``, from
   frames/s measured on the drive's done markers or given. The plan, the scripts it ran
   with and every job's log go to ``DRIVE/slurm/<time>/``.
2. ``sbatch --array`` of the segmentation tasks that still have work (a task whose chunks
   all have done markers is not submitted: resume is the batch pipeline's own),
3. the classification array with ``--dependency=afterok:<segmentation>`` (afterany with
   ``--allow-failed``) and ``--kill-on-invalid-dep=yes``: if a segmentation task fails or
   is cancelled, classification is dropped instead of waiting forever, and submitting the
   drive again resumes it,
4. ``finish.sbatch`` (afterok on classification): ``summary/`` and a completeness check.

It refuses while jobs of the same drive are still queued or running (two submissions would
do the same chunks twice); ``--dry-run`` plans and prints the sbatch commands only.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_EXEC = "singularity exec --nv plankline.sif"


def array_spec(tasks: list[int], parallel: int | None) -> str:
    """``0-3,7`` from task indices, with ``%N`` to cap how many run at once.

    >>> array_spec([0, 1, 2, 3, 7], 2)
    '0-3,7%2'
    """
    runs: list[list[int]] = []
    for t in sorted(tasks):
        if runs and t == runs[-1][-1] + 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    spec = ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)
    return f"{spec}%{parallel}" if parallel else spec


def gpu_count(gres: str) -> int:
    """GPUs in a ``--gres`` value: ``gpu:p100:4`` -> 4, ``gpu`` -> 1, empty -> 0."""
    if not gres:
        return 0
    last = gres.split(",")[0].split(":")[-1]
    return int(last) if last.isdigit() else 1


def queued_jobs(comment: str) -> list[str]:
    """IDs of this user's queued or running jobs that carry this drive's comment."""
    out = subprocess.run(
        ["squeue", "-h", "-u", pwd.getpwuid(os.getuid()).pw_name, "-o", "%i|%k"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("|", 1)[0] for line in out.splitlines() if line.endswith(f"|{comment}")]


def sbatch(command: list[str], env: dict[str, str], dry_run: bool) -> str:
    print("+ " + shlex.join(command))
    if dry_run:
        return "DRYRUN"
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"sbatch failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout.strip().split(";")[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("drive", type=Path, help="project folder holding raw/ (shared file system)")
    p.add_argument(
        "--exec",
        default=os.environ.get("PLANKLINE_EXEC") or DEFAULT_EXEC,
        help="command prefix that runs plankline and python3 (PLANKLINE_EXEC)",
    )
    p.add_argument("-A", "--account", help="allocation to charge (sbatch -A)")
    p.add_argument("--time", default="48:00:00", help="wall-time limit of every job")
    p.add_argument(
        "--fill", type=float, default=0.8, help="share of --time a job is planned to use"
    )
    p.add_argument("--seg-partition", default="compute")
    p.add_argument("--seg-cpus", type=int, default=24, help="cores per segmentation task")
    p.add_argument("--gpu-partition", default="gpu")
    p.add_argument(
        "--gres",
        default="gpu:p100:4",
        help="GPUs per classification task, gpu:<type>:<N>; '' for none (CPU nodes)",
    )
    p.add_argument(
        "--tasks-per-gpu",
        type=int,
        default=7,
        help="cores (classify workers) per GPU: the seed's 6 for K80, 7 for P100",
    )
    p.add_argument(
        "--finish-partition", help="partition of the summary job (default: --seg-partition)"
    )
    p.add_argument("--seg-fps", type=float, help="frames/s per core (default: measured, else 2.0)")
    p.add_argument("--rois-per-frame", type=float, help="(default: measured, else 284)")
    p.add_argument("--class-rate", type=float, default=400.0, help="ROIs/s per GPU")
    p.add_argument("-c", "--config", help="plankline .ini for every job")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE, as plankline run --set")
    p.add_argument("--retry-failed", action="store_true", help="redo chunks that failed before")
    p.add_argument(
        "--allow-failed",
        action="store_true",
        help="classify what was segmented even if some segmentation task failed (afterany)",
    )
    p.add_argument(
        "--scratch", help="node scratch root (PLANKLINE_SCRATCH; default /scratch/$USER)"
    )
    p.add_argument("--sync-every", type=int, help="seconds between copies of finished work back")
    p.add_argument("--max-parallel", type=int, help="array tasks running at once (sbatch %%N)")
    p.add_argument(
        "--sbatch-arg", action="append", default=[], help="extra sbatch option, e.g. --qos=normal"
    )
    p.add_argument("--dry-run", action="store_true", help="plan and print the sbatch commands only")
    p.add_argument(
        "--force", action="store_true", help="submit even if jobs of this drive are queued"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    drive = args.drive.resolve()
    if not (drive / "raw").is_dir():
        raise SystemExit(f"{drive / 'raw'}: no raw/ folder (put the drive's videos there)")
    comment = f"plankline:{drive}"
    if not args.dry_run and not args.force and (running := queued_jobs(comment)):
        raise SystemExit(
            f"jobs of {drive} are still queued or running ({', '.join(running)}): wait, or "
            f"scancel them, then submit again (done work is kept)"
        )

    stamp = time.strftime("%Y%m%dT%H%M%S")
    plan_dir = drive / "slurm" / stamp
    suffix = 1
    while plan_dir.exists():
        plan_dir = drive / "slurm" / f"{stamp}.{suffix}"
        suffix += 1
    (plan_dir / "bin").mkdir(parents=True)
    for name in ("lib.sh", "plan_drive.py"):  # the jobs run this snapshot, not later edits
        shutil.copy2(HERE / name, plan_dir / "bin" / name)

    exec_prefix = shlex.split(args.exec)
    gpus = gpu_count(args.gres)
    bind = ",".join(
        [str(drive), *([str(Path(args.config).resolve().parent)] if args.config else [])]
    )
    plan_env = {
        **os.environ,
        "SINGULARITY_BIND": ",".join(filter(None, [os.environ.get("SINGULARITY_BIND"), bind])),
        "APPTAINER_BIND": ",".join(filter(None, [os.environ.get("APPTAINER_BIND"), bind])),
    }
    plan_cmd = [
        *exec_prefix,
        "python3",
        str(plan_dir / "bin" / "plan_drive.py"),
        "plan",
        str(drive),
        "--out",
        str(plan_dir),
        "--time",
        args.time,
        "--fill",
        str(args.fill),
        "--seg-cpus",
        str(args.seg_cpus),
        "--gpus",
        str(max(gpus, 1)),
        "--class-rate",
        str(args.class_rate),
        *(["--seg-fps", str(args.seg_fps)] if args.seg_fps else []),
        *(["--rois-per-frame", str(args.rois_per_frame)] if args.rois_per_frame else []),
        *(["--config", str(Path(args.config).resolve())] if args.config else []),
        *[x for pair in args.set for x in ("--set", pair)],
        *(["--retry-failed"] if args.retry_failed else []),
        *(["--allow-failed"] if args.allow_failed else []),
    ]
    print("+ " + shlex.join(plan_cmd))
    planned = subprocess.run(plan_cmd, env=plan_env)
    if planned.returncode:
        raise SystemExit(f"planning failed ({planned.returncode}); plan folder {plan_dir}")
    plan = json.loads((plan_dir / "plan.json").read_text())

    env = {
        **os.environ,
        "PLANKLINE_EXEC": args.exec,
        "PLANKLINE_DRIVE": str(drive),
        "PLANKLINE_PLAN": str(plan_dir),
        "PLANKLINE_SLURM_DIR": str(plan_dir / "bin"),
    }
    if args.scratch:
        env["PLANKLINE_SCRATCH"] = args.scratch
    if args.sync_every:
        env["PLANKLINE_SYNC_EVERY"] = str(args.sync_every)
    if gpus:
        env["PLANKLINE_TASKS_PER_GPU"] = str(args.tasks_per_gpu)
    # the wall-time warning that makes a job save its finished chunks (lib.sh): 5 min before
    # the limit, less for short limits (SLURM may send it up to 60 s early)
    limit_s = plan["time_s"]
    common = [
        "sbatch",
        "--parsable",
        f"--comment={comment}",
        f"--time={args.time}",
        f"--signal=B:USR1@{int(min(300, limit_s / 4))}",
        *([f"--account={args.account}"] if args.account else []),
        *args.sbatch_arg,
    ]
    logs = plan_dir / "logs"
    jobs: dict[str, str | None] = {"segment": None, "classify": None, "finish": None}

    seg_tasks = [t["task"] for t in plan["segment"] if t["pending"]]
    if seg_tasks:
        jobs["segment"] = sbatch(
            [
                *common,
                "--job-name=plankline-segment",
                f"--partition={args.seg_partition}",
                f"--cpus-per-task={args.seg_cpus}",
                f"--array={array_spec(seg_tasks, args.max_parallel)}",
                f"--output={logs}/segment-%A_%a.out",
                str(HERE / "segment.sbatch"),
            ],
            env,
            args.dry_run,
        )
    class_tasks = [t["task"] for t in plan["classify"] if t["pending"]]
    if class_tasks:
        after = "afterany" if args.allow_failed else "afterok"
        jobs["classify"] = sbatch(
            [
                *common,
                "--job-name=plankline-classify",
                f"--partition={args.gpu_partition}",
                *([f"--gres={args.gres}"] if args.gres else []),
                f"--ntasks-per-node={max(gpus, 1) * args.tasks_per_gpu}",
                f"--array={array_spec(class_tasks, args.max_parallel)}",
                f"--output={logs}/classify-%A_%a.out",
                *(
                    [f"--dependency={after}:{jobs['segment']}", "--kill-on-invalid-dep=yes"]
                    if jobs["segment"]
                    else []
                ),
                str(HERE / "classify.sbatch"),
            ],
            env,
            args.dry_run,
        )
    before = jobs["classify"] or jobs["segment"]
    jobs["finish"] = sbatch(
        [
            *common,
            "--job-name=plankline-finish",
            f"--partition={args.finish_partition or args.seg_partition}",
            "--cpus-per-task=1",
            f"--output={logs}/finish-%j.out",
            *([f"--dependency=afterok:{before}", "--kill-on-invalid-dep=yes"] if before else []),
            str(HERE / "finish.sbatch"),
        ],
        env,
        args.dry_run,
    )
    (plan_dir / "submitted.json").write_text(json.dumps(jobs, indent=1))
    for warning in plan["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{drive}: segmentation {len(seg_tasks)} of {len(plan['segment'])} task(s) "
        f"[{jobs['segment'] or 'nothing left'}], classification {len(class_tasks)} of "
        f"{len(plan['classify'])} [{jobs['classify'] or 'nothing left'}], finish "
        f"[{jobs['finish']}]; plan and logs in {plan_dir}"
    )
    print(json.dumps(jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
