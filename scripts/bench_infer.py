"""Classifier throughput on this machine: ONNX Runtime vs torch eager, and training.

Inference figures INCLUDE preprocessing (``model_inputs``: gray, background
subtraction, placement on the canvas, measurements), i.e. ROIs in, probabilities out.
Two arrangements, each timing ONNX Runtime and torch eager on the same ROIs, alternating,
so the printed ratios are robust to noisy neighbours:

- one process with ``--threads`` intra-op threads (``Classifier.predict``);
- one worker process per core, one thread each, as ``plankline classify`` and the batch
  pipeline run (the preprocessing is single-threaded Python: one process leaves a core
  idle while it prepares each batch). Timed once the workers have loaded the model.

Wall-clock rates depend on what else the cores run; the CPU milliseconds per ROI (of one
single-thread process, preprocessing and network apart, and of the pool's workers) do
much less, and ``cores * 1000 / ms`` is the rate of idle cores: quote those on a shared
machine. ``--images DIR`` times real ROIs (e.g. ``../shared/data/ndsb-isiis``, the default
model's instrument) instead of synthetic ones.

Usage::

    python scripts/bench_infer.py [--threads 2] [--rois 4000] [--model DIR] [--repeats 3]
                                  [--images DIR] [--skip-train]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from plankline.batch.classify import SHARD_BATCHES, ClassifyJob, load, shards
from plankline.imaging.synth import make_roi_library
from plankline.model.data import list_images, model_inputs, read_image
from plankline.model.infer import Classifier
from plankline.model.train import TrainConfig, train


def _rois(n: int, images: Path | None = None) -> list[np.ndarray]:
    """``n`` synthetic ROIs, or ``n`` images of a folder (a seeded sample; repeated if fewer)."""
    if images is not None:
        files = list_images(images)
        if not files:
            raise SystemExit(f"{images}: no images")
        pick = np.random.default_rng(0).permutation(len(files))[:n]
        crops = [c for c in (read_image(files[i]) for i in pick) if c is not None]
    else:
        with tempfile.TemporaryDirectory() as d:
            make_roi_library(d, n_per_class=100, seed=11)
            crops = [read_image(p) for p in list_images(Path(d))]
    return [crops[i % len(crops)] for i in range(n)]


def _eager(clf: Classifier, threads: int) -> torch.nn.Module:
    """A torch twin of the ONNX model: same architecture and canvas (timing does not depend
    on the weight values; ORT/torch parity is checked by `plankline export` and the tests)."""
    from plankline.model.scnn import WithSoftmax
    from plankline.model.train import network

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return WithSoftmax(network(clf.meta["train_config"], len(clf.class_names))).eval()


def _unchecked_inputs(clf: Classifier, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The model's inputs without the per-crop polarity check (``clf.card.inputs`` has it)."""
    c = clf.card
    return model_inputs(
        crops, c.canvas, shapes=c.shapes, polarity=c.polarity, colour=c.colour, fill=c.fill
    )


@torch.no_grad()
def _eager_predict(
    net: torch.nn.Module, crops: list[np.ndarray], clf: Classifier, batch: int
) -> np.ndarray:
    out = []
    for i in range(0, len(crops), batch):
        x, s = _unchecked_inputs(clf, crops[i : i + batch])
        out.append(net(torch.from_numpy(x), torch.from_numpy(s)).numpy())
    return np.concatenate(out)


_worker: dict[str, Any] = {}  # "ort": Classifier, "torch": eager twin


def _worker_start(model: Path | None) -> None:
    """Pool initializer: both engines loaded, one thread each, before anything is timed."""
    _worker["ort"] = load(ClassifyJob(model, cpu=True, threads=1))
    _worker["torch"] = _eager(_worker["ort"], 1)


def _worker_predict(engine: str, batch: int, crops: list[np.ndarray]) -> tuple[int, float]:
    """In a worker process: classify ``crops`` with one thread; their number and the
    worker's CPU seconds for them."""
    t = time.process_time()
    clf = _worker["ort"]
    if engine == "ort":
        clf.predict(crops, batch_size=batch)
    else:
        _eager_predict(_worker["torch"], crops, clf, batch)
    return len(crops), time.process_time() - t


def _pool_rate(
    pool: ProcessPoolExecutor, engine: str, args: argparse.Namespace, pieces: list
) -> tuple[float, float]:
    """ROIs/s of the pool (wall clock) and its workers' CPU ms per ROI."""
    t = time.perf_counter()
    done = list(pool.map(partial(_worker_predict, engine, args.batch), pieces))
    wall = time.perf_counter() - t
    n = sum(k for k, _ in done)
    return n / wall, 1e3 * sum(c for _, c in done) / n


def cpu_time_per_roi(crops: list[np.ndarray], args: argparse.Namespace) -> None:
    """CPU milliseconds per ROI of one single-thread worker, preprocessing and network apart.

    Process CPU time does not count the time other programs hold the cores, so this is the
    figure to compare on a shared machine: ``1000 / ms`` is what one idle core sustains.
    """
    clf = Classifier.load(args.model, providers=["CPUExecutionProvider"], threads=1)
    ms = {"pre": [], "net": []}
    for _ in range(args.repeats):
        pre = net = 0.0
        for i in range(0, len(crops), args.batch):
            t = time.process_time()
            x, f, _ = clf.card.inputs(crops[i : i + args.batch])  # as Classifier.predict
            t1 = time.process_time()
            clf.run(x, f)  # in calls of clf.run_batch ROIs, as Classifier.predict
            pre += t1 - t
            net += time.process_time() - t1
        ms["pre"].append(1e3 * pre / len(crops))
        ms["net"].append(1e3 * net / len(crops))
    pre, net = min(ms["pre"]), min(ms["net"])
    print(
        f"CPU per ROI, 1 thread: preprocessing + polarity check {pre:.3f} ms, network "
        f"{net:.3f} ms, total {pre + net:.3f} ms: {1e3 / (pre + net):.0f} ROIs/s per idle core"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rois", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: shipped)")
    ap.add_argument(
        "--images",
        type=Path,
        default=None,
        help="time real ROIs: a folder of images, e.g. ../shared/data/ndsb-isiis (default: "
        "synthetic ROIs)",
    )
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    crops = _rois(args.rois, args.images)
    sizes = np.array([max(c.shape[:2]) for c in crops])
    what = "synthetic ROIs" if args.images is None else f"ROIs of {args.images}"
    print(
        f"{len(crops)} {what}, side median {np.median(sizes):.0f} px, "
        f"max {sizes.max()} px; {args.threads} threads; batch {args.batch}"
    )

    clf = Classifier.load(args.model, providers=["CPUExecutionProvider"], threads=args.threads)
    eager = _eager(clf, args.threads)

    def run_ort() -> np.ndarray:
        return clf.predict(crops, batch_size=args.batch)

    def run_torch() -> np.ndarray:
        return _eager_predict(eager, crops, clf, args.batch)

    def preprocess(inputs: Callable[[list[np.ndarray]], object]) -> Callable[[], None]:
        def run() -> None:
            for i in range(0, len(crops), args.batch):
                inputs(crops[i : i + args.batch])

        return run

    run_pre = preprocess(partial(_unchecked_inputs, clf))
    run_pre_checked = preprocess(clf.card.inputs)  # what Classifier.predict runs

    run_ort(), run_torch()  # warm-up
    best = {"ort": 0.0, "torch": 0.0, "pre": 0.0, "pre_checked": 0.0}
    for _ in range(args.repeats):
        for name, fn in (
            ("pre", run_pre),
            ("pre_checked", run_pre_checked),
            ("ort", run_ort),
            ("torch", run_torch),
        ):
            t = time.perf_counter()
            fn()
            best[name] = max(best[name], len(crops) / (time.perf_counter() - t))
    print(f"preprocessing only : {best['pre']:8.0f} ROIs/s")
    print(
        f"  + polarity check : {best['pre_checked']:8.0f} ROIs/s "
        f"({best['pre_checked'] / best['pre']:.2f}x; the check Classifier.predict runs)"
    )
    print(f"ONNX Runtime       : {best['ort']:8.0f} ROIs/s (incl. preprocessing)")
    print(f"torch eager        : {best['torch']:8.0f} ROIs/s (incl. preprocessing)")
    print(f"ratio ORT / torch  : {best['ort'] / best['torch']:.2f}x")

    cpu_time_per_roi(crops, args)

    cores = len(os.sched_getaffinity(0))
    pieces = shards(crops, cores, SHARD_BATCHES * args.batch)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(cores, context, _worker_start, (args.model,)) as pool:
        for engine in ("ort", "torch"):  # warm-up: enough tasks to start every worker
            list(
                pool.map(
                    partial(_worker_predict, engine, args.batch), [crops[: args.batch]] * 2 * cores
                )
            )
        pooled = {"ort": 0.0, "torch": 0.0}
        cpu_ms = {"ort": np.inf, "torch": np.inf}
        for _ in range(args.repeats):
            for engine in pooled:
                rate, ms = _pool_rate(pool, engine, args, pieces)
                pooled[engine] = max(pooled[engine], rate)
                cpu_ms[engine] = min(cpu_ms[engine], ms)
    print(f"{cores} worker processes x 1 thread (plankline classify, batch pipeline):")
    for engine, name in (("ort", "ONNX Runtime"), ("torch", "torch eager")):
        print(
            f"{name:19s}: {pooled[engine]:8.0f} ROIs/s (incl. preprocessing); workers' CPU "
            f"{cpu_ms[engine]:.3f} ms/ROI: {cores * 1e3 / cpu_ms[engine]:.0f} ROIs/s on "
            f"{cores} idle cores"
        )
    print(
        f"ratio ORT / torch  : {pooled['ort'] / pooled['torch']:.2f}x   "
        f"pool / one process (ORT): {pooled['ort'] / best['ort']:.2f}x   "
        f"target >= 1000 ROIs/s: {'met' if pooled['ort'] >= 1000 else 'NOT met'} by the "
        f"wall clock, {'met' if cores * 1e3 / cpu_ms['ort'] >= 1000 else 'NOT met'} on idle "
        "cores (CPU time)"
    )

    if not args.skip_train:
        with tempfile.TemporaryDirectory() as d:
            make_roi_library(Path(d) / "lib", n_per_class=60, seed=12)
            for workers in (0, 1):
                cfg = TrainConfig(
                    library=str(Path(d) / "lib"),
                    out=str(Path(d) / f"w{workers}"),
                    stop=3,
                    workers=workers,
                )
                hist = train(cfg)
                rate = np.median([h.images_per_s for h in hist])
                print(
                    f"training (scnn, canvas {cfg.canvas}, bs {cfg.bs}, workers {workers}): "
                    f"{rate:.0f} images/s (median of {len(hist)} epochs)"
                )


if __name__ == "__main__":
    main()
