"""Cross-validated classifier quality: the sCNN against the random-forest baseline.

For each data set (the real FlowCam ROIs and the synthetic shape library), K
seeded stratified splits (``seed = 0..K-1``, or from ``--first-seed``; the
training's own ``vsp`` hold-out per class; the seed also seeds training),
each: ``train`` with default settings (or ``--set`` overrides), then
``evaluate_checkpoint``, which scores the sCNN and trains the RF feature
baseline on the very same split; a gradient-boosting classifier on the same
features (scikit-learn's histogram GBM, the XGBoost algorithm) is scored on
that split too. Prints per-split and mean +- sd macro-F1 of each, the
margins (mean, standard error, worst split), and training images/s. Figures
only, no asserts.

Usage::

    python scripts/eval_classifier.py [--splits 5] [--first-seed 0] [--data flowcam synthetic]
        [--set stop=30 --set augment.noise=0.05] [--tta 1 2 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from plankline.imaging.synth import make_roi_library
from plankline.model.data import Augment, load_library, read_image
from plankline.model.evaluate import evaluate_checkpoint, feature_matrix
from plankline.model.train import TrainConfig, checkpoint_path, load_checkpoint, train
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import f1_score

FLOWCAM = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowcam-planktonclas"


def _cast(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        if value.lower() not in ("1", "0", "true", "false"):
            raise ValueError(f"expected true/false, got {value!r}")
        return value.lower() in ("1", "true")
    return type(like)(value)


def overrides(pairs: list[str]) -> dict[str, Any]:
    """``["ilr=1e-3", "augment.noise=0.05"]`` -> TrainConfig keyword arguments."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    aug = asdict(Augment())
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set wants key=value, got {pair!r}")
        if key.startswith("augment."):
            sub = key.removeprefix("augment.")
            if sub not in aug:
                raise SystemExit(f"unknown augment field {sub!r}; one of {sorted(aug)}")
            aug[sub] = _cast(value, aug[sub])
            out["augment"] = aug
        elif key in defaults and key not in ("library", "out", "seed", "augment"):
            out[key] = _cast(value, defaults[key])
        else:
            raise SystemExit(f"cannot --set {key!r}")
    return out


def gbm_macro_f1(weights: Path, epoch: int, seed: int) -> float:
    """Macro-F1 of gradient boosting on the shape features, on the checkpoint's split."""
    ck = load_checkpoint(checkpoint_path(weights, epoch))
    names = ck["class_names"]

    def xy(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        crops = [read_image(Path(p)) for p in paths]
        return feature_matrix(crops), np.array([names.index(Path(p).parent.name) for p in paths])

    xt, yt = xy(ck["train_paths"])
    xv, yv = xy(ck["val_paths"])
    gbm = HistGradientBoostingClassifier(class_weight="balanced", random_state=seed).fit(xt, yt)
    return float(f1_score(yv, gbm.predict(xv), average="macro", labels=range(len(names))))


def run_dataset(
    name: str, lib_dir: Path, work: Path, seeds: range, tta: list[int], kw: dict[str, Any]
) -> None:
    lib = load_library(lib_dir, class_min=TrainConfig(library="", out="", **kw).class_min)
    print(
        f"\n== {name}: {len(lib.labels)} images, {len(lib.class_names)} classes, {kw or 'defaults'}"
    )
    cnn: dict[int, list[float]] = {t: [] for t in tta}
    rf: list[float] = []
    gbm: list[float] = []
    rates: list[float] = []
    for seed in seeds:
        out = work / name / f"split{seed}"
        cfg = TrainConfig(library=str(lib_dir), out=str(out / "w"), seed=seed, **kw)
        t0 = time.perf_counter()
        hist = train(cfg, library=lib)
        train_s = time.perf_counter() - t0
        rates.append(float(np.median([h.images_per_s for h in hist])))
        parts = []
        for t in tta:
            res, _ = evaluate_checkpoint(out / "w", None, out / f"report_tta{t}", tta=t)
            cnn[t].append(res.cnn.macro_f1)
            parts.append(f"sCNN(tta {t}) {res.cnn.macro_f1:.3f}")
        rf.append(res.baseline.macro_f1 if res.baseline is not None else float("nan"))
        gbm.append(gbm_macro_f1(out / "w", cfg.stop, seed))
        print(
            f"split {seed}: n_test {res.n_test}  {'  '.join(parts)}  RF {rf[-1]:.3f}  "
            f"GBM {gbm[-1]:.3f}  "
            f"margin {cnn[tta[0]][-1] - rf[-1]:+.3f}  train {train_s:.0f} s, "
            f"{rates[-1]:.0f} img/s",
            flush=True,
        )

    def ms(v: list[float]) -> str:
        return f"{statistics.mean(v):.3f} +- {statistics.stdev(v) if len(v) > 1 else 0.0:.3f}"

    def per(v: list[float]) -> str:
        return " ".join(f"{x:.3f}" for x in v)

    print(f"{name} macro-F1 over {len(seeds)} splits (seeds {seeds.start}..{seeds.stop - 1}):")
    print(f"  RF baseline      {ms(rf)}   per split {per(rf)}")
    print(f"  GBM baseline     {ms(gbm)}   per split {per(gbm)}")
    for t in tta:
        print(f"  sCNN (tta {t})     {ms(cnn[t])}   per split {per(cnn[t])}")
        for base, ref in (("RF", rf), ("GBM", gbm)):
            m = [c - b for c, b in zip(cnn[t], ref, strict=True)]
            se = statistics.stdev(m) / len(m) ** 0.5 if len(m) > 1 else 0.0
            print(
                f"    margin over {base:3s} {statistics.mean(m):+.3f} (standard error {se:.3f})"
                f"   min {min(m):+.3f}, ahead on {sum(x > 0 for x in m)} of {len(m)}"
            )
    print(f"  training {statistics.median(rates):.0f} images/s (median over splits)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--splits", type=int, default=5, help="K seeded splits")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+K-1")
    ap.add_argument("--data", nargs="+", choices=("flowcam", "synthetic"), default=None)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TrainConfig override, e.g. ilr=1e-3 or augment.noise=0.05",
    )
    ap.add_argument(
        "--tta",
        type=int,
        nargs="+",
        default=[1],
        help="evaluate each run with these test-time augmentation counts",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="keep runs here (default: temp)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kw = overrides(args.set)
    data = args.data or ["flowcam", "synthetic"]
    seeds = range(args.first_seed, args.first_seed + args.splits)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        if "flowcam" in data:
            if FLOWCAM.is_dir():
                run_dataset("flowcam", FLOWCAM, work, seeds, args.tta, kw)
            else:
                print(f"FlowCam ROIs not found at {FLOWCAM}; skipped")
        if "synthetic" in data:
            lib_dir = work / "synthetic_library"
            if not lib_dir.is_dir():
                make_roi_library(lib_dir, n_per_class=40, seed=7)
            run_dataset("synthetic", lib_dir, work, seeds, args.tta, kw)


if __name__ == "__main__":
    main()
