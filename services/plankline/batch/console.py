"""What the person at the terminal sees: effective config, a progress bar with
frames/s, ROIs/s and ETA, and a closing summary. Nothing here computes results.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from plankline.batch.project import Project
from plankline.batch.run import BatchReport, ChunkResult, configure_logging, run_batch
from plankline.config import BatchSettings

console = Console(stderr=True)


def run_with_progress(settings: BatchSettings, *, retry_failed: bool = False) -> BatchReport:
    """Run the batch with a live progress bar, then print the summary."""
    configure_logging(settings.project)
    console.print("[bold]plankline[/] effective config:", settings.masked(), highlight=False)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} frames"),
        TextColumn("{task.fields[fps]:.1f} frames/s, {task.fields[rps]:.0f} ROIs/s"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False,
    )
    state = {"began": time.perf_counter(), "frames": 0, "rois": 0}
    task = progress.add_task("segment+measure+classify", total=None, fps=0.0, rps=0.0)

    def on_plan(total: int, already: int) -> None:
        progress.update(task, total=total, completed=already)
        state["began"] = time.perf_counter()

    def on_progress(result: ChunkResult, frames: int) -> None:
        state["frames"] += frames
        state["rois"] += result.rois
        elapsed = max(time.perf_counter() - state["began"], 1e-9)
        progress.update(task, advance=frames, fps=state["frames"] / elapsed,
                        rps=state["rois"] / elapsed)
        if result.error:
            progress.console.print(f"[red]failed:[/] {result.error.splitlines()[0]}")

    with progress:
        report = run_batch(settings, retry_failed=retry_failed, on_plan=on_plan,
                           on_progress=on_progress)
    print_summary(Project(settings.project), report)
    return report


def print_summary(project: Project, report: BatchReport) -> None:
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
        table = Table(title="ROIs per predicted class")
        table.add_column("class")
        table.add_column("ROIs", justify="right")
        for name, count in sorted(totals.items(), key=lambda kv: -kv[1]):
            table.add_row(name, str(count))
        console.print(table)
    for message in report.failures:
        console.print(f"[bold red]failed:[/] {message}")
    console.print(f"outputs in {project.root}/ (segmentation/ measurements/ classification/ "
                  f"ecotaxa/ summary/), log in {project.log_file}")


def run_demo(folder: Path, *, videos: int, frames: int, workers: int | None) -> BatchReport:
    """Make synthetic videos (once), run the batch on them and score against the truth."""
    raise NotImplementedError  # wired once the synthetic generator lands
