"""The classifier's size gate: ROIs smaller than ``classify_min_px`` (by default the model's
own, from its training objects) never reach the network and are labelled
``below_model_size``; every other ROI gets exactly the
probabilities the model gives it alone. Checked with the shipped synthetic model on
rendered organisms and specks (no data folder needed, ~2 s)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from plankline.config import PipelineSettings
from plankline.imaging.segment import Rois
from plankline.imaging.synth import render_organism
from plankline.model.card import LEGACY_MIN_OBJECT_PX
from plankline.model.data import min_object_px, object_measurements
from plankline.model.infer import (
    BELOW_MODEL_SIZE,
    SYNTHETIC_MODEL_DIR,
    Classifier,
    gated_classes,
    predict_gated,
    thresholded_classes,
)
from plankline.pipeline import class_columns, classify_rois, size_gate


@pytest.fixture(scope="module")
def model() -> Classifier:
    return Classifier.load(SYNTHETIC_MODEL_DIR, threads=1)


def _rois() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Organisms of 10-60 px and 3-7 px specks, padded by 6 px as the segmentation pads."""
    rng = np.random.default_rng(0)
    crops, heights, widths = [], [], []
    for k in range(12):
        if k % 3 == 0:  # a speck: a dark blob of s x s px
            s = int(rng.integers(3, 8))
            img = np.full((s, s), 255, np.uint8)
            img[:, :] = rng.integers(60, 140, (s, s)).astype(np.uint8)
            mask_h, mask_w = s, s
        else:
            kind = ("copepod", "protist", "larval_fish", "marine_snow")[k % 4]
            img, mask = render_organism(kind, rng, int(rng.integers(10, 60)))
            ys, xs = np.nonzero(mask)
            mask_h, mask_w = int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1
        crops.append(np.pad(img, 6, constant_values=255))
        heights.append(mask_h)
        widths.append(mask_w)
    return crops, np.array(heights), np.array(widths)


def test_rois_under_the_gate_are_below_model_size_and_the_rest_get_the_models_answer(
    model: Classifier,
) -> None:
    crops, h, w = _rois()
    probs = predict_gated(model, crops, h, w, 8)
    names, thresholds = gated_classes(model.class_names, model.thresholds, 8)
    assert names == [*model.class_names, BELOW_MODEL_SIZE]
    small = np.maximum(h, w) < 8
    assert 0 < small.sum() < len(crops)
    assert probs.shape == (len(crops), len(names))
    assert np.array_equal(probs[small], np.eye(len(names), dtype=np.float32)[[-1] * small.sum()])
    # the others: the model's own probabilities, to the bit, and no weight on the gate class
    alone = model.predict([c for c, s in zip(crops, small, strict=True) if not s])
    assert np.array_equal(probs[~small, :-1], alone)
    assert not probs[~small, -1].any()
    # thresholded_class says why a speck has no taxon
    thr = thresholded_classes(probs, names, thresholds)
    assert [t for t, s in zip(thr, small, strict=True) if s] == [BELOW_MODEL_SIZE] * small.sum()


def test_gate_zero_classifies_every_roi_with_the_models_columns(model: Classifier) -> None:
    crops, h, w = _rois()
    assert np.array_equal(predict_gated(model, crops, h, w, 0), model.predict(crops))
    assert gated_classes(model.class_names, model.thresholds, 0)[0] == model.class_names


def test_the_pipeline_gates_on_the_objects_bbox_by_the_setting(model: Classifier) -> None:
    crops, h, w = _rois()
    n = len(crops)
    zeros = np.zeros(n, np.int64)
    rois = Rois(
        frame=zeros, line=zeros, row=zeros, column=zeros, height=h, width=w,
        area_px=zeros, pad_top=zeros + 6, pad_left=zeros + 6, crops=crops,
        masks=[np.ones(c.shape, bool) for c in crops],
    )  # fmt: skip
    settings = PipelineSettings(classify_min_px=20)
    probs = classify_rois(model, rois, settings)
    names, _ = class_columns(model, settings)
    top = [names[k] for k in probs.argmax(axis=1)]
    assert [t == BELOW_MODEL_SIZE for t in top] == list(np.maximum(h, w) < 20)


def test_by_default_the_gate_is_the_models_own(model: Classifier, tmp_path: Path) -> None:
    # a copy of the model whose meta.json says its objects were at least 20 px
    folder = tmp_path / "model"
    shutil.copytree(SYNTHETIC_MODEL_DIR, folder)
    meta = json.loads((folder / "meta.json").read_text())
    assert "min_object_px" not in meta  # a model from before the gate was recorded: 8
    assert model.card.min_object_px == LEGACY_MIN_OBJECT_PX == 8
    (folder / "meta.json").write_text(json.dumps({**meta, "min_object_px": 20}))
    own = Classifier.load(folder, threads=1)
    assert own.card.min_object_px == 20
    settings = PipelineSettings()
    assert settings.classify_min_px is None
    assert size_gate(own, settings) == 20 and size_gate(own.card, settings) == 20
    assert size_gate(model, settings) == 8
    # a setting overrides the model's gate, 0 turns it off
    assert size_gate(own, PipelineSettings(classify_min_px=5)) == 5
    assert size_gate(own, PipelineSettings(classify_min_px=0)) == 0


def test_a_models_gate_holds_back_at_most_two_percent_of_its_training_objects() -> None:
    # normalised crops (organism > 0) of square objects of known sides: 4 px specks among
    # 10-29 px objects; up to 2 % of them are held back by the gate, more are its objects
    def crops(specks: int) -> list[np.ndarray]:
        out = []
        for s in [4] * specks + [10 + k % 20 for k in range(100 - specks)]:
            c = np.zeros((s + 8, s + 8), np.float32)
            c[4 : 4 + s, 4 : 4 + s] = 0.5
            out.append(c)
        return out

    assert min_object_px(object_measurements(crops(0))) == 10
    assert min_object_px(object_measurements(crops(2))) == 10
    assert min_object_px(object_measurements(crops(3))) == 4
    no_object = [np.zeros((9, 9), np.float32)]
    assert min_object_px(object_measurements(no_object)) == 0  # no gate
    assert min_object_px(object_measurements([])) == 0


def test_a_model_with_a_class_named_like_the_gate_is_refused() -> None:
    with pytest.raises(ValueError, match=BELOW_MODEL_SIZE):
        gated_classes(["copepod", BELOW_MODEL_SIZE], None, 8)


def test_a_run_logs_its_classifier_and_the_gate_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from plankline.batch.run import _log_classifier
    from plankline.config import BatchSettings

    caplog.set_level(logging.INFO, logger="plankline.batch")
    _log_classifier(BatchSettings(project=tmp_path, model=SYNTHETIC_MODEL_DIR))
    _log_classifier(BatchSettings(project=tmp_path, model=SYNTHETIC_MODEL_DIR, classify_min_px=5))
    _log_classifier(BatchSettings(project=tmp_path, model=tmp_path / "no-model"))  # chunks say
    assert caplog.messages == [
        f"classifier {SYNTHETIC_MODEL_DIR}: size gate 8 px (the model's own)",
        f"classifier {SYNTHETIC_MODEL_DIR}: size gate 5 px (classify_min_px)",
    ]
