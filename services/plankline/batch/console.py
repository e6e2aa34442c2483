"""What the person at the terminal sees: effective config, a progress bar with
frames/s, ROIs/s and ETA, and a closing summary. Nothing here computes results.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from plankline import terminal
from plankline.batch.project import Project
from plankline.batch.run import BatchReport, ChunkResult, configure_logging, run_batch
from plankline.config import BatchSettings
from plankline.imaging.score import score_detections
from plankline.imaging.segment import SegmentParams
from plankline.imaging.synth import GroundTruth, truth_path, write_synth_video
from plankline.outputs.naming import format_timestamp
from plankline.outputs.tables import read_csv
from plankline.terminal import escape


def _console() -> Console:
    """Progress, tables and messages go to stderr; whole lines in logs (``plankline.terminal``)."""
    return terminal.console(stderr=True)


def run_with_progress(settings: BatchSettings, *, retry_failed: bool = False) -> BatchReport:
    """Run the batch with a live progress bar, then print the summary."""
    Project(settings.project).check()
    configure_logging(settings.project)
    console = _console()
    shown = ", ".join(f"{k}={v}" for k, v in settings.masked().items() if v is not None)
    console.print(f"[bold]plankline[/] {escape(shown)}", highlight=False)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} frames"),
        TextColumn("{task.fields[fps]:.1f} frames/s, {task.fields[rps]:.0f} ROIs/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    state = {"began": time.perf_counter(), "frames": 0, "rois": 0}
    task = progress.add_task("segment+measure+classify", total=0, fps=0.0, rps=0.0)

    def on_plan(total: int, already: int) -> None:
        progress.update(task, total=total, completed=already)
        state["began"] = time.perf_counter()

    def on_progress(result: ChunkResult, frames: int) -> None:
        state["frames"] += frames
        state["rois"] += result.rois
        elapsed = max(time.perf_counter() - state["began"], 1e-9)
        progress.update(
            task, advance=frames, fps=state["frames"] / elapsed, rps=state["rois"] / elapsed
        )
        if result.error:
            progress.console.print(f"[red]failed:[/] {escape(result.error.splitlines()[0])}")
        elif result.warning:
            progress.console.print(
                f"[yellow]warning:[/] chunk {escape(result.chunk.name)}: {escape(result.warning)}"
            )

    with progress:
        report = run_batch(
            settings, retry_failed=retry_failed, on_plan=on_plan, on_progress=on_progress
        )
    print_summary(Project(settings.project), report, console)
    return report


def print_summary(project: Project, report: BatchReport, console: Console | None = None) -> None:
    console = console or _console()
    rate = report.frames / report.seconds if report.seconds else 0.0
    console.print(
        f"[bold green]done:[/] {report.chunks_done} chunks ({report.chunks_skipped} already done), "
        f"{report.frames} frames, {report.rois} ROIs in {report.seconds:.1f} s "
        f"({rate:.1f} frames/s)"
    )
    totals: dict[str, int] = {}
    for record in project.done_records():
        for name, count in record.get("counts", {}).items():
            totals[name] = totals.get(name, 0) + count
    if totals:
        # top classes, however unsure: the per-class thresholds for 95 % precision are in
        # classification/*.csv (thresholded_class), where most specks stay unclassified
        table = Table(title="ROIs per top class (before thresholds: see thresholded_class)")
        table.add_column("class")
        table.add_column("ROIs", justify="right")
        for name, count in sorted(totals.items(), key=lambda kv: -kv[1]):
            table.add_row(escape(name), str(count))
        console.print(table)
    for message in report.left_alone:
        console.print(f"[yellow]warning:[/] {escape(message)}")
    for message in report.failures:
        console.print(f"[bold red]failed:[/] {escape(message)}")
    console.print(
        f"outputs in {escape(project.root)}/ (segmentation/ measurements/ classification/ "
        f"ecotaxa/ summary/), log in {escape(project.log_file)}"
    )


DEMO_START = datetime(2026, 1, 1, 12, 0, 0)
DEMO_FPS = 13.7


def run_demo(folder: Path, *, videos: int, frames: int, workers: int | None) -> BatchReport:
    """Make synthetic ISIIS videos (once), run the batch on them and score against the truth."""
    project = Project(folder)
    project.raw.mkdir(parents=True, exist_ok=True)
    for i in range(videos):
        start = DEMO_START + timedelta(seconds=i * frames / DEMO_FPS)
        path = project.raw / f"{format_timestamp(start)}.avi"
        if not path.exists():
            _console().print(f"generating {escape(path)} ({frames} frames with ground truth)")
            write_synth_video(path, frames, seed=i, fps=DEMO_FPS)
    # the demo scores classes against the generator's truth: it needs the generator's model
    from plankline.model.infer import SYNTHETIC_MODEL_DIR

    settings = BatchSettings(
        project=folder, model=SYNTHETIC_MODEL_DIR, **({"workers": workers} if workers else {})
    )
    report = run_with_progress(settings)
    print_demo_scores(project, SegmentParams().min_area_px)
    return report


def print_demo_scores(project: Project, min_area_px: int) -> None:
    """Detection recall/precision, size errors and class accuracy against the synthetic truth."""
    table = Table(title="Against the ground truth (errors: median over objects >= 200 px)")
    for column in (
        "video",
        "truth",
        "ROIs",
        "recall",
        "precision",
        "area err",
        "ESD err",
        "class acc",
        "acc >=200px",
    ):
        table.add_column(column, justify="right")
    for video in project.videos():
        truth_file = truth_path(video)
        if not truth_file.is_file():
            continue
        truth = GroundTruth.read_csv(truth_file)
        found = read_project_table(project, video.name)
        if not found:
            continue
        score = score_detections(
            np.stack([truth.line, truth.column, truth.height, truth.width], axis=1),
            truth.area_px,
            np.stack(
                [found["line"], found["column"], found["bbox_height"], found["bbox_width"]], axis=1
            ),
            found["area"],
            min_area_px=min_area_px,
        )
        accuracy = accuracy_big = "-"
        if "top_class" in found and len(score.truth_index):
            # objects of a few pixels are blobs whatever their class: report both
            right = truth.kind[score.truth_index] == found["top_class"][score.detected_index]
            big = truth.area_px[score.truth_index] >= 200
            accuracy = f"{right.mean():.3f}"
            accuracy_big = f"{right[big].mean():.3f}" if big.any() else "-"
        table.add_row(
            video.stem,
            str(score.n_truth),
            str(score.n_detected),
            f"{score.recall:.3f}",
            f"{score.precision:.3f}",
            f"{score.area_error:.1%}",
            f"{score.esd_error:.1%}",
            accuracy,
            accuracy_big,
        )
    _console().print(table)


def read_project_table(project: Project, video_name: str) -> dict[str, np.ndarray]:
    """Measurements (and top class, when classified) of every ROI of one video."""
    parts: list[dict[str, np.ndarray]] = []
    for record in project.done_records():
        if Path(record["video"]).name != video_name:
            continue
        paths = project.outputs(record["name"])
        table = read_csv(paths["measurements"], dtypes={"image": str})
        if len(table.get("image", ())) == 0:
            continue
        if paths["classification"].is_file():
            classes = read_csv(paths["classification"], dtypes={"image": str})
            table["top_class"] = classes["top_class"]
        parts.append(table)
    if not parts:
        return {}
    keys = set.intersection(*(set(p) for p in parts))
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}
