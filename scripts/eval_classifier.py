"""The multi-instrument classifier benchmark: our network against three baselines, same splits.

Every real labelled set in ``../shared/data`` (README there), plus dark-field
versions of bright-field sets made by inverting their images (no large public
dark-field set exists; the real dark-field check is ``zoolake``), each with K
seeded stratified splits (``seed = 0..K-1`` or from ``--first-seed``; the
training's own ``vsp`` hold-out per class; the seed also seeds every model).
On each split, trained on the very same images:

- ours: ``plankline.model.train.train`` with default settings (or ``--set``
  overrides), scored at each ``--tta`` count;
- ``small CNN``: the plain small CNN (``plankline.model.baselines``: 4 VGG
  blocks, 96 px padded input, flips and 90-degree turns, Adam, cosine, 25 epochs);
- ``RF`` and ``GBM``: random forest and gradient boosting on our shape features.

Per set: macro-F1 mean +- sd of each model, our margin over each baseline
(mean, standard error, wins k of n), training images/s; at the end the mean
over sets. Figures only, no asserts. Every split's result is appended to
``<work>/results.jsonl``; baseline results are cached there by (set, seed,
split) and reused, so comparing settings of ours re-trains only ours.

Sets (``--data``; fixed subsets so that one split of everything runs in well
under an hour on 2 cores):

==================  =========================================================
flowcam             flowcam-planktonclas, all 105 images, 6 classes
zooscan             zooscan-ecotaxa-template, all 400, 4 classes
zoolake             zoolake-spc-darkfield (real dark-field, colour), 350, 35
vicko               flowcam-vicko: 200 per class (seeded), 600, 3 classes
ndsb                ndsb-isiis: every 4th class (by name) of those with >= 40
                    images, 40 per class (seeded): 24 classes, 960 images
vicko-dark          vicko inverted (dark-field version)
ndsb-dark           ndsb subset inverted
flowcam-dark        flowcam inverted
--folder PATH       any other folder-per-class set, ``--per-class`` seeded images of
                    every class with at least that many (default 40)
ndsb-full           all 30,336 NDSB images, 121 classes (only on request)
vicko-full          all 3,000 vicko images, 3 classes as found (2,295 / 287 / 418;
                    only on request: 600 test images a split, ~45 min a split)
==================  =========================================================

Usage::

    nice -n 5 python scripts/eval_classifier.py [--splits 3] [--data flowcam zoolake ...]
        [--set stop=30 --set canvas=96] [--tta 1 8] [--no-small-cnn] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from plankline.model.baselines import GBM_PARAMS, SMALL_CNN, feature_baselines, small_cnn_predict
from plankline.model.data import Augment, list_images, load_library, read_image
from plankline.model.evaluate import feature_matrix, predict_tta
from plankline.model.train import (
    TrainConfig,
    checkpoint_path,
    checkpoint_predictor,
    load_checkpoint,
    train,
)
from sklearn.metrics import f1_score, log_loss

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

Picker = Callable[[Path], dict[str, list[Path]]]


def _all(folder: Path) -> dict[str, list[Path]]:
    return {d.name: list_images(d) for d in sorted(folder.iterdir()) if d.is_dir()}


def _per_class(n: int, *, min_count: int = 0, class_stride: int = 1) -> Picker:
    """Up to ``n`` seeded random images of every ``class_stride``-th class with >= min_count."""

    def pick(folder: Path) -> dict[str, list[Path]]:
        classes = {k: v for k, v in _all(folder).items() if len(v) >= min_count}
        out = {}
        for k in sorted(classes)[::class_stride]:
            files = classes[k]
            rng = np.random.default_rng(1234)
            sel = sorted(rng.choice(len(files), min(n, len(files)), replace=False))
            out[k] = [files[i] for i in sel]
        return out

    return pick


# name -> (folder under DATA, picker, inverted)
SETS: dict[str, tuple[str, Picker, bool]] = {
    "flowcam": ("flowcam-planktonclas", _all, False),
    "zooscan": ("zooscan-ecotaxa-template", _all, False),
    "zoolake": ("zoolake-spc-darkfield", _all, False),
    "vicko": ("flowcam-vicko", _per_class(200), False),
    "ndsb": ("ndsb-isiis", _per_class(40, min_count=40, class_stride=4), False),
    "vicko-dark": ("flowcam-vicko", _per_class(200), True),
    "ndsb-dark": ("ndsb-isiis", _per_class(40, min_count=40, class_stride=4), True),
    "flowcam-dark": ("flowcam-planktonclas", _all, True),
    "ndsb-full": ("ndsb-isiis", _all, False),
    "vicko-full": ("flowcam-vicko", _all, False),
}
DEFAULT_SETS = ("flowcam", "zooscan", "zoolake", "vicko", "ndsb", "vicko-dark", "ndsb-dark")


def materialise(name: str, work: Path) -> Path:
    """The set as a folder-per-class library under ``work`` (links, or inverted copies)."""
    folder, pick, inverted = SETS[name]
    root = work / "libraries" / name
    if root.is_dir():
        return root
    tmp = root.with_name(root.name + ".tmp")
    for cls, files in pick(DATA / folder).items():
        (tmp / cls).mkdir(parents=True, exist_ok=True)
        for f in files:
            dst = tmp / cls / (f.stem + ".png" if inverted else f.name)
            if inverted:
                img = read_image(f)
                top = 65535 if img.dtype == np.uint16 else 255
                cv2.imwrite(str(dst), top - img)
            else:
                dst.symlink_to(f)
    tmp.rename(root)
    return root


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


def _f1(y: np.ndarray, probs: np.ndarray, k: int) -> float:
    return float(f1_score(y, probs.argmax(1), average="macro", labels=range(k), zero_division=0))


def _load_split(ck: dict[str, Any]) -> tuple[list, np.ndarray, list, np.ndarray]:
    names = ck["class_names"]

    def load(paths: list[str]) -> tuple[list, np.ndarray]:
        crops = [read_image(Path(p)) for p in paths]
        return crops, np.array([names.index(Path(p).parent.name) for p in paths])

    return *load(ck["train_paths"]), *load(ck["val_paths"])


class Cache:
    """Baseline results by (set, seed, split fingerprint), kept in ``results.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                r = json.loads(line)
                if r.get("kind") == "baseline":
                    self.rows[r["key"]] = r

    def add(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if row.get("kind") == "baseline":
            self.rows[row["key"]] = row


def run_split(
    name: str,
    lib_dir: Path,
    lib: Any,
    seed: int,
    work: Path,
    kw: dict[str, Any],
    tta: list[int],
    small_cnn: bool,
    cache: Cache,
) -> dict[str, Any]:
    out = work / "runs" / name / f"split{seed}" / "w"
    cfg = TrainConfig(library=str(lib_dir), out=str(out), seed=seed, **kw)
    t0 = time.perf_counter()
    hist = train(cfg, library=lib)
    train_s = time.perf_counter() - t0
    ck = load_checkpoint(checkpoint_path(out, cfg.stop))
    k = len(ck["class_names"])
    xt, yt, xv, yv = _load_split(ck)
    pol = ck["polarity"]
    predict = checkpoint_predictor(ck)

    row: dict[str, Any] = {
        "kind": "ours",
        "set": name,
        "seed": seed,
        "settings": kw,
        "n_train": len(yt),
        "n_test": len(yv),
        "polarity": pol,
        "train_s": train_s,
        "images_per_s": float(np.median([h.images_per_s for h in hist])),
    }
    for t in tta:
        probs = predict_tta(predict, xv, t)
        row[f"tta{t}"] = _f1(yv, probs, k)
        # multi-class log loss, NDSB's own measure (probabilities clipped at 1e-15, as Kaggle)
        row[f"nll_tta{t}"] = float(log_loss(yv, np.clip(probs, 1e-15, 1), labels=range(k)))
    cache.add(row)

    key = f"{name}|{seed}|{cfg.vsp}|{len(yt)}|{len(yv)}"
    base = dict(cache.rows.get(key, {}))
    if not all(b in base for b in ("RF", "GBM")) or base.get("gbm_params") != GBM_PARAMS:
        p = feature_baselines(feature_matrix(xt, pol), yt, feature_matrix(xv, pol), k, seed=seed)
        base.update({b: _f1(yv, v, k) for b, v in p.items()}, gbm_params=GBM_PARAMS)
    if small_cnn and SMALL_CNN not in base:
        t1 = time.perf_counter()
        p, rate = small_cnn_predict(xt, yt, xv, k, seed=seed)
        base[SMALL_CNN] = _f1(yv, p, k)
        base["small_cnn_images_per_s"] = rate
        base["small_cnn_train_s"] = time.perf_counter() - t1
    if base != cache.rows.get(key):
        cache.add({**base, "kind": "baseline", "key": key, "set": name, "seed": seed})
    return {
        **row,
        **{b: base[b] for b in ("RF", "GBM", SMALL_CNN, "small_cnn_images_per_s") if b in base},
    }


def _ms(v: list[float]) -> str:
    return f"{statistics.mean(v):.3f} +- {statistics.stdev(v) if len(v) > 1 else 0.0:.3f}"


def report_set(name: str, rows: list[dict[str, Any]], tta: list[int]) -> dict[str, float]:
    """Print one set's summary; return its mean macro-F1 per model."""
    means: dict[str, float] = {}
    print(f"{name} macro-F1 over {len(rows)} split(s) (seeds {[r['seed'] for r in rows]}):")
    for b in ("RF", "GBM", SMALL_CNN):
        v = [r[b] for r in rows if b in r]
        if len(v) == len(rows):
            means[b] = statistics.mean(v)
            print(f"  {b:10s} {_ms(v)}   per split {' '.join(f'{x:.3f}' for x in v)}")
    for t in tta:
        ours = [r[f"tta{t}"] for r in rows]
        means[f"ours tta{t}"] = statistics.mean(ours)
        nll = [r[f"nll_tta{t}"] for r in rows if f"nll_tta{t}" in r]
        print(
            f"  ours tta {t}  {_ms(ours)}   per split {' '.join(f'{x:.3f}' for x in ours)}"
            + (f"   log loss {_ms(nll)}" if len(nll) == len(rows) else "")
        )
        for b in ("RF", "GBM", SMALL_CNN):
            if not all(b in r for r in rows):
                continue
            m = [o - r[b] for o, r in zip(ours, rows, strict=True)]
            se = statistics.stdev(m) / len(m) ** 0.5 if len(m) > 1 else float("nan")
            print(
                f"    margin over {b:9s} {statistics.mean(m):+.3f} (se {se:.3f}), "
                f"ahead on {sum(x > 0 for x in m)} of {len(m)}"
            )
    rate = statistics.median(r["images_per_s"] for r in rows)
    line = f"  training: ours {rate:.0f} images/s"
    cnn = [r["small_cnn_images_per_s"] for r in rows if "small_cnn_images_per_s" in r]
    if cnn:
        line += f", small CNN {statistics.median(cnn):.0f} images/s"
    print(line + f"; ours {statistics.median(r['train_s'] for r in rows):.0f} s per split")
    return means


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--splits", type=int, default=3, help="K seeded splits")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+K-1")
    ap.add_argument(
        "--data", nargs="+", choices=sorted(SETS), help="sets (default: all but the full ones)"
    )
    ap.add_argument(
        "--folder",
        type=Path,
        nargs="+",
        default=[],
        help="more real folder-per-class sets (e.g. one fetched from a public repository),\n"
        "named by their folder: --per-class seeded images of each class with that many",
    )
    ap.add_argument("--per-class", type=int, default=40, help="images a class of --folder sets")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TrainConfig override, e.g. canvas=96 or augment.noise=0.05",
    )
    ap.add_argument("--tta", type=int, nargs="+", default=[1], help="test-time augmentations")
    ap.add_argument("--no-small-cnn", action="store_true", help="skip the small-CNN baseline")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="keep runs and results.jsonl here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for folder in args.folder:  # an absolute path: DATA / folder is the folder itself
        if folder.name in SETS:
            ap.error(f"--folder {folder}: its name is that of the built-in set {folder.name!r}")
        SETS[folder.name] = (
            str(folder.resolve()),
            _per_class(args.per_class, min_count=args.per_class),
            False,
        )
    # --folder alone runs those sets only
    named = args.data if args.data is not None else ([] if args.folder else list(DEFAULT_SETS))
    data = [*named, *(f.name for f in args.folder)]
    kw = overrides(args.set)
    seeds = range(args.first_seed, args.first_seed + args.splits)
    print(f"settings: {kw or 'defaults'}; splits {list(seeds)}; tta {args.tta}")
    if not DATA.is_dir():
        raise SystemExit(f"real data sets not found at {DATA}")

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cache = Cache(work / "results.jsonl")
        means: dict[str, dict[str, float]] = {}
        for name in data:
            if not (DATA / SETS[name][0]).is_dir():
                print(f"{name}: {DATA / SETS[name][0]} not found; skipped")
                continue
            lib_dir = materialise(name, work)
            lib = load_library(lib_dir, class_min=TrainConfig(library="", out="", **kw).class_min)
            print(
                f"\n== {name}: {len(lib)} images, {len(lib.class_names)} classes, "
                f"read as {lib.polarity}-field",
                flush=True,
            )
            if kw.get("init") and name.startswith("ndsb"):
                print(
                    f"  note: init={kw['init']}: a model trained on NDSB has seen these test "
                    "images (the shipped one: 90 % of them); its figures are not held out"
                )
            rows = []
            for seed in seeds:
                r = run_split(
                    name, lib_dir, lib, seed, work, kw, args.tta, not args.no_small_cnn, cache
                )
                rows.append(r)
                print(
                    "  split {seed}: n_test {n_test}  ".format(**r)
                    + "  ".join(f"ours(tta {t}) {r[f'tta{t}']:.3f}" for t in args.tta)
                    + "".join(f"  {b} {r[b]:.3f}" for b in (SMALL_CNN, "RF", "GBM") if b in r)
                    + f"  train {r['train_s']:.0f} s",
                    flush=True,
                )
            means[name] = report_set(name, rows, args.tta)
        if len(means) > 1:
            print(f"\n== mean over {len(means)} sets ({', '.join(means)})")
            keys = [k for k in next(iter(means.values())) if all(k in m for m in means.values())]
            for k in keys:
                print(f"  {k:10s} {statistics.mean(m[k] for m in means.values()):.3f}")


if __name__ == "__main__":
    main()
