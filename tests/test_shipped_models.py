"""The two models that ship in the package: the default (real ISIIS, 121 NDSB classes) used by
``plankline run`` and ``classify``, and the synthetic one ``plankline demo`` scores against its
generator's truth. Both are checked against data they never trained on."""

from __future__ import annotations

import functools
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from plankline.imaging.synth import SHAPE_CLASSES, make_roi_library
from plankline.model.data import list_images, model_inputs, read_image, split_indices
from plankline.model.evaluate import scores_at_contrast
from plankline.model.export import write_triton_repository
from plankline.model.infer import DEFAULT_MODEL_DIR, SYNTHETIC_MODEL_DIR, Classifier
from shared_data import DATA

NDSB = DATA / "ndsb-isiis"
needs_ndsb = pytest.mark.skipif(
    not NDSB.is_dir(), reason=f"real ISIIS set {NDSB} absent (see ../shared/data/README.md)"
)


@functools.cache  # read once for the tests that score the same images
def held_out_ndsb(every: int) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Every ``every``-th image of the default model's validation split, with labels.

    The split is re-drawn as training drew it (``split_indices`` over the library in
    ``load_library``'s order, the ``vsp`` and seed recorded in meta.json), so these images
    were never trained on; listing files is cheap, only the chosen ones are decoded.
    """
    meta = json.loads((DEFAULT_MODEL_DIR / "meta.json").read_text())
    cfg = meta["train_config"]
    names = sorted(p.name for p in NDSB.iterdir() if p.is_dir())
    files, labels = [], []
    for k, name in enumerate(names):
        found = list_images(NDSB / name)
        files += found
        labels += [k] * len(found)
    _, val = split_indices(np.asarray(labels), cfg["vsp"], seed=cfg["seed"])
    pick = val[::every]
    return [read_image(files[i]) for i in pick], np.asarray(labels)[pick], names


def test_default_model_is_the_isiis_one_with_its_evaluation_and_source() -> None:
    clf = Classifier.load()
    meta = clf.meta
    assert DEFAULT_MODEL_DIR != SYNTHETIC_MODEL_DIR
    assert len(clf.class_names) == 121 and "detritus_other" in clf.class_names
    assert meta.get("polarity", "bright") == "bright" and clf.shapes
    assert "National Data Science Bowl" in meta["training"]["data"]
    assert "NCEI" in meta["training"]["licence"]
    ev = meta["evaluation"]
    assert ev["validation_images"] > 2_500 and len(ev["per_class_f1"]) == 121
    # the report's figures, as trained: far above guessing the largest class (1,979 of 30,336)
    assert ev["accuracy"] > 0.4 and ev["macro_f1"] > 0.3 and ev["log_loss"] < 2.5
    assert set(clf.thresholds) == set(clf.class_names)
    assert (DEFAULT_MODEL_DIR / "model.onnx").stat().st_size < 5_000_000
    assert (DEFAULT_MODEL_DIR / "EVALUATION.md").is_file()


@needs_ndsb
def test_default_model_reproduces_its_accuracy_and_log_loss_on_held_out_isiis_vignettes() -> None:
    crops, labels, names = held_out_ndsb(every=10)
    clf = Classifier.load(DEFAULT_MODEL_DIR, providers=["CPUExecutionProvider"], threads=1)
    assert clf.class_names == names
    probs = clf.predict(crops)
    ev = clf.meta["evaluation"]
    accuracy = float((probs.argmax(1) == labels).mean())
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-15, 1.0)
    log_loss = float(-np.log(p).mean())
    # ~300 of the ~3,000 held-out images: binomial sd of the accuracy ~0.03
    assert len(labels) > 250
    assert abs(accuracy - ev["accuracy"]) < 0.1, (accuracy, ev["accuracy"])
    assert log_loss < ev["log_loss"] + 0.4, (log_loss, ev["log_loss"])


@needs_ndsb
def test_default_model_keeps_its_accuracy_on_fainter_organisms() -> None:
    # Another ISIIS camera, gain or lamp shows the same organisms fainter. The model trained
    # without contrast augmentation fell from 0.59 to 0.45 at 0.6x and 0.17 at 0.35x (most
    # of them called diatom_chain_string), as on the MBARI frame's faint specks.
    crops, labels, _ = held_out_ndsb(every=10)
    clf = Classifier.load(DEFAULT_MODEL_DIR, providers=["CPUExecutionProvider"], threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one held-out vignette looks dark-field
        got = scores_at_contrast(clf.predict, crops, labels, (1.0, 0.6, 0.35))
    clean = got["1"]["accuracy"]
    assert got["0.6"]["accuracy"] > clean - 0.06, got
    assert got["0.35"]["accuracy"] > 0.8 * clean, got
    recorded = clf.meta["evaluation"]["at_contrast"]  # the whole held-out split, as trained
    assert recorded["0.35"]["accuracy"] > 0.85 * recorded["1"]["accuracy"]


@needs_ndsb
def test_default_model_triton_repository_gives_the_same_probabilities(tmp_path: Path) -> None:
    crops, _, _ = held_out_ndsb(every=200)
    root = write_triton_repository(DEFAULT_MODEL_DIR, tmp_path)
    assert (root / "labels.txt").read_text() == (DEFAULT_MODEL_DIR / "labels.txt").read_text()
    spec = importlib.util.spec_from_file_location("triton_model", root / "1" / "model.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    clf = Classifier.load(DEFAULT_MODEL_DIR, providers=["CPUExecutionProvider"])
    x, f = model_inputs(
        crops, clf.canvas, shapes=True, polarity=clf.polarity, colour=clf.colour, fill=clf.fill
    )
    got = mod.run_onnx(mod.open_session(str(root / "1"), 1), x, f)
    assert got.shape == (len(crops), 121)
    np.testing.assert_allclose(got, clf.predict(crops), atol=1e-5)


def test_demo_model_names_the_generators_classes_and_classifies_new_ones(tmp_path: Path) -> None:
    clf = Classifier.load(SYNTHETIC_MODEL_DIR, providers=["CPUExecutionProvider"], threads=1)
    assert clf.class_names == sorted(SHAPE_CLASSES)
    make_roi_library(tmp_path, n_per_class=12, seed=12345)  # the model trained on seed 0
    files = list_images(tmp_path)
    truth = np.asarray([clf.class_names.index(p.parent.name) for p in files])
    probs = clf.predict([read_image(p) for p in files])
    assert float((probs.argmax(1) == truth).mean()) >= 0.9
