"""The model card: what a model folder says about its model, read in one place.

A model folder (``plankline export``; shipped ones in ``plankline/models/<name>``)
holds ``model.onnx``, ``labels.txt`` (one class per line), ``meta.json``
(canvas, inputs, polarity, training figures) and optionally ``thresholds.json``
(per-class probability thresholds). Everything that needs to know the classes,
the input size, the inputs or the thresholds (the ONNX Runtime classifier, the
Triton client, the Triton repository writer, the stream's collector) reads
them through :func:`read_model_card`, so a folder is checked the same way
everywhere and nothing loads a whole ONNX session just to learn class names.

Example
-------
>>> from plankline.model.infer import SYNTHETIC_MODEL_DIR
>>> card = read_model_card(SYNTHETIC_MODEL_DIR)
>>> card.canvas, len(card.class_names) > 1, card.polarity
(64, True, 'bright')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

#: Files every model folder has (``thresholds.json`` is optional).
REQUIRED_FILES = ("model.onnx", "labels.txt", "meta.json")


LEGACY_MIN_OBJECT_PX = 8
"""The size gate of models whose ``meta.json`` has no ``min_object_px``."""


@dataclass(frozen=True)
class ModelCard:
    """A model folder's description (no model loaded).

    Attributes
    ----------
    folder : Path
        The model folder.
    class_names : list of str
        ``labels.txt``: the order of the model's outputs.
    meta : dict
        ``meta.json`` as written by the export.
    thresholds : dict or None
        ``thresholds.json``'s per-class thresholds (a value may be None: the class is
        never thresholded), or None without that file.
    """

    folder: Path
    class_names: list[str]
    meta: dict[str, Any]
    thresholds: dict[str, float | None] | None

    @property
    def onnx_path(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def labels_path(self) -> Path:
        return self.folder / "labels.txt"

    @property
    def canvas(self) -> int:
        """Side of the square input image the network takes, in pixels."""
        return int(self.meta["canvas"])

    @property
    def shapes(self) -> bool:
        """Whether the model also takes the shape measurements as features."""
        return bool(self.meta.get("shapes", False))

    @property
    def colour(self) -> bool:
        """Whether the model also takes the organism's colour (models before it: no)."""
        return bool(self.meta.get("colour", False))

    @property
    def polarity(self) -> str:
        """Imager convention of the training images (``bright`` for models from before it
        was recorded)."""
        return str(self.meta.get("polarity", "bright"))

    @property
    def fill(self) -> int:
        """Crops smaller than this are enlarged to it on the canvas (0: models before it)."""
        return int(self.meta.get("fill", 0))

    @property
    def min_object_px(self) -> int:
        """The model's size gate: ROIs whose longer side is under it are not shown to it
        (``plankline run``'s ``classify_min_px`` by default; set at training from its
        objects, ``data.min_object_px``). Models from before it: 8, the gate they ran with."""
        return int(self.meta.get("min_object_px", LEGACY_MIN_OBJECT_PX))

    @property
    def n_features(self) -> int:
        """Length of the ``features`` input (``meta.json`` ``features``)."""
        return len(self.meta.get("features", []))

    def inputs(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The network's inputs for raw ROIs as this model was trained to see them.

        ``model.data.checked_model_inputs`` with the card's canvas, inputs,
        polarity and fill: image, features, and which crops look like the
        other polarity. Every inference path (ONNX Runtime, Triton) calls this.
        """
        from plankline.model.data import checked_model_inputs

        return checked_model_inputs(
            crops,
            self.canvas,
            shapes=self.shapes,
            polarity=self.polarity,
            colour=self.colour,
            fill=self.fill,
        )


def read_model_card(model_dir: Path | str) -> ModelCard:
    """Read and check a model folder's card (labels, meta, thresholds).

    Parameters
    ----------
    model_dir : Path or str
        The model folder.

    Returns
    -------
    ModelCard

    Raises
    ------
    FileNotFoundError
        A required file is missing (named).
    ValueError
        ``meta.json`` has no ``canvas``, ``labels.txt`` names no class, or
        ``thresholds.json`` lacks a class (named).
    """
    folder = Path(model_dir)
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"model folder {folder} lacks {name}")
    names = [ln for ln in (folder / "labels.txt").read_text().splitlines() if ln.strip()]
    if not names:
        raise ValueError(f"{folder / 'labels.txt'} names no class")
    meta = json.loads((folder / "meta.json").read_text())
    if "canvas" not in meta:
        raise ValueError(f"{folder / 'meta.json'} has no canvas (input size)")
    thresholds = None
    path = folder / "thresholds.json"
    if path.is_file():
        thresholds = json.loads(path.read_text())["thresholds"]
        missing = set(names) - set(thresholds)
        if missing:
            raise ValueError(f"{path} has no threshold for classes {sorted(missing)}")
    return ModelCard(folder, names, meta, thresholds)
