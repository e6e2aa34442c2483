"""The ``plankline`` command line: every command is a few lines calling the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import rich
import typer

from plankline.config import BatchSettings

app = typer.Typer(
    name="plankline",
    help="Plankton video in; ROIs, measurements and classes out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --- batch pipeline commands (run, demo, synth) -----------------------------


def _fail(message: str, debug: bool) -> NoReturn:
    """One clear line for the user; the traceback only with --debug."""
    if debug:
        raise
    rich.print(f"[bold red]error:[/] {message}", file=sys.stderr)
    raise typer.Exit(2)


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set expects KEY=VALUE, got {pair!r}")
        values[key.strip().replace("-", "_")] = value.strip()
    return values


@app.command(
    epilog="Example: plankline run cruise42/ -c cgrb.ini --workers 16 --set pixel_size_um=68",
)
def run(
    project: Annotated[Path, typer.Argument(help="Project folder holding raw/.")],
    config: Annotated[Path | None, typer.Option("-c", "--config", help=".ini file, section [plankline].")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    chunk_frames: Annotated[int | None, typer.Option(help="Frames per chunk.")] = None,
    model: Annotated[Path | None, typer.Option(help="Model folder (default: shipped model).")] = None,
    classify: Annotated[bool | None, typer.Option("--classify/--no-classify")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any setting, KEY=VALUE.")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Retry chunks that failed before.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Segment, measure and classify every video in PROJECT/raw/; resumes where it stopped."""
    from plankline.batch.console import run_with_progress

    options = {"project": project, "config": config, "workers": workers,
               "chunk_frames": chunk_frames, "model": model, "classify": classify}
    try:
        settings = BatchSettings(**{k: v for k, v in options.items() if v is not None},
                                 **_parse_sets(set_ or []))
        report = run_with_progress(settings, retry_failed=retry_failed)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error), debug)
    if report.failures:
        raise typer.Exit(1)


@app.command(epilog="Example: plankline demo demo/ --videos 2 --frames 40")
def demo(
    folder: Annotated[Path, typer.Argument(help="Demo project folder (created).")] = Path("demo"),
    videos: Annotated[int, typer.Option(help="Synthetic videos to generate.")] = 2,
    frames: Annotated[int, typer.Option(help="Frames (2048x2048) per video.")] = 40,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Generate ISIIS-like videos with ground truth, run the whole batch on them, score it."""
    from plankline.batch.console import run_demo

    try:
        run_demo(folder, videos=videos, frames=frames, workers=workers)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error), debug)


@app.command(epilog="Example: plankline synth raw/20260101120000.000.avi --frames 100")
def synth(
    path: Annotated[Path, typer.Argument(help="Output .avi (ground truth goes beside it).")],
    frames: Annotated[int, typer.Option(help="Frames to write.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    codec: Annotated[str, typer.Option(help="rawvideo, ffv1 or mjpeg.")] = "rawvideo",
) -> None:
    """Write a synthetic ISIIS-like line-scan video with its ground-truth CSV."""
    from plankline.imaging.synth import write_synth_video

    path.parent.mkdir(parents=True, exist_ok=True)
    truth = write_synth_video(path, frames, seed=seed, codec=codec)
    rich.print(f"wrote {path} ({frames} frames, {len(truth)} organisms)")


# --- classifier commands (train, evaluate, export, classify) -----------------

# --- outputs commands (pull-images) ------------------------------------------


@app.command(
    "pull-images",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
    epilog=(
        "Example (seed syntax): plankline pull-images -p .2 -d excsvs/ -o out/ -r extars/ "
        "-t protist fish. Output: OUT/<class>/<image>.png. Bare words after the options "
        "are more taxa, so '-t protist fish' works like '-t protist -t fish'. Long options "
        "accept '_' or '-' (--best_taxon, --best-taxon)."
    ),
)
def pull_images_cmd(
    ctx: typer.Context,
    taxon: Annotated[
        list[str] | None,
        typer.Option("-t", "--taxon", help="Taxon search string(s); substring match unless -s."),
    ] = None,
    probability_taxon: Annotated[
        float | None,
        typer.Option(
            "-p",
            "--probability-taxon",
            "--probability_taxon",
            help="Extract images whose probability for a matched class is above P (0..1).",
        ),
    ] = None,
    best_taxon: Annotated[
        bool,
        typer.Option(
            "-b",
            "--best-taxon",
            "--best_taxon",
            help="Extract images only when a matched class is their top class.",
        ),
    ] = False,
    input_drive: Annotated[
        Path | None,
        typer.Option("-d", "--input-drive", "--input_drive", help="Folder of classification CSVs."),
    ] = None,
    input_csv: Annotated[
        Path | None,
        typer.Option("-c", "--input-csv", "--input_csv", help="One classification CSV."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Output folder; must be empty or not exist."),
    ] = None,
    raw_tars: Annotated[
        Path | None,
        typer.Option(
            "-r", "--raw-tars", "--raw_tars", help="Folder of ROI tars (<chunk>.tar[.gz])."
        ),
    ] = None,
    min_images: Annotated[
        int,
        typer.Option(
            "-m",
            "--min-images",
            "--min_images",
            help="Skip a tar when fewer images are wanted from it.",
        ),
    ] = 0,
    different_columns: Annotated[
        bool,
        typer.Option(
            "-dc",
            "--dc",
            "--different-columns",
            "--different_columns",
            help="Allow class columns to differ between CSVs.",
        ),
    ] = False,
    strict_subclasses: Annotated[
        bool,
        typer.Option(
            "-s",
            "--strict-subclasses",
            "--strict_subclasses",
            help="Match class names exactly, not as substrings.",
        ),
    ] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Copy the ROIs of chosen taxa out of the chunk tars, as the OSU pull_images.py."""
    import warnings

    from plankline.outputs.pull import PullError, pull_images

    extra = [a for a in ctx.args if a.startswith("-")]
    if extra:
        raise typer.BadParameter(f"unknown option(s) {extra}")
    taxa = [*(taxon or []), *ctx.args]
    if output is None or raw_tars is None:
        raise typer.BadParameter("-o/--output and -r/--raw-tars are required")

    def show(message: Warning | str, *_args: object, **_kwargs: object) -> None:
        rich.print(f"[yellow]warning:[/] {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            report = pull_images(
                taxa=taxa,
                output=output,
                raw_tars=raw_tars,
                input_drive=input_drive,
                input_csv=input_csv,
                threshold=probability_taxon,
                best=best_taxon,
                strict=strict_subclasses,
                min_images=min_images,
                different_columns=different_columns,
                log=typer.echo,
            )
    except (PullError, FileNotFoundError) as error:
        rich.print(f"[bold red]error:[/] {error}", file=sys.stderr)
        if debug:
            raise
        raise typer.Exit(2) from None
    typer.echo(f"Wrote {report.n_written} images into {output}")


@app.command(
    "check-ecotaxa",
    epilog="Example: plankline check-ecotaxa cruise42/ecotaxa/*.zip",
)
def check_ecotaxa(
    zips: Annotated[list[Path], typer.Argument(help="EcoTaxa export zip(s) to check.")],
) -> None:
    """Check EcoTaxa zips against the importer's rules before uploading; exit 1 on problems."""
    from plankline.outputs.ecotaxa import validate_ecotaxa_zip

    bad = 0
    for path in zips:
        problems = validate_ecotaxa_zip(path)
        bad += bool(problems)
        typer.echo(f"{path}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems[:50]:
            typer.echo(f"  {problem}")
    if bad:
        raise typer.Exit(1)


# --- stream commands (stack) --------------------------------------------------

stack_app = typer.Typer(
    help="Local streaming stack: real Tansu (Kafka), SeaweedFS (S3) and Triton on 127.0.0.1.",
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")

_STATE_DIR_OPTION = typer.Option("--state-dir", help="Logs, data, pidfiles and env of the stack.")


@stack_app.command(
    "up",
    epilog="Example: plankline stack up --triton models/ --model-config-name cpu_python; "
    "source .stack/env",
)
def stack_up_command(
    state_dir: Annotated[Path, _STATE_DIR_OPTION] = Path(".stack"),
    tansu_storage: Annotated[
        str, typer.Option(help="memory, or s3 (survives restarts).")
    ] = "memory",
    triton: Annotated[Path | None, typer.Option(help="Triton model repository to serve.")] = None,
    model_config_name: Annotated[str | None, typer.Option(help="e.g. cpu_python.")] = None,
    partitions: Annotated[int, typer.Option(help="Partitions per plankline topic.")] = 4,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Start the servers on free ports, create bucket and topics, write STATE_DIR/env."""
    from plankline.stream.stack import ServerError, stack_up

    try:
        handles = stack_up(state_dir, tansu_storage=tansu_storage, partitions=partitions,
                           triton_model_repository=triton, model_config_name=model_config_name)
    except (ServerError, ValueError, FileNotFoundError) as error:
        _fail(str(error), debug)
    for name, handle in handles.items():
        rich.print(f"[green]up[/] {name:10} pid {handle.pid:<8} {handle.endpoint:22} "
                   f"ready in {handle.extra.get('ready_s', '?')} s  log {handle.log_path}")
    rich.print(f"point services at it: [bold]source {state_dir / 'env'}[/]")


@stack_app.command("down", epilog="Example: plankline stack down")
def stack_down_command(
    state_dir: Annotated[Path, _STATE_DIR_OPTION] = Path(".stack"),
) -> None:
    """Stop exactly the server PIDs recorded in STATE_DIR (SIGTERM, then SIGKILL)."""
    from plankline.stream.stack import stop_recorded

    results = stop_recorded(state_dir)
    if not results:
        rich.print(f"no stack recorded in {state_dir}")
    for name, was_running in results.items():
        rich.print(f"{name:10} {'stopped' if was_running else 'was not running'}")


@stack_app.command("status", epilog="Example: plankline stack status")
def stack_status_command(
    state_dir: Annotated[Path, _STATE_DIR_OPTION] = Path(".stack"),
) -> None:
    """Show the recorded servers, whether each still runs, and their endpoints; exit 1 if down."""
    from plankline.stream.stack import read_state

    handles = read_state(state_dir)
    if not handles:
        rich.print(f"no stack recorded in {state_dir}")
        raise typer.Exit(1)
    down = 0
    for name, handle in handles.items():
        alive = handle.alive()
        down += not alive
        ports = " ".join(f"{k}={v}" for k, v in handle.ports.items())
        state = "[green]running[/]" if alive else "[red]not running[/]"
        rich.print(f"{name:10} {state} pid {handle.pid:<8} {handle.endpoint:22} {ports}")
    if down:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
