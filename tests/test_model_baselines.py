"""The baselines evaluate trains beside our network: RF and GBM on shape features, a plain CNN."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from plankline.imaging.synth import make_roi_library
from plankline.model.baselines import (
    FEATURE_BASELINES,
    SMALL_CNN,
    feature_baselines,
    small_cnn_inputs,
    small_cnn_predict,
)
from plankline.model.data import list_images, read_image, split_indices
from plankline.model.evaluate import evaluate, feature_matrix, write_report
from sklearn.metrics import f1_score


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, np.ndarray, list, np.ndarray]:
    root = tmp_path_factory.mktemp("lib")
    make_roi_library(root, n_per_class=30, seed=9)
    files = list_images(root)
    names = sorted({f.parent.name for f in files})
    crops = [read_image(f) for f in files]
    labels = np.array([names.index(f.parent.name) for f in files])
    tr, va = split_indices(labels, 25, seed=0)
    return [crops[i] for i in tr], labels[tr], [crops[i] for i in va], labels[va]


def test_small_cnn_inputs_pad_to_a_square_with_the_background_and_keep_the_aspect() -> None:
    img = np.full((20, 60), 200, np.uint8)
    img[8:12, 10:50] = 20  # a dark bar, 4 x 40 px
    x = small_cnn_inputs([cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)], 96)
    assert x.shape == (1, 1, 96, 96) and x.dtype == np.float32
    dark = x[0, 0] < 0.5
    ys, xs = np.nonzero(dark)
    # 60 px -> 96 px: the bar is 1.6x longer and 1.6x thicker, the padding is background
    assert xs.max() - xs.min() + 1 == pytest.approx(64, abs=2)
    assert ys.max() - ys.min() + 1 == pytest.approx(6.4, abs=1.5)
    assert x[0, 0, 0, 0] == pytest.approx(200 / 255)


def test_feature_baselines_learn_the_synthetic_classes(split: tuple) -> None:
    xt, yt, xv, yv = split
    probs = feature_baselines(feature_matrix(xt), yt, feature_matrix(xv), 5, seed=0)
    assert list(probs) == list(FEATURE_BASELINES)
    for name, p in probs.items():
        assert p.shape == (len(yv), 5)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
        assert f1_score(yv, p.argmax(1), average="macro") > 0.6, name  # chance 0.2
    with pytest.raises(ValueError, match="unknown feature baselines"):
        feature_baselines(feature_matrix(xt), yt, feature_matrix(xv), 5, which=["SVM"])


def test_small_cnn_learns_the_synthetic_classes(split: tuple) -> None:
    xt, yt, xv, yv = split
    p, rate = small_cnn_predict(xt, yt, xv, 5, seed=0, epochs=25, size=32)
    assert p.shape == (len(yv), 5) and rate > 0
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    f1 = f1_score(yv, p.argmax(1), average="macro")
    assert f1 > 0.6, f1  # chance 0.2


def test_evaluate_report_shows_every_baseline_beside_the_network(
    split: tuple, tmp_path: Path
) -> None:
    xt, yt, xv, yv = split

    def predict(crops: list) -> np.ndarray:  # a "network" that always answers class 0
        out = np.zeros((len(crops), 5))
        out[:, 0] = 1
        return out

    res = evaluate(predict, xv, yv, list("abcde"), train_crops=xt, train_labels=yt)
    assert list(res.baselines) == ["RF", "GBM"]
    assert res.baseline is res.baselines["RF"]
    assert res.cnn.macro_f1 == pytest.approx(f1_score(yv, np.zeros_like(yv), average="macro"))
    text = write_report(tmp_path, res).read_text()
    assert "| RF on shape features |" in text and "| gradient boosting on shape features |" in text
    assert "difference (CNN - GBM)" in text
    assert SMALL_CNN not in res.baselines


def test_evaluate_report_scores_the_model_on_fainter_images(split: tuple, tmp_path: Path) -> None:
    """The report says what fainter imagery costs: here a "network" that sees only the
    organism's darkness, so it holds its accuracy at 0.6x contrast and loses it at 0.35x."""
    from plankline.model.evaluate import at_contrast

    xv = split[2]
    dark = np.array([float(np.median(c) - c.min()) for c in xv])
    cut = np.percentile(dark, 50)  # half the crops "class 1": the darker organisms

    def predict(crops: list) -> np.ndarray:
        out = np.zeros((len(crops), 5))
        depth = np.array([float(np.median(c) - c.min()) for c in crops])
        out[np.arange(len(crops)), np.where(depth > 0.5 * cut, 1, 0)] = 1
        return out

    labels = np.where(dark > 0.5 * cut, 1, 0)
    res = evaluate(predict, xv, labels, list("abcde"))
    assert res.cnn.accuracy == 1.0
    assert set(res.at_contrast) == {"0.6", "0.35"}
    faint = predict([at_contrast(c, 0.35) for c in xv]).argmax(1)
    assert res.at_contrast["0.35"]["accuracy"] == pytest.approx(np.mean(faint == labels), abs=1e-4)
    assert res.at_contrast["0.35"]["accuracy"] < res.at_contrast["0.6"]["accuracy"] <= 1.0
    text = write_report(tmp_path, res).read_text()
    assert "## Fainter imagery" in text and "| 0.35 |" in text
    assert "plankline train --contrast 0.65" in text
