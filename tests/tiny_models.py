"""The tests' tiny classifier: one epoch of a small network, seconds on one core."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plankline.imaging.synth import make_roi_library
from plankline.model.export import export_model
from plankline.model.train import TrainConfig, checkpoint_path, train

TINY = {"stop": 1, "bs": 8, "canvas": 32, "width": 4, "layers": 4, "min_epoch_images": 16}
"""Settings that keep a test's training to seconds; every image trains (``vsp=0``)."""


def tiny_model(root: Path, **overrides: Any) -> tuple[Path, Path, Path]:
    """A synthetic library in ``root/lib``, :data:`TINY` trained on it (``overrides`` win)
    into ``root/weights`` and exported to ``root/model``; returns those three folders."""
    lib, weights, model = root / "lib", root / "weights", root / "model"
    make_roi_library(lib, n_per_class=6, seed=3)
    train(TrainConfig(library=str(lib), out=str(weights), **{**TINY, "vsp": 0, **overrides}))
    export_model(checkpoint_path(weights, 1), model)
    return lib, weights, model
