"""Evaluating a classifier the way plankton ecologists read one (seeds 000-002).

Accuracy, macro/weighted F1, per-class precision/recall/F1/support, a
confusion matrix, F1 against class size, histograms of the winning
probability for right and wrong calls, and per-class probability thresholds
that reach a target precision ("a >95% threshold produces a cleaner
product", WHOI) with the recall they keep. Every report also trains the
feature baseline ecologists use today (a random forest on ZooProcess-style
measurements of the object mask) on the same split and prints it beside the
CNN.

:func:`evaluate_predictions` is pure (arrays in, a result out);
:func:`write_report` is the only function here that writes files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

Predict = Callable[[Sequence[np.ndarray]], np.ndarray]

DIHEDRAL: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    lambda c: c,
    lambda c: np.rot90(c, 1),
    lambda c: np.rot90(c, 2),
    lambda c: np.rot90(c, 3),
    lambda c: c[:, ::-1],
    lambda c: c[::-1],
    lambda c: np.rot90(c[:, ::-1], 1),
    lambda c: np.rot90(c[::-1], 1),
)
"""The 8 exact (interpolation-free) rotations/flips used for test-time augmentation."""


def predict_tta(predict: Predict, crops: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Average ``predict`` over the first ``n`` (1-8) dihedral transforms of each crop.

    Plankton have no up: averaging over exact 90-degree rotations and flips
    is the cheap, export-friendly version of the sCNN's 24 test-time repeats.
    """
    if not 1 <= n <= len(DIHEDRAL):
        raise ValueError(f"tta must be in 1..{len(DIHEDRAL)}, got {n}")
    acc = None
    for t in DIHEDRAL[:n]:
        p = predict([np.ascontiguousarray(t(c)) for c in crops])
        acc = p if acc is None else acc + p
    return (acc / n).astype(np.float32)


def at_contrast(crop: np.ndarray, factor: float) -> np.ndarray:
    """``crop`` as a camera with ``factor`` times its contrast would record it.

    Each pixel's departure from the background (the median of the border, per channel)
    is scaled by ``factor``, for either polarity; uint8 or uint16, gray or colour.
    Another camera, gain, lamp or flat-field gives the same organisms fainter or darker
    than a model's library: :func:`scores_at_contrast` measures what that costs.
    """
    from plankline.model.data import _border

    a = np.asarray(crop)
    if a.dtype not in (np.uint8, np.uint16) or a.ndim not in (2, 3) or a.size == 0:
        raise ValueError(f"crop must be a non-empty uint8/uint16 image, got {a.dtype} {a.shape}")
    bg = np.median(_border(a).astype(np.float32), axis=0)
    out = bg + np.float32(factor) * (a.astype(np.float32) - bg)
    return np.clip(np.rint(out), 0, np.iinfo(a.dtype).max).astype(a.dtype)


def scores_at_contrast(
    predict: Predict,
    crops: Sequence[np.ndarray],
    y_true: np.ndarray,
    factors: Sequence[float] = (1.0, 0.6, 0.35),
) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of ``predict`` on ``crops`` at each contrast ``factor``
    (:func:`at_contrast`), keyed by the factor (``"0.6"``)."""
    y = np.asarray(y_true)
    out = {}
    for k in factors:
        pred = predict([at_contrast(c, k) for c in crops]).argmax(1)
        out[f"{k:g}"] = {
            "accuracy": round(float(np.mean(pred == y)), 4),
            "macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
        }
    return out


def precision_thresholds(
    probs: np.ndarray, y_true: np.ndarray, target: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class lowest winning-probability threshold whose precision reaches ``target``.

    For class ``k``, among the samples whose top class is ``k`` and whose top
    probability is ``>= t``, precision is the fraction truly ``k``. The
    threshold is the smallest ``t`` at which that precision is ``>= target``
    (so the most recall is kept); classes that never reach it get ``inf``
    (never assigned, recall 0).

    Returns
    -------
    thresholds, precision, recall : ndarray
        ``(n_classes,)`` each; precision/recall are those reached at the threshold.
    """
    n_classes = probs.shape[1]
    top = probs.argmax(1)
    ptop = probs.max(1)
    thr = np.full(n_classes, np.inf)
    prec = np.zeros(n_classes)
    rec = np.zeros(n_classes)
    for k in range(n_classes):
        support = int((y_true == k).sum())
        sel = np.flatnonzero(top == k)
        if len(sel) == 0:
            continue
        order = sel[np.argsort(-ptop[sel], kind="stable")]
        correct = (y_true[order] == k).astype(np.float64)
        tp = np.cumsum(correct)
        precision = tp / np.arange(1, len(order) + 1)
        # a threshold must not split tied probabilities: only cut after the last of a tie
        last_of_tie = np.r_[ptop[order][1:] != ptop[order][:-1], True]
        ok = np.flatnonzero((precision >= target) & last_of_tie)
        if len(ok) == 0:
            continue
        j = ok[-1]
        thr[k] = float(ptop[order][j])
        prec[k] = precision[j]
        rec[k] = tp[j] / support if support else 0.0
    return thr, prec, rec


@dataclass
class Scores:
    """Headline figures of one classifier on one split."""

    accuracy: float
    macro_f1: float
    weighted_f1: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]


def score(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> Scores:
    """Accuracy, macro and weighted F1 and per-class figures (sklearn, zero_division=0)."""
    labels = np.arange(n_classes)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return Scores(
        accuracy=float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        weighted_f1=float(
            f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        precision=p.tolist(),
        recall=r.tolist(),
        f1=f.tolist(),
        support=s.astype(int).tolist(),
    )


def feature_matrix(crops: Sequence[np.ndarray], polarity: str = "bright") -> np.ndarray:
    """Shape features of each ROI's main object (the ecologists' baseline input).

    Uses :func:`plankline.imaging.segment.object_mask` and
    :func:`plankline.imaging.measure.measure_rois` on the crops in the
    bright-field convention (dark-field ones inverted, so grey-level features
    mean the same on every imager); NaNs become 0.
    """
    from plankline.imaging.measure import FEATURE_COLUMNS, measure_rois
    from plankline.imaging.segment import object_mask
    from plankline.model.data import to_bright_field

    crops = [to_bright_field(c, polarity) for c in crops]
    masks = [object_mask(c) for c in crops]
    table = measure_rois(list(crops), masks)
    x = np.column_stack([np.asarray(table[c], np.float64) for c in FEATURE_COLUMNS])
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def baseline_predict(
    train_crops: Sequence[np.ndarray],
    train_labels: np.ndarray,
    test_crops: Sequence[np.ndarray],
    *,
    seed: int = 0,
    polarity: str = "bright",
    small_cnn: bool = False,
    n_classes: int | None = None,
) -> dict[str, np.ndarray]:
    """Class probabilities of the baselines trained on the training split, by name.

    The random forest and gradient boosting on shape features
    (:mod:`plankline.model.baselines`; seed 001: "previous feature-based
    classifier, random forest"), and with ``small_cnn`` the plain small CNN
    (minutes on a CPU). Each is ``(n_test, n_classes)`` in label order 0..K-1.
    """
    from plankline.model.baselines import SMALL_CNN, feature_baselines, small_cnn_predict

    k = n_classes if n_classes is not None else int(max(train_labels.max(), 0)) + 1
    out = feature_baselines(
        feature_matrix(train_crops, polarity),
        train_labels,
        feature_matrix(test_crops, polarity),
        k,
        seed=seed,
    )
    if small_cnn:
        out[SMALL_CNN] = small_cnn_predict(train_crops, train_labels, test_crops, k, seed=seed)[0]
    return out


@dataclass
class EvalResult:
    """Everything a report shows."""

    class_names: list[str]
    cnn: Scores
    baseline: Scores | None  # the random forest (``baselines["RF"]``)
    thresholds: list[float]
    threshold_precision: list[float]
    threshold_recall: list[float]
    target_precision: float
    tta: int
    n_train: int
    n_test: int
    probs: np.ndarray = field(repr=False)
    y_true: np.ndarray = field(repr=False)
    baselines: dict[str, Scores] = field(default_factory=dict)
    #: accuracy and macro-F1 with the organisms' contrast scaled (:func:`scores_at_contrast`,
    #: keyed by the factor): what a fainter camera, gain or lamp costs this model
    at_contrast: dict[str, dict[str, float]] = field(default_factory=dict)

    def thresholds_dict(self) -> dict[str, float | None]:
        """Thresholds by class name (None where the target precision is unreachable)."""
        return {
            n: (None if not np.isfinite(t) else float(t))
            for n, t in zip(self.class_names, self.thresholds, strict=True)
        }


def evaluate_predictions(
    probs: np.ndarray,
    y_true: np.ndarray,
    class_names: Sequence[str],
    *,
    baseline_probs: np.ndarray | dict[str, np.ndarray] | None = None,
    target_precision: float = 0.95,
    tta: int = 1,
    n_train: int = 0,
) -> EvalResult:
    """Score CNN probabilities (and optionally the baselines', by name) against the truth.

    A single array of ``baseline_probs`` is the random forest's.
    """
    probs = np.asarray(probs, np.float64)
    y_true = np.asarray(y_true, np.int64)
    if probs.ndim != 2 or probs.shape != (len(y_true), len(class_names)):
        raise ValueError(
            f"probs must be (n={len(y_true)}, n_classes={len(class_names)}), got {probs.shape}"
        )
    if not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    k = len(class_names)
    cnn = score(y_true, probs.argmax(1), k)
    if baseline_probs is not None and not isinstance(baseline_probs, dict):
        baseline_probs = {"RF": baseline_probs}
    baselines = {
        name: score(y_true, np.asarray(p).argmax(1), k)
        for name, p in (baseline_probs or {}).items()
    }
    base = baselines.get("RF")
    thr, tp, tr = precision_thresholds(probs, y_true, target_precision)
    return EvalResult(
        class_names=list(class_names),
        cnn=cnn,
        baseline=base,
        thresholds=thr.tolist(),
        threshold_precision=tp.tolist(),
        threshold_recall=tr.tolist(),
        target_precision=target_precision,
        tta=tta,
        n_train=n_train,
        n_test=len(y_true),
        probs=probs,
        y_true=y_true,
        baselines=baselines,
    )


def evaluate(
    predict: Predict,
    test_crops: Sequence[np.ndarray],
    test_labels: np.ndarray,
    class_names: Sequence[str],
    *,
    train_crops: Sequence[np.ndarray] | None = None,
    train_labels: np.ndarray | None = None,
    tta: int = 1,
    target_precision: float = 0.95,
    seed: int = 0,
    polarity: str = "bright",
    small_cnn: bool = False,
) -> EvalResult:
    """Predict the test split (with ``tta`` transforms) and score it beside the baselines.

    The baselines (:func:`baseline_predict`) are trained on
    ``train_crops``/``train_labels`` (the CNN's own training split) when they
    are given; ``polarity`` is the crops' imager convention.
    """
    probs = predict_tta(predict, test_crops, tta)
    base = None
    if train_crops is not None and train_labels is not None:
        base = baseline_predict(
            train_crops,
            train_labels,
            test_crops,
            seed=seed,
            polarity=polarity,
            small_cnn=small_cnn,
            n_classes=len(class_names),
        )
    result = evaluate_predictions(
        probs,
        test_labels,
        class_names,
        baseline_probs=base,
        target_precision=target_precision,
        tta=tta,
        n_train=0 if train_labels is None else len(train_labels),
    )
    result.at_contrast = scores_at_contrast(predict, test_crops, test_labels, CONTRASTS)
    return result


CONTRASTS = (0.6, 0.35)
"""Contrast factors the evaluation report scores the model at (besides the images as they
are): the shipped NDSB model before contrast augmentation held 0.592 accuracy at 1, 0.452
at 0.6 and 0.166 at 0.35, calling faint organisms of another camera one class."""


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------


BASELINE_LABELS = {
    "RF": "RF on shape features",
    "GBM": "gradient boosting on shape features",
    "small CNN": "plain small CNN (96 px, 25 epochs)",
}
"""How the report names each baseline."""


def _write_rows(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_thresholds(model_dir: Path, result: EvalResult) -> Path:
    """Save ``thresholds.json`` into a model folder (read by ``Classifier.thresholds``)."""
    path = Path(model_dir) / "thresholds.json"
    data = {
        "target_precision": result.target_precision,
        "n_test": result.n_test,
        "thresholds": result.thresholds_dict(),
        "recall_kept": dict(zip(result.class_names, result.threshold_recall, strict=True)),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def write_report(
    out_dir: Path, result: EvalResult, *, title: str = "Classifier evaluation"
) -> Path:
    """Write CSVs, PNG figures and ``report.md`` into ``out_dir``; return the report path."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = result.class_names
    k = len(names)
    y = result.y_true
    pred = result.probs.argmax(1)
    ptop = result.probs.max(1)
    c = result.cnn

    _write_rows(
        out / "per_class.csv",
        [
            "class",
            "precision",
            "recall",
            "f1",
            "support",
            "threshold",
            "threshold_precision",
            "threshold_recall",
        ],
        [
            [
                n,
                f"{c.precision[i]:.4f}",
                f"{c.recall[i]:.4f}",
                f"{c.f1[i]:.4f}",
                c.support[i],
                "" if not np.isfinite(result.thresholds[i]) else f"{result.thresholds[i]:.4f}",
                f"{result.threshold_precision[i]:.4f}",
                f"{result.threshold_recall[i]:.4f}",
            ]
            for i, n in enumerate(names)
        ],
    )
    cm = confusion_matrix(y, pred, labels=np.arange(k))
    _write_rows(
        out / "confusion.csv",
        ["true \\ predicted", *names],
        [[n, *cm[i].tolist()] for i, n in enumerate(names)],
    )
    _write_rows(
        out / "thresholds.csv",
        ["class", "threshold", "precision", "recall_kept"],
        [
            [
                n,
                "" if not np.isfinite(result.thresholds[i]) else f"{result.thresholds[i]:.4f}",
                f"{result.threshold_precision[i]:.4f}",
                f"{result.threshold_recall[i]:.4f}",
            ]
            for i, n in enumerate(names)
        ],
    )

    # confusion matrix, row-normalised (recall on the diagonal), counts written in cells
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k), dpi=110)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=8,
                )
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion (macro F1 {c.macro_f1:.3f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "confusion.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
    ax.scatter(c.support, c.f1, label="CNN")
    for i, n in enumerate(names):
        ax.annotate(
            n, (c.support[i], c.f1[i]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    if result.baseline is not None:
        ax.scatter(c.support, result.baseline.f1, marker="x", label="RF baseline")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("test images in class")
    ax.set_ylabel("F1")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Per-class F1 vs class size", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "f1_vs_size.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=110, sharex=True)
    bins = np.linspace(0, 1, 21)
    for ax, sel, lab in ((axes[0], pred == y, "correct"), (axes[1], pred != y, "incorrect")):
        ax.hist(ptop[sel], bins=bins, color="tab:green" if lab == "correct" else "tab:red")
        ax.set_title(f"Winning probability, {lab} ({int(sel.sum())})", fontsize=9)
        ax.set_xlabel("top probability")
    axes[0].set_ylabel("images")
    fig.tight_layout()
    fig.savefig(out / "confidence_hist.png")
    plt.close(fig)

    (out / "metrics.json").write_text(
        json.dumps(
            {k_: v for k_, v in asdict(result).items() if k_ not in ("probs", "y_true")}
            | {"thresholds": result.thresholds_dict()},
            indent=2,
        )
        + "\n"
    )

    lines = [
        f"# {title}",
        "",
        f"Test images: {result.n_test} (training split: {result.n_train}); "
        f"test-time augmentation: {result.tta} transform(s).",
        "",
        "| classifier | accuracy | macro F1 | weighted F1 |",
        "|---|---|---|---|",
        f"| CNN | {c.accuracy:.3f} | {c.macro_f1:.3f} | {c.weighted_f1:.3f} |",
    ]
    for name, b in result.baselines.items():
        label = BASELINE_LABELS.get(name, name)
        lines.append(f"| {label} | {b.accuracy:.3f} | {b.macro_f1:.3f} | {b.weighted_f1:.3f} |")
    for name, b in result.baselines.items():
        lines.append(
            f"| difference (CNN - {name}) | {c.accuracy - b.accuracy:+.3f} | "
            f"{c.macro_f1 - b.macro_f1:+.3f} | {c.weighted_f1 - b.weighted_f1:+.3f} |"
        )
    if result.baselines:
        lines += [
            "",
            "Baselines trained on the same training split: "
            + "; ".join(BASELINE_LABELS.get(n, n) for n in result.baselines)
            + " (plankline.model.baselines).",
        ]
    if result.at_contrast:
        lines += [
            "",
            "## Fainter imagery (each organism's departure from its background scaled)",
            "",
            "| contrast | accuracy | macro F1 |",
            "|---|---|---|",
            f"| 1 (as recorded) | {c.accuracy:.3f} | {c.macro_f1:.3f} |",
        ]
        lines += [
            f"| {k} | {v['accuracy']:.3f} | {v['macro_f1']:.3f} |"
            for k, v in result.at_contrast.items()
        ]
        lines += [
            "",
            "Another camera, gain, lamp or flat-field records the same organisms fainter; "
            "a model that falls far below its own figures here (without test-time "
            "augmentation) needs `plankline train --contrast 0.65` to meet such images.",
        ]
    lines += [
        "",
        f"## Per class (threshold for precision >= {result.target_precision:.2f})",
        "",
        "| class | support | precision | recall | F1 | threshold | recall kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, n in enumerate(names):
        t = result.thresholds[i]
        lines.append(
            f"| {n} | {c.support[i]} | {c.precision[i]:.3f} | {c.recall[i]:.3f} | {c.f1[i]:.3f} "
            f"| {'unreachable' if not np.isfinite(t) else f'{t:.3f}'} "
            f"| {result.threshold_recall[i]:.3f} |"
        )
    lines += [
        "",
        "Figures: confusion.png, f1_vs_size.png, confidence_hist.png. "
        "Tables: per_class.csv, confusion.csv, thresholds.csv, metrics.json.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def evaluate_checkpoint(
    weights: Path,
    epoch: int | None,
    out_dir: Path,
    *,
    model_dir: Path | None = None,
    tta: int = 1,
    target_precision: float = 0.95,
    small_cnn: bool = False,
) -> tuple[EvalResult, Path]:
    """Evaluate a training run on its own validation split and write the report.

    The split (file lists) is read from the checkpoint, so the numbers are
    on images the network never trained on, and the baselines are trained on
    exactly the CNN's training images (with ``small_cnn`` also the plain
    small CNN: minutes). With ``model_dir`` the exported ONNX
    model is evaluated (what will be deployed) and ``thresholds.json`` is
    saved into it; otherwise the torch checkpoint is.
    """
    from plankline.model.data import read_image
    from plankline.model.infer import Classifier
    from plankline.model.train import (
        checkpoint_path,
        checkpoint_predictor,
        latest_epoch,
        load_checkpoint,
    )

    ep = epoch if epoch is not None else latest_epoch(Path(weights))
    if ep < 1:
        raise FileNotFoundError(f"no checkpoint (epoch_NNNN.pt) in {weights}")
    ck = load_checkpoint(checkpoint_path(Path(weights), ep))
    names: list[str] = ck["class_names"]
    polarity = str(ck.get("polarity", "bright"))
    if not ck["val_paths"]:
        raise ValueError(f"{weights} was trained with vsp=0: no validation split to evaluate")

    def load(paths: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
        crops, labels = [], []
        for p in paths:
            img = read_image(Path(p))
            if img is None:
                raise FileNotFoundError(f"validation image {p} is missing or unreadable")
            crops.append(img)
            labels.append(names.index(Path(p).parent.name))
        return crops, np.asarray(labels, np.int64)

    vc, vy = load(ck["val_paths"])
    tc, ty = load(ck["train_paths"])
    if model_dir is not None:
        clf = Classifier.load(Path(model_dir))
        if clf.class_names != names:
            raise ValueError(f"model {model_dir} classes {clf.class_names} differ from {names}")
        predict: Predict = clf.predict
        label = f"ONNX model {model_dir}"
    else:
        predict = checkpoint_predictor(ck)
        label = f"checkpoint {checkpoint_path(Path(weights), ep)}"
    result = evaluate(
        predict,
        vc,
        vy,
        names,
        train_crops=tc,
        train_labels=ty,
        tta=tta,
        target_precision=target_precision,
        seed=int(ck["config"]["seed"]),
        polarity=polarity,
        small_cnn=small_cnn,
    )
    report = write_report(
        Path(out_dir),
        result,
        title=f"Classifier evaluation: {ck['config']['arch']} epoch {ep} ({label})",
    )
    if model_dir is not None:
        write_thresholds(Path(model_dir), result)
    return result, report
