"""One reader of a model folder (model/card.py) for every user: classifier, Triton, collector."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from plankline.model.card import read_model_card
from plankline.model.infer import DEFAULT_MODEL_DIR, SYNTHETIC_MODEL_DIR, Classifier


@pytest.mark.parametrize("folder", [DEFAULT_MODEL_DIR, SYNTHETIC_MODEL_DIR])
def test_the_card_says_what_the_loaded_classifier_uses(folder: Path) -> None:
    card = read_model_card(folder)
    clf = Classifier.load(folder, threads=1)
    assert card.class_names == clf.class_names and card.thresholds == clf.thresholds
    assert (card.canvas, card.shapes, card.polarity) == (clf.canvas, clf.shapes, clf.polarity)
    inputs = {i.name: i.shape for i in clf.session.get_inputs()}
    assert inputs["features"][1] == card.n_features
    assert clf.session.get_outputs()[0].shape[1] == len(card.class_names)


def test_a_broken_folder_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(SYNTHETIC_MODEL_DIR, folder)
    thresholds = json.loads((folder / "thresholds.json").read_text())
    first = read_model_card(folder).class_names[0]
    del thresholds["thresholds"][first]
    (folder / "thresholds.json").write_text(json.dumps(thresholds))
    with pytest.raises(ValueError, match=f"no threshold for classes \\['{first}'\\]"):
        read_model_card(folder)
    (folder / "labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks labels\.txt"):
        read_model_card(folder)
    with pytest.raises(FileNotFoundError, match=r"lacks labels\.txt"):
        Classifier.load(folder)
