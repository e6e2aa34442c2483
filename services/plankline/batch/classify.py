"""``plankline classify`` as a job: ROI tars or image folders through a pool of workers.

Preprocessing (background, canvas, measurements) is single-threaded Python, so one process
with a multi-threaded ONNX Runtime leaves cores idle while it prepares each batch. As the
batch pipeline does, the job runs one process per core with a one-thread session each
(1.4x the ROIs/s of one two-thread process on 2 cores; ``scripts/bench_infer.py``).
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from plankline.model.infer import shared_classifier, write_classification_csv
from plankline.processes import worker_pool

if TYPE_CHECKING:
    from plankline.model.infer import Classifier

T = TypeVar("T")
R = TypeVar("R")
SHARD_BATCHES = 4
"""Batches per unit of work sent to a worker (a folder is cut into such shards)."""


@dataclass(frozen=True)
class ClassifyJob:
    """What every worker needs to load the model the same way."""

    model: Path | None = None
    cpu: bool = False
    batch_size: int = 256
    threads: int | None = None
    """ONNX Runtime intra-op threads per worker (None: all cores, for one worker)."""
    min_px: int | None = None
    """Size gate of ``plankline run`` (``classify_min_px``; None: the model's own) for chunk
    tars of a project: with ``measurements/<chunk>.csv`` beside ``segmentation/``, ROIs
    whose longer bbox side is under it are ``below_model_size``, so the CSV is the one
    ``plankline run`` writes. 0: no gate."""


@dataclass
class Predictions:
    """Probabilities of the ROIs that could be read, and a warning per one that could not."""

    ids: list[str]
    probs: np.ndarray
    warnings: list[str]
    polarity_mismatched: int = 0
    """ROIs among ``ids`` that look like the other polarity than the model's: the
    classifier warns once per process, the command reports the total."""


@dataclass
class TarResult:
    """One chunk tar classified into its CSV (``error`` set when the chunk failed)."""

    tar: Path
    rois: int = 0
    polarity_mismatched: int = 0
    """As :attr:`Predictions.polarity_mismatched`, of the chunk's ROIs."""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    ecotaxa: Path | None = None
    """The chunk's EcoTaxa export, given its predicted classes (see :func:`classify_tar`)."""


def load(job: ClassifyJob) -> Classifier:
    """The job's classifier, loaded once per process."""
    return shared_classifier(job.model, cpu=job.cpu, threads=job.threads)


def auto_workers(units: int) -> int:
    """One worker per core, never more than the units of work.

    Also on a GPU: one core prepares ~2,500 ROIs/s, so the CPU side is what limits it;
    each worker then holds its own CUDA session.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, units))


def predict_items(
    clf: Classifier,
    items: Iterable[tuple[str, str, np.ndarray | None]],
    batch_size: int,
    sizes: Mapping[str, tuple[int, int]] | None = None,
    min_px: int = 0,
) -> Predictions:
    """Classify ``(roi_id, source, image)`` triples in batches; unreadable or empty skipped.

    With ``sizes`` (ROI id -> bbox height, width) and ``min_px``, the size gate of
    :func:`plankline.model.infer.predict_gated` on the chunk as a whole, as the batch
    pipeline applies it (one more column, ``below_model_size``).
    """
    before = clf.polarity_mismatched
    if sizes is not None and min_px > 0:
        pred = _predict_gated_items(clf, items, sizes, min_px)
    else:
        pred = _predict_all_items(clf, items, batch_size)
    pred.polarity_mismatched = clf.polarity_mismatched - before
    return pred


def _predict_all_items(
    clf: Classifier, items: Iterable[tuple[str, str, np.ndarray | None]], batch_size: int
) -> Predictions:
    ids: list[str] = []
    skipped: list[str] = []
    probs: list[np.ndarray] = []
    pend_ids: list[str] = []
    pend: list[np.ndarray] = []

    def flush() -> None:
        if pend:
            probs.append(clf.predict(pend, batch_size=batch_size))
            ids.extend(pend_ids)
            pend.clear()
            pend_ids.clear()

    for rid, source, img in items:
        if img is None:
            skipped.append(f"unreadable image {source}: skipped")
        elif img.size == 0 or min(img.shape[:2]) == 0:
            skipped.append(f"zero-size ROI {source}: skipped")
        else:
            pend_ids.append(rid)
            pend.append(img)
            if len(pend) >= batch_size:
                flush()
    flush()
    n = len(clf.class_names)
    return Predictions(
        ids, np.concatenate(probs) if probs else np.zeros((0, n), np.float32), skipped
    )


def _predict_gated_items(
    clf: Classifier,
    items: Iterable[tuple[str, str, np.ndarray | None]],
    sizes: Mapping[str, tuple[int, int]],
    min_px: int,
) -> Predictions:
    from plankline.model.infer import predict_gated

    ids: list[str] = []
    crops: list[np.ndarray] = []
    skipped: list[str] = []
    for rid, source, img in items:
        if img is None:
            skipped.append(f"unreadable image {source}: skipped")
        elif img.size == 0 or min(img.shape[:2]) == 0:
            skipped.append(f"zero-size ROI {source}: skipped")
        elif rid not in sizes:
            raise ValueError(f"{source}: no row in the chunk's measurements for the size gate")
        else:
            ids.append(rid)
            crops.append(img)
    heights = np.array([sizes[r][0] for r in ids], dtype=np.int64)
    widths = np.array([sizes[r][1] for r in ids], dtype=np.int64)
    probs = predict_gated(clf, crops, heights, widths, min_px)
    return Predictions(ids, probs, skipped)


def _stem(tar: Path) -> str:
    return tar.name.removesuffix(".gz").removesuffix(".tar")


def _measurements(tar: Path) -> Path:
    """Where a project keeps the measurements of the chunk whose ROIs are in ``tar``."""
    return tar.parent.parent / "measurements" / f"{_stem(tar)}.csv"


def chunk_sizes(tar: Path) -> dict[str, tuple[int, int]] | None:
    """Bounding boxes (height, width) of a chunk tar's ROIs from its project's
    ``measurements/<chunk>.csv`` beside ``segmentation/``; None without one."""
    from plankline.outputs.tables import read_csv

    path = _measurements(tar)
    if not path.is_file():
        return None
    table = read_csv(path, dtypes={"image": str}, usecols=["image", "bbox_height", "bbox_width"])
    return {
        str(i): (int(h), int(w))
        for i, h, w in zip(table["image"], table["bbox_height"], table["bbox_width"], strict=True)
    }


def classify_files(files: Sequence[Path], job: ClassifyJob) -> Predictions:
    """Probabilities for a shard of a folder of ROI images."""
    from plankline.model.data import read_image

    return predict_items(
        load(job), ((f.stem, str(f), read_image(f)) for f in files), job.batch_size
    )


def classify_tar(tar: Path, csv_path: Path, job: ClassifyJob) -> TarResult:
    """One chunk tar into its CSV; a corrupt tar is reported, not raised, so others go on.

    A truncated tar gives the CSV of the ROIs before the damage, with a warning; a tar with
    nothing readable gives no CSV and an error.

    A chunk tar of a project (its measurements beside ``segmentation/``, as for the size
    gate) also gets its EcoTaxa export (``ecotaxa/<chunk>.zip``, written by ``plankline
    run --no-classify``) annotated with the predicted classes, before the CSV that marks
    the chunk classified: the export then equals ``plankline run``'s
    (:func:`plankline.outputs.ecotaxa.annotate_ecotaxa_zip`). An export that is missing or
    holds other ROIs (some did not decode) is left as it is, with a warning.
    """
    from plankline.model.infer import gated_classes
    from plankline.outputs.rois import iter_roi_tar

    res = TarResult(tar)
    try:
        clf = load(job)
        wanted = clf.card.min_object_px if job.min_px is None else job.min_px
        sizes = chunk_sizes(tar) if wanted > 0 else None
        gate = wanted if sizes is not None else 0
        if wanted > 0 and sizes is None and (tar.parent.parent / "measurements").is_dir():
            res.warnings.append(
                f"{tar}: no measurements CSV for the size gate: every ROI classified"
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pred = predict_items(
                clf,
                ((rid, f"{tar}:{rid}", img) for rid, img in iter_roi_tar(tar, mode="unchanged")),
                job.batch_size,
                sizes,
                gate,
            )
        damage = [str(w.message) for w in caught]
        if damage and not pred.ids:  # nothing readable: no CSV that claims an empty chunk
            res.error = "; ".join(damage)
            return res
        res.warnings += pred.warnings + damage
        names, thresholds = gated_classes(clf.class_names, clf.thresholds, gate)
        if _measurements(tar).is_file():
            res.ecotaxa = annotate_export(tar, pred, names, res.warnings)
        write_classification_csv(csv_path, pred.ids, pred.probs, names, thresholds)
        res.rois, res.polarity_mismatched = len(pred.ids), pred.polarity_mismatched
    except (ValueError, OSError) as e:
        res.error = f"{tar}: {e}"
    return res


def annotate_export(
    tar: Path, pred: Predictions, class_names: Sequence[str], warnings_: list[str]
) -> Path | None:
    """Give the chunk's EcoTaxa export beside ``segmentation/`` the predicted (top) classes,
    as ``plankline run`` names them; returns it, or None (a warning says why)."""
    from plankline.outputs.ecotaxa import annotate_ecotaxa_zip

    path = tar.parent.parent / "ecotaxa" / f"{_stem(tar)}.zip"
    if not path.is_file():
        warnings_.append(f"{tar}: no EcoTaxa export {path} to give the predicted classes")
        return None
    predicted = [class_names[k] for k in pred.probs.argmax(axis=1)] if pred.ids else []
    try:
        annotate_ecotaxa_zip(path, pred.ids, predicted)
    except (ValueError, zipfile.BadZipFile) as e:
        warnings_.append(f"{path}: left without predicted classes: {e}")
        return None
    return path


def shards(items: Sequence[T], workers: int, size: int) -> list[Sequence[T]]:
    """Split ``items`` into pieces of at most ``size``, at least one per worker when possible."""
    size = max(1, min(size, math.ceil(len(items) / max(workers, 1))))
    return [items[i : i + size] for i in range(0, len(items), size)]


def map_ordered(
    fn: Callable[..., R], args: Sequence[tuple[Any, ...]], job: ClassifyJob, workers: int
) -> Iterator[R]:
    """``fn(*a, job)`` for each ``a`` in order, in this process or a pool of ``workers``."""
    if workers <= 1:
        for a in args:
            yield fn(*a, job)
        return
    one_thread = replace(job, threads=1)
    with worker_pool(workers) as pool:  # workers die with this process, kill -9 included
        futures = [pool.submit(fn, *a, one_thread) for a in args]
        for f in futures:
            yield f.result()


def classify_tars(
    tars: Sequence[Path],
    out_dir: Path,
    job: ClassifyJob,
    workers: int = 0,
    on_tar: Callable[[TarResult], None] = lambda r: None,
) -> list[TarResult]:
    """Each chunk tar into ``out_dir/<chunk>.csv``; ``workers`` 0: one per core."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [(t, out_dir / f"{t.name.removesuffix('.gz').removesuffix('.tar')}.csv") for t in tars]
    results = []
    for res in map_ordered(classify_tar, args, job, workers or auto_workers(len(tars))):
        on_tar(res)
        results.append(res)
    return results


def classify_folder(
    files: Sequence[Path],
    csv_path: Path,
    job: ClassifyJob,
    workers: int = 0,
    on_shard: Callable[[int, Predictions], None] = lambda n, p: None,
) -> int:
    """A folder's images into one CSV, in the files' order; the number of rows written.

    ``on_shard(files_done, predictions)`` follows each shard (progress, warnings).
    """
    size = SHARD_BATCHES * job.batch_size
    workers = workers or auto_workers(math.ceil(len(files) / size))
    pieces = shards(files, workers, size)
    ids: list[str] = []
    probs = []
    for piece, pred in zip(
        pieces, map_ordered(classify_files, [(p,) for p in pieces], job, workers), strict=True
    ):
        on_shard(len(piece), pred)
        ids += pred.ids
        probs.append(pred.probs)
    clf = load(job)
    table = np.concatenate(probs) if probs else np.zeros((0, len(clf.class_names)), np.float32)
    write_classification_csv(csv_path, ids, table, clf.class_names, clf.thresholds)
    return len(ids)
