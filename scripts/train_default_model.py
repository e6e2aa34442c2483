"""Train, export and evaluate the shipped default model on the synthetic ROI classes.

Writes ``services/plankline/models/default/`` (model.onnx, labels.txt,
meta.json with the training and evaluation figures, thresholds.json) and the
evaluation report beside the weights in ``--work``.

Usage::

    python scripts/train_default_model.py --work /tmp/default_model [--n-per-class 200]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from plankline.imaging.synth import make_roi_library
from plankline.model.evaluate import evaluate_checkpoint
from plankline.model.export import export_model
from plankline.model.infer import DEFAULT_MODEL_DIR
from plankline.model.train import TrainConfig, checkpoint_path, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/plankline_default_model"))
    ap.add_argument("--n-per-class", type=int, default=200)
    ap.add_argument("--stop", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR)
    args = ap.parse_args()
    torch.set_num_threads(2)

    lib = args.work / "library"
    if not lib.is_dir():
        counts = make_roi_library(lib, n_per_class=args.n_per_class, seed=args.seed)
        print(f"library {lib}: {counts}")
    cfg = TrainConfig(
        library=str(lib), out=str(args.work / "weights"), stop=args.stop, seed=args.seed
    )
    t0 = time.perf_counter()
    hist = train(cfg, on_epoch=lambda st: print(st.line(), flush=True))
    train_s = time.perf_counter() - t0
    export_model(checkpoint_path(Path(cfg.out), cfg.stop), args.out)
    result, report = evaluate_checkpoint(
        Path(cfg.out), cfg.stop, args.work / "report", model_dir=args.out, tta=1
    )
    print(report.read_text())
    meta_path = args.out / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["training"] = {
        "library": f"plankline.imaging.synth.make_roi_library(n_per_class={args.n_per_class}, "
        f"seed={args.seed})",
        "train_images": result.n_train,
        "validation_images": result.n_test,
        "train_seconds_2_cpu_cores": round(train_s, 1),
        "log": [asdict(h) for h in hist],
    }
    meta["evaluation"] = {
        "accuracy": result.cnn.accuracy,
        "macro_f1": result.cnn.macro_f1,
        "weighted_f1": result.cnn.weighted_f1,
        "baseline_rf_macro_f1": None if result.baseline is None else result.baseline.macro_f1,
        "per_class_f1": dict(zip(result.class_names, result.cnn.f1, strict=True)),
    }
    meta.pop("train_config", None)
    meta["train_config"] = {k: v for k, v in asdict(cfg).items() if k not in ("library", "out")}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"default model written to {args.out}")


if __name__ == "__main__":
    main()
