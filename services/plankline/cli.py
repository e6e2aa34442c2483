"""The ``plankline`` command line: every command is a few lines calling the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from plankline.defaults import TRAINING
from plankline.terminal import echo, escape

app = typer.Typer(
    name="plankline",
    help="Plankton video in; ROIs, measurements and classes out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # usage errors in a rich panel wrap at the panel's width; in a log or pipe, click's
    # plain one-line "Error: ..." instead (help on a terminal stays rich)
    rich_markup_mode="rich" if sys.stderr.isatty() else None,
)


@app.callback()
def _every_command() -> None:
    # Python warnings (a model's polarity warning, a library's) as one line each, as the
    # commands print their own
    from plankline.terminal import plain_warnings

    plain_warnings()


# --- batch pipeline commands (run, demo, synth) -----------------------------


def _fail(message: str, debug: bool) -> NoReturn:
    """One clear line for the user; the traceback only with --debug."""
    if debug:
        raise
    typer.secho(f"error: {message}", fg="red", err=True)
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
    config: Annotated[
        Path | None, typer.Option("-c", "--config", help=".ini file, section [plankline].")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    chunk_frames: Annotated[int | None, typer.Option(help="Frames per chunk.")] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model folder (default: shipped model).")
    ] = None,
    classify: Annotated[bool | None, typer.Option("--classify/--no-classify")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any setting, KEY=VALUE.")] = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            help="Retry chunks that failed before, and those done with a warning (an object "
            "cut by unreadable data after the chunk)."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Segment, measure and classify every video in PROJECT/raw/; resumes where it stopped."""
    from plankline.batch.console import run_with_progress
    from plankline.batch.project import ProjectLockedError
    from plankline.config import BatchSettings

    options = {
        "project": project,
        "config": config,
        "workers": workers,
        "chunk_frames": chunk_frames,
        "model": model,
        "classify": classify,
    }
    try:
        settings = BatchSettings(
            **{k: v for k, v in options.items() if v is not None}, **_parse_sets(set_ or [])
        )
        report = run_with_progress(settings, retry_failed=retry_failed)
    except (ValueError, FileNotFoundError, ProjectLockedError) as error:
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
    from plankline.batch.project import ProjectLockedError

    try:
        run_demo(folder, videos=videos, frames=frames, workers=workers)
    except (ValueError, FileNotFoundError, ProjectLockedError) as error:
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
    echo(f"wrote {escape(path)} ({frames} frames, {len(truth)} organisms)")


# --- classifier commands (train, evaluate, export, classify) -----------------


@app.command(
    epilog=(
        "Example: plankline train library/ --out weights/ --start 0 --stop 100 --bs 32 "
        "--vsp 20. Resume: --start 100 --stop 120. Log: weights/train_log.csv."
    )
)
def train(
    library: Annotated[Path, typer.Argument(help="Folder per class of ROI images.")],
    out: Annotated[
        Path, typer.Option(help="Weights folder (epoch_NNNN.pt, train_log.csv).")
    ] = Path("weights"),
    start: Annotated[
        int, typer.Option(help="Resume from this epoch's weights (0: from scratch).")
    ] = 0,
    stop: Annotated[
        int, typer.Option(help="Last epoch to train (start == stop trains nothing).")
    ] = TRAINING.stop,
    bs: Annotated[int, typer.Option(help="Batch size.")] = 32,
    ilr: Annotated[float, typer.Option(help="Initial learning rate.")] = 2e-3,
    lrd: Annotated[
        float, typer.Option(help="Learning-rate decay: lr = ilr*exp(-lrd*epoch).")
    ] = TRAINING.lrd,
    vsp: Annotated[float, typer.Option(help="Validation percentage of each class.")] = 20.0,
    device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1 ...")] = "cpu",
    arch: Annotated[str, typer.Option(help="scnn (sparse-CNN) or resnet.")] = "scnn",
    canvas: Annotated[int, typer.Option(help="Input field side in px.")] = 64,
    fill: Annotated[
        int,
        typer.Option(help="Enlarge crops smaller than this many px to it (0: never enlarge)."),
    ] = TRAINING.fill,
    width: Annotated[int, typer.Option(help="Filters step: layer i has width*(i+1).")] = 6,
    stem: Annotated[
        str,
        typer.Option(help="sCNN first layer: stride (stride-2 conv) or pool (conv + max-pool)."),
    ] = "stride",
    class_min: Annotated[int, typer.Option(help="Drop classes with fewer images.")] = 2,
    balance: Annotated[str, typer.Option(help="sampling, weighting or none.")] = "sampling",
    optimizer: Annotated[str, typer.Option(help="adam or sgd.")] = "adam",
    seed: Annotated[int, typer.Option(help="Seed for split, sampling, augmentation.")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    min_epoch_images: Annotated[
        int, typer.Option(help="Least draws per epoch (repeats small libraries).")
    ] = 1024,
    shapes: Annotated[
        bool,
        typer.Option(
            help="Give the network the organism's measurements (size, shape, grey levels) "
            "beside the image; --no-shapes trains on the image alone."
        ),
    ] = True,
    aux_heads: Annotated[
        bool,
        typer.Option(help="A classifier per input branch beside the joint one (mean of the 3)."),
    ] = True,
    members: Annotated[
        int, typer.Option(help="Networks trained side by side, predictions averaged.")
    ] = 3,
    forest: Annotated[
        float,
        typer.Option(
            help="Weight in the prediction of a random forest on the same measurements, "
            "fitted once and exported inside model.onnx (0: the networks alone)."
        ),
    ] = TRAINING.forest,
    polarity: Annotated[
        str,
        typer.Option(
            help="auto (detect from the images), bright (dark organisms on a bright "
            "background: ISIIS, FlowCam) or dark (bright on black: UVP, dark-field)."
        ),
    ] = "auto",
    init: Annotated[
        str,
        typer.Option(
            help="Start the networks from this model folder's (an sCNN of the same width and "
            'layers; its classes may differ): "" starts from random weights.'
        ),
    ] = "",
    contrast: Annotated[
        float,
        typer.Option(
            help="For other cameras than the library's: half the views at 1-C to 1 times the "
            "organism's contrast (0: off; the shipped ISIIS model: 0.65)."
        ),
    ] = 0.0,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Train the classifier on a folder-per-class LIBRARY; weights saved every epoch."""
    import warnings
    from dataclasses import asdict

    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

    from plankline import terminal
    from plankline.model.data import Augment
    from plankline.model.train import TrainConfig
    from plankline.model.train import train as run_training

    cfg = TrainConfig(
        library=str(library),
        out=str(out),
        start=start,
        stop=stop,
        bs=bs,
        ilr=ilr,
        lrd=lrd,
        vsp=vsp,
        device=device,
        arch=arch,
        canvas=canvas,
        fill=fill,
        width=width,
        stem=stem,
        class_min=class_min,
        balance=balance,
        optimizer=optimizer,
        seed=seed,
        workers=workers,
        min_epoch_images=min_epoch_images,
        shapes=shapes,
        aux_heads=aux_heads,
        members=members,
        forest=forest,
        polarity=polarity,
        init=init,
        augment=asdict(Augment(contrast=contrast)),
    )
    echo(f"[bold]train[/] {escape(cfg)}")
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} img"),
                TimeRemainingColumn(),
                console=terminal.console(),  # epoch lines whole in logs
            ) as bar,
        ):
            warnings.simplefilter("always")
            state = {"epoch": start + 1}
            tasks: list[TaskID] = []  # the bar appears with the first batch, not before a
            # library that fails its checks

            def on_batch(done: int, total: int) -> None:
                if not tasks:
                    tasks.append(bar.add_task("train", total=None, epoch=state["epoch"]))
                bar.update(tasks[0], completed=done, total=total, epoch=state["epoch"])

            def on_epoch(st: object) -> None:
                bar.console.print(st.line())  # type: ignore[attr-defined]
                state["epoch"] = st.epoch + 1  # type: ignore[attr-defined]

            hist = run_training(cfg, on_epoch=on_epoch, on_batch=on_batch)
        for w in caught:
            echo(f"[yellow]warning:[/] {escape(w.message)}", err=True)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e), debug)
    if hist:
        from plankline.model.train import FOREST_FILE, checkpoint_path, load_checkpoint

        ck = load_checkpoint(checkpoint_path(out, hist[-1].epoch))
        echo(f"images read as {ck.get('polarity', 'bright')}-field (--polarity {polarity})")
        if forest:
            echo(f"random forest (weight {forest}) in {escape(out / FOREST_FILE)}")
    echo(f"trained {len(hist)} epoch(s); weights in {escape(out)}")


@app.command(
    epilog=(
        "Example: plankline evaluate weights/ --epoch 20 --out report/ --tta 8 "
        "--model-dir model/  (writes model/thresholds.json)"
    )
)
def evaluate(
    weights: Annotated[Path, typer.Argument(help="Weights folder from plankline train.")],
    epoch: Annotated[int | None, typer.Option(help="Epoch to evaluate (default: last).")] = None,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("report"),
    model_dir: Annotated[
        Path | None,
        typer.Option(help="Exported model folder: evaluate it (ONNX) and save thresholds into it."),
    ] = None,
    tta: Annotated[int, typer.Option(help="Test-time augmentation: 1-8 rotations/flips.")] = 1,
    target_precision: Annotated[float, typer.Option(help="Per-class threshold target.")] = 0.95,
    small_cnn: Annotated[
        bool,
        typer.Option(
            help="Also train the plain small-CNN baseline on the same split (minutes on a CPU)."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Score the validation split: F1, confusion, thresholds, beside RF and boosting baselines."""
    from plankline.model.evaluate import evaluate_checkpoint

    try:
        _result, report = evaluate_checkpoint(
            weights,
            epoch,
            out,
            model_dir=model_dir,
            tta=tta,
            target_precision=target_precision,
            small_cnn=small_cnn,
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e), debug)
    echo(escape(report.read_text()))
    echo(f"report: {escape(report)}")


@app.command(
    "export",
    epilog=(
        "Example: plankline export weights/ --epoch 20 --out model/ --triton triton_repo/ "
        "--name plankline_classifier"
    ),
)
def export_cmd(
    weights: Annotated[Path, typer.Argument(help="Weights folder from plankline train.")],
    epoch: Annotated[int | None, typer.Option(help="Epoch (default: last).")] = None,
    out: Annotated[Path, typer.Option(help="Model folder to write.")] = Path("model"),
    triton: Annotated[
        Path | None, typer.Option(help="Also write a Triton model repository.")
    ] = None,
    name: Annotated[str, typer.Option(help="Triton model name.")] = "plankline_classifier",
    max_batch_size: Annotated[int, typer.Option(help="Triton max_batch_size.")] = 256,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17).")] = 17,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Export a checkpoint to ONNX (parity-checked) and optionally a Triton repository."""
    from plankline.model.export import export_model, write_triton_repository
    from plankline.model.train import checkpoint_path, latest_epoch

    try:
        ep = epoch if epoch is not None else latest_epoch(weights)
        meta = export_model(checkpoint_path(weights, ep), out, opset=opset)
        gate = meta.get("min_object_px")
        echo(
            f"exported epoch {ep} to {escape(out)}/model.onnx "
            f"(ONNX Runtime vs torch max abs diff {meta['onnx_torch_max_abs_diff']:.1e})"
            + (f"; size gate {gate} px (98 % of its training objects)" if gate else "")
        )
        if triton is not None:
            root = write_triton_repository(
                out, triton, model_name=name, max_batch_size=max_batch_size
            )
            echo(f"Triton model repository: {escape(root)}")
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(str(e), debug)


@app.command(
    epilog=(
        "Examples: plankline classify -i project/segmentation/ -o project/classification/  "
        "(one CSV per chunk tar);  plankline classify -i rois/ -o rois.csv  (a folder of images)"
    )
)
def classify(
    input_: Annotated[
        Path,
        typer.Option("-i", "--input", help="Folder of ROI tars, a tar, or a folder of images."),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV folder (tars) or CSV file.")],
    model: Annotated[
        Path | None, typer.Option(help="Model folder (default: shipped model).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="ROIs per inference batch.")] = 256,
    workers: Annotated[
        int,
        typer.Option(help="Processes, one ONNX Runtime thread each (0: one per core)."),
    ] = 0,
    cpu: Annotated[bool, typer.Option(help="Force the CPU provider.")] = False,
    min_px: Annotated[
        int | None,
        typer.Option(
            help="Size gate of plankline run (classify_min_px) for a project's chunk tars: with "
            "measurements/<chunk>.csv beside segmentation/, ROIs whose longer bbox side is "
            "under it are below_model_size, as run classes them (default: the model's own, "
            "meta.json min_object_px; 0: off)."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Classify ROIs with ONNX Runtime into the seed's CSV (image,<classes>,...,top_class...).

    A corrupt tar is reported and skipped (exit code 1 at the end); the other chunks' CSVs
    are written. Unreadable or empty images are skipped with a warning. A project's chunk
    tars (measurements/ beside segmentation/, e.g. after run --no-classify) also get the
    predicted classes in their EcoTaxa exports (ecotaxa/<chunk>.zip), as run writes them.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from plankline import terminal
    from plankline.batch import classify as job_
    from plankline.model.data import list_images
    from plankline.model.infer import polarity_warning

    err = terminal.console(stderr=True)  # progress, warnings and failures: whole lines in logs

    def warn(messages: list[str]) -> None:
        for m in messages:
            err.print(f"[yellow]warning:[/] {escape(m)}")

    try:
        if batch_size < 1 or workers < 0 or (min_px or 0) < 0:
            raise ValueError(
                f"--batch-size must be >= 1, --workers and --min-px >= 0, got {batch_size}, "
                f"{workers} and {min_px}"
            )
        job = job_.ClassifyJob(model, cpu, batch_size, min_px=min_px)
        job_.load(job)  # in the parent too: a bad model fails here, in one line
        if input_.is_dir():
            tars = sorted(p for p in input_.iterdir() if p.name.endswith((".tar", ".tar.gz")))
        elif input_.name.endswith((".tar", ".tar.gz")):
            tars = [input_]
        else:
            raise FileNotFoundError(f"input {input_} is neither a folder nor a ROI tar")
        files = [] if tars else list_images(input_)
        if not tars and not files:
            raise FileNotFoundError(f"no ROI tars or images under {input_}")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
        ) as bar:
            if tars:
                task = bar.add_task("chunks", total=len(tars))

                def tar_done(res: job_.TarResult) -> None:
                    warn(res.warnings)
                    if res.error:
                        err.print(f"[red]failed:[/] {escape(res.error)}")
                    bar.advance(task)

                results = job_.classify_tars(tars, output, job, workers, tar_done)
                ok = [r for r in results if not r.error]
                n = sum(r.rois for r in ok)
                mismatched = sum(r.polarity_mismatched for r in ok)
                failed = len(tars) - len(ok)
                echo(
                    f"classified {n} ROIs from {len(ok)} of {len(tars)} tar(s) into "
                    f"{escape(output)}/"
                )
            else:
                if output.is_dir() or output.suffix.lower() != ".csv":
                    output = output / f"{input_.resolve().name}.csv"
                task = bar.add_task("ROIs", total=len(files))

                mismatches: list[int] = []

                def shard_done(done: int, pred: job_.Predictions) -> None:
                    warn(pred.warnings)
                    mismatches.append(pred.polarity_mismatched)
                    bar.advance(task, done)

                n = job_.classify_folder(files, output, job, workers, shard_done)
                mismatched, failed = sum(mismatches), 0
                echo(f"classified {n} of {len(files)} images into {escape(output)}")
        # workers warn once each, at their first such batch: the total here, on the same rule
        if total := polarity_warning(mismatched, n, job_.load(job).polarity):
            warn([total])
        if failed:
            raise typer.Exit(1)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e), debug)


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
        echo(f"[yellow]warning:[/] {escape(message)}", err=True)

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
        echo(f"[bold red]error:[/] {escape(error)}", err=True)
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
    epilog="Example: plankline stack up; plankline submit raw/*.avi; plankline results out/",
)
def stack_up_command(
    state_dir: Annotated[Path, _STATE_DIR_OPTION] = Path(".stack"),
    tansu_storage: Annotated[
        str, typer.Option(help="memory, or s3 (survives restarts).")
    ] = "memory",
    triton: Annotated[
        Path | None,
        typer.Option(help="Triton model repository to serve (default: the shipped model)."),
    ] = None,
    model_config_name: Annotated[
        str | None, typer.Option(help="Triton config under configs/ (CPU: cpu_python).")
    ] = "cpu_python",
    with_triton: Annotated[bool, typer.Option("--with-triton/--no-triton")] = True,
    services: Annotated[
        bool, typer.Option("--services/--no-services", help="Also start one of each service.")
    ] = True,
    inference: Annotated[
        str, typer.Option(help="Classifier backend: triton or onnxruntime.")
    ] = "triton",
    segmenters: Annotated[int, typer.Option(help="Segmenter replicas.")] = 1,
    partitions: Annotated[int, typer.Option(help="Partitions per plankline topic.")] = 4,
    gateway: Annotated[
        bool, typer.Option("--gateway/--no-gateway", help="Also start the gRPC gateway.")
    ] = True,
    gateway_port: Annotated[int, typer.Option(help="Gateway port (0: a free one).")] = 50051,
    gateway_unauthenticated: Annotated[
        bool,
        typer.Option(help="Let the gateway serve calls without a token (local use only)."),
    ] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Start Tansu, SeaweedFS, Triton, the services and the gRPC gateway on 127.0.0.1;
    write STATE_DIR/env (it also exports the gateway's PLANKLINE_ENDPOINT and the local
    lab's PLANKLINE_TOKEN for `plankline remote`)."""
    from plankline.stream.launch import up
    from plankline.stream.stack import ServerError

    try:
        handles = up(
            state_dir,
            tansu_storage=tansu_storage,
            partitions=partitions,
            triton=with_triton,
            model_repository=triton,
            model_config_name=model_config_name,
            services=services,
            inference=inference,
            replicas={"segmenter": segmenters},
            gateway=gateway,
            gateway_port=gateway_port,
            gateway_unauthenticated=gateway_unauthenticated,
        )
    except (ServerError, ValueError, FileNotFoundError) as error:
        _fail(str(error), debug)
    for name, handle in handles.items():
        echo(
            f"[green]up[/] {name:12} pid {handle.pid:<8} {handle.endpoint:24} "
            f"ready in {handle.extra.get('ready_s', '?')} s  log {escape(handle.log_path)}"
        )
    echo(f"point other tools at it: [bold]source {escape(state_dir / 'env')}[/]")
    if "gateway" in handles:
        echo(
            f"other labs: gRPC gateway at {handles['gateway'].endpoint}; after `source` the "
            "env, `plankline remote models` uses the local lab's token"
        )


@stack_app.command("down", epilog="Example: plankline stack down")
def stack_down_command(
    state_dir: Annotated[Path, _STATE_DIR_OPTION] = Path(".stack"),
) -> None:
    """Stop exactly the server PIDs recorded in STATE_DIR (SIGTERM, then SIGKILL)."""
    from plankline.stream.stack import stop_recorded

    results = stop_recorded(state_dir)
    if not results:
        echo(f"no stack recorded in {escape(state_dir)}")
    for name, was_running in results.items():
        echo(f"{name:10} {'stopped' if was_running else 'was not running'}")


@stack_app.command("status", epilog="Example: plankline stack status")
def stack_status_command(
    state_dir: Annotated[Path, _STATE_DIR_OPTION] = Path(".stack"),
) -> None:
    """Show the recorded servers, whether each still runs, its CPU seconds and endpoints, and
    per-stage counts, latency and lag; exit 1 if one is down."""
    from plankline.stream.stack import read_state

    handles = read_state(state_dir)
    if not handles:
        echo(f"no stack recorded in {escape(state_dir)}")
        raise typer.Exit(1)
    down = 0
    for name, handle in handles.items():
        alive = handle.alive()
        down += not alive
        ports = " ".join(f"{k}={v}" for k, v in handle.ports.items())
        state = "[green]running[/]" if alive else "[red]not running[/]"
        cpu = handle.cpu_s()
        used = f"cpu {cpu:8.1f} s" if cpu is not None else " " * 14
        echo(f"{name:12} {state} pid {handle.pid:<8} {used} {handle.endpoint:24} {ports}")
    from plankline.stream.launch import stage_stats

    stages = stage_stats(state_dir)
    if stages:
        echo("stage         ok  dead-letter  errors  mean latency  lag (committed)")
        for row in stages:
            latency = row["mean_latency_s"]
            shown = f"{latency * 1000:9.1f} ms" if latency is not None else "        -   "
            echo(
                f"{row['name']:12} {row['ok']:4} {row['dead_letter']:12} {row['errors']:7}"
                f"  {shown}  {row['lag']:6}" + ("" if row["up"] else "  (no metrics)")
            )
    if down:
        raise typer.Exit(1)


import dataclasses  # noqa: E402 (stream section: remote's connection options)
import typing  # noqa: E402 (stream section: type names for _stream_store only)

if typing.TYPE_CHECKING:
    from plankline.stream.settings import RunnerSettings
    from plankline.stream.store import S3Store


def _stream_store(state_dir: Path) -> tuple[RunnerSettings, S3Store]:
    """Kafka/S3 settings from PLANKLINE_* or, where unset, the stack in STATE_DIR."""
    from plankline.stream.launch import use_stack_env
    from plankline.stream.settings import RunnerSettings
    from plankline.stream.store import S3Store

    use_stack_env(state_dir)
    settings = RunnerSettings()
    return settings, S3Store.from_settings(settings)


@app.command(
    epilog="Example: plankline submit raw/*.avi --job cruise42 --chunk-frames 100",
)
def submit(
    videos: Annotated[
        list[str],  # text, not Path: a Path would turn s3://bucket/key into s3:/bucket/key
        typer.Argument(help="Videos or frame folders, or s3://bucket/key of stored videos."),
    ],
    job: Annotated[str, typer.Option(help="Job name ([A-Za-z0-9._-]).")] = "default",
    chunk_frames: Annotated[int | None, typer.Option(help="Frames per chunk.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any setting, KEY=VALUE.")] = None,
    state_dir: Annotated[Path, _STATE_DIR_OPTION] = Path(".stack"),
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Send videos to the streaming services (the stack of STATE_DIR, or PLANKLINE_* env)."""
    from plankline.config import PipelineSettings
    from plankline.stream.ingest import submit as ingest

    try:
        runner, store = _stream_store(state_dir)
        options = {"chunk_frames": chunk_frames} if chunk_frames else {}
        settings = PipelineSettings(**options, **_parse_sets(set_ or []))
        report = ingest(videos, job, settings, store, runner.bootstrap_servers)
    except (ValueError, FileNotFoundError, KeyError, ConnectionError) as error:
        _fail(str(error), debug)
    echo(
        f"job {job}: {report.chunks} chunks ({report.frames} frames) submitted, "
        f"{report.skipped} already done"
    )
    for failure in report.failures:
        typer.secho(f"  not submitted: {failure}", fg="red")
    if report.failures:
        raise typer.Exit(1)


@app.command(epilog="Example: plankline results --job cruise42 cruise42-out/ --wait")
def results(
    out_dir: Annotated[Path, typer.Argument(help="Folder for segmentation/ measurements/ ...")],
    job: Annotated[str, typer.Option(help="Job name.")] = "default",
    wait: Annotated[bool, typer.Option(help="Wait until every chunk is done.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 3600.0,
    state_dir: Annotated[Path, _STATE_DIR_OPTION] = Path(".stack"),
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Download a job's final outputs in the batch layout and print its status."""
    from plankline.stream.results import download_results, job_status, wait_for_job

    try:
        _, store = _stream_store(state_dir)
        status = wait_for_job(store, job, timeout) if wait else job_status(store, job)
        files = download_results(store, job, out_dir, status)
    except (ValueError, KeyError, ConnectionError) as error:
        _fail(str(error), debug)
    echo(
        f"job {job}: {status.done}/{status.planned} chunks done, {status.pending} pending, "
        f"{len(status.failed)} failed, {status.rois} ROIs; {len(files)} files in {out_dir}"
        + (" (cancelled)" if status.cancelled else "")
    )
    for name, error in status.failed.items():
        typer.secho(f"  failed {name}: {error.splitlines()[0]}", fg="red")
    if status.failed or not status.finished or status.cancelled:
        raise typer.Exit(1)


@app.command(epilog="Example: plankline cancel --job cruise42")
def cancel(
    job: Annotated[str, typer.Option(help="Job name.")] = "default",
    state_dir: Annotated[Path, _STATE_DIR_OPTION] = Path(".stack"),
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Cancel a submitted job: every service skips its chunks not yet processed."""
    from plankline.stream.jobs import cancel_job
    from plankline.stream.results import job_status

    try:
        _, store = _stream_store(state_dir)
        status = job_status(store, job)  # KeyError: never submitted
        cancel_job(store, job, by="cli")
    except (ValueError, KeyError, ConnectionError) as error:
        _fail(str(error), debug)
    echo(f"job {job}: cancelled, {status.done}/{status.planned} chunks done")


# --- remote commands (a Plankline gateway over gRPC) --------------------------

remote_app = typer.Typer(
    help="Use a remote Plankline deployment through its gRPC gateway (token, CA, endpoint).",
    no_args_is_help=True,
)
app.add_typer(remote_app, name="remote")


@dataclasses.dataclass(frozen=True)
class _Connection:
    """How ``plankline remote`` reaches the gateway (the group's options, given once)."""

    endpoint: str
    token: str | None
    ca: Path | None
    cert: Path | None
    key: Path | None
    debug: bool

    def client(self) -> typing.Any:
        from plankline.stream.client import PlanklineClient

        return PlanklineClient(
            self.endpoint, token=self.token, ca=self.ca, cert=self.cert, key=self.key
        )


@remote_app.callback(
    epilog="Example: PLANKLINE_TOKEN=... plankline remote --endpoint host:443 --ca ca.pem models"
)
def remote_options(
    ctx: typer.Context,
    endpoint: Annotated[
        str, typer.Option(envvar="PLANKLINE_ENDPOINT", help="Gateway host:port.")
    ] = "127.0.0.1:50051",
    token: Annotated[
        str | None,
        typer.Option(envvar="PLANKLINE_TOKEN", help="Your lab's bearer token.", show_default=False),
    ] = None,
    ca: Annotated[
        Path | None,
        typer.Option(envvar="PLANKLINE_CA", help="PEM CA of the gateway's certificate (TLS)."),
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option(envvar="PLANKLINE_CERT", help="PEM client certificate (mutual TLS)."),
    ] = None,
    key: Annotated[
        Path | None, typer.Option(envvar="PLANKLINE_KEY", help="PEM key of --cert.")
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Connection options of every remote command (or their PLANKLINE_* variables)."""
    ctx.obj = _Connection(endpoint, token or None, ca, cert, key, debug)


def _rpc_fail(error: typing.Any, debug: bool) -> NoReturn:
    code = getattr(error, "code", lambda: None)()
    details = getattr(error, "details", lambda: str(error))()
    _fail(f"{code.name if code else type(error).__name__}: {details}", debug)


@remote_app.command("models", epilog="Example: plankline remote --endpoint host:443 models")
def remote_models(ctx: typer.Context) -> None:
    """List the gateway's models: name, sha256, input size, polarity, classes."""
    remote: _Connection = ctx.obj
    import grpc

    try:
        with remote.client() as api:
            models = api.models()
    except grpc.RpcError as error:
        _rpc_fail(error, remote.debug)
    for m in models:
        echo(
            f"{escape(m.name)}{' (default)' if m.is_default else ''}  sha256 {m.sha256[:12]}  "
            f"{m.input_size} px  {m.polarity}  classes: {escape(', '.join(m.class_names))}"
        )


@remote_app.command(
    "classify", epilog="Example: plankline remote --endpoint host:443 classify rois/*.png"
)
def remote_classify(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="ROI image files.")],
    model: Annotated[str, typer.Option(help="Model name (default: the gateway's).")] = "",
    batch: Annotated[int, typer.Option(help="Images per request.")] = 256,
) -> None:
    """Print image,top_class,top_probability,thresholded_class (CSV) for each image."""
    remote: _Connection = ctx.obj
    import grpc

    print("image,top_class,top_probability,thresholded_class")
    try:
        with remote.client() as api:
            for start in range(0, len(images), max(batch, 1)):
                part = images[start : start + max(batch, 1)]
                answer = api.classify([(p.name, p.read_bytes()) for p in part], model=model)
                for p in answer.predictions:
                    print(f"{p.id},{p.top_class},{p.top_probability:.6f},{p.thresholded_class}")
    except grpc.RpcError as error:
        _rpc_fail(error, remote.debug)
    except OSError as error:
        _fail(str(error), remote.debug)


@remote_app.command(
    "submit", epilog="Example: plankline remote submit raw/*.avi --job cruise42 --set fps=10"
)
def remote_submit(
    ctx: typer.Context,
    videos: Annotated[list[Path], typer.Argument(help="Video files to upload.")],
    job: Annotated[str, typer.Option(help="Job name ([A-Za-z0-9._-]).")] = "default",
    chunk_frames: Annotated[int | None, typer.Option(help="Frames per chunk.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any setting, KEY=VALUE.")] = None,
) -> None:
    """Upload videos (resuming any cut upload) and submit them as one job."""
    remote: _Connection = ctx.obj
    import grpc
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from plankline import terminal

    settings = _parse_sets(set_ or []) | (
        {"chunk_frames": str(chunk_frames)} if chunk_frames else {}
    )
    try:
        with (
            remote.client() as api,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=terminal.console(stderr=True),
            ) as bar,
        ):
            for video in videos:
                task = bar.add_task(video.name, total=video.stat().st_size)
                answer = api.submit_video(
                    video,
                    job=job,
                    settings=settings,
                    progress=lambda done, _total, task=task: bar.update(task, completed=done),
                )
                bar.update(task, completed=video.stat().st_size)
                echo(
                    f"job {answer.job_id}: {video.name} submitted, {answer.uploaded_bytes} bytes "
                    f"sent, {answer.chunks_planned} chunks planned"
                )
    except grpc.RpcError as error:
        _rpc_fail(error, remote.debug)
    except OSError as error:
        _fail(str(error), remote.debug)


@remote_app.command("watch", epilog="Example: plankline remote watch --job cruise42")
def remote_watch(
    ctx: typer.Context,
    job: Annotated[str, typer.Option(help="Job name.")] = "default",
    timeout: Annotated[float, typer.Option(help="Seconds to watch at most.")] = 3600.0,
) -> None:
    """Follow a job until it settles; exit 1 unless it succeeded."""
    remote: _Connection = ctx.obj
    import grpc
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from plankline import terminal
    from plankline.stream.v1 import api_pb2

    last = None
    try:
        with (
            remote.client() as api,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=terminal.console(stderr=True),
            ) as bar,
        ):
            task = bar.add_task(f"job {job}", total=None)
            for event in api.watch(job, timeout_s=timeout):
                last = event.job
                bar.update(task, total=last.chunks_planned, completed=last.chunks_done)
    except grpc.RpcError as error:
        _rpc_fail(error, remote.debug)
    if last is None:
        _fail(f"job {job}: no events", remote.debug)
    state = api_pb2.Job.State.Name(last.state)
    echo(
        f"job {job}: {state}, {last.chunks_done}/{last.chunks_planned} chunks done, "
        f"{last.chunks_failed} failed, {last.rois} ROIs"
    )
    for failure in last.failures:
        typer.secho(f"  failed {failure.chunk}: {failure.error.splitlines()[0]}", fg="red")
    if last.state != api_pb2.Job.SUCCEEDED:
        raise typer.Exit(1)


@remote_app.command("cancel", epilog="Example: plankline remote cancel --job cruise42")
def remote_cancel(
    ctx: typer.Context,
    job: Annotated[str, typer.Option(help="Job name.")] = "default",
) -> None:
    """Cancel a job: the services skip its chunks not yet processed (outputs so far stay)."""
    remote: _Connection = ctx.obj
    import grpc

    try:
        with remote.client() as api:
            answer = api.cancel(job)
    except grpc.RpcError as error:
        _rpc_fail(error, remote.debug)
    echo(f"job {job}: cancelled, {answer.chunks_done}/{answer.chunks_planned} chunks done")


@remote_app.command("results", epilog="Example: plankline remote results out/ --job cruise42")
def remote_results(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="Folder for segmentation/ measurements/ ...")],
    job: Annotated[str, typer.Option(help="Job name.")] = "default",
) -> None:
    """Download a job's files in the batch layout and print its counts per class."""
    remote: _Connection = ctx.obj
    import grpc

    try:
        with remote.client() as api:
            files = api.download_results(job, out_dir)
            counts = api.counts(job)
    except grpc.RpcError as error:
        _rpc_fail(error, remote.debug)
    echo(f"job {job}: {len(files)} files in {escape(out_dir)}")
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        echo(f"  {escape(name):24} {n}")


if __name__ == "__main__":
    app()
