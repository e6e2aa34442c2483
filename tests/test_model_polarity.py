"""Polarity without settings: bright- and dark-field libraries train, export and classify alike.

A bright-field imager (ISIIS, FlowCam, ZooScan) records dark organisms on a bright
background, a dark-field one (UVP, the Scripps Plankton Camera) bright organisms on
black. Training detects the library's polarity, the model folder records it, and
inference normalises every ROI to the same internal convention and warns about ROIs
that look like the other one.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from plankline.imaging.synth import make_roi_library
from plankline.model.data import (
    checked_model_inputs,
    detect_polarity,
    library_polarity,
    list_images,
    load_library,
    model_inputs,
    normalize_crop,
    read_image,
    to_bright_field,
)
from plankline.model.evaluate import at_contrast, evaluate_checkpoint
from plankline.model.export import export_model
from plankline.model.infer import Classifier
from plankline.model.train import TrainConfig, checkpoint_path, load_checkpoint, train
from shared_data import DATA


def _organism(seed: int, bg: int = 215, fg: int = 35) -> np.ndarray:
    """A noisy dark ellipse with a thin bright halo, as FlowCam draws them."""
    rng = np.random.default_rng(seed)
    img = np.full((48, 40), bg, np.uint8)
    cv2.ellipse(img, (20, 24), (12, 7), int(rng.integers(180)), 0, 360, 255, 3)  # halo
    cv2.ellipse(img, (20, 24), (11, 6), int(rng.integers(180)), 0, 360, fg, -1)
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _invert_library(src: Path, dst: Path) -> Path:
    for f in list_images(src):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), 255 - read_image(f))
    return dst


def test_polarity_of_a_dark_organism_with_a_bright_halo_and_of_its_inversion() -> None:
    for seed in range(10):
        img = _organism(seed)
        assert detect_polarity(img) == "bright"
        assert detect_polarity(255 - img) == "dark"
        assert detect_polarity(cv2.cvtColor(255 - img, cv2.COLOR_GRAY2BGR)) == "dark"
        assert detect_polarity((255 - img).astype(np.uint16) * 257) == "dark"


def test_a_uniform_crop_is_decided_by_the_background_level() -> None:
    assert detect_polarity(np.full((10, 10), 230, np.uint8)) == "bright"
    assert detect_polarity(np.full((10, 10), 12, np.uint8)) == "dark"


def test_dark_field_crops_normalise_to_exactly_what_their_bright_field_inversion_gives() -> None:
    for seed in range(5):
        img = _organism(seed)
        np.testing.assert_array_equal(normalize_crop(255 - img, "dark"), normalize_crop(img))
    x_dark, f_dark = model_inputs([255 - _organism(1)], 64, shapes=True, polarity="dark")
    x_bright, f_bright = model_inputs([_organism(1)], 64, shapes=True)
    np.testing.assert_array_equal(x_dark, x_bright)
    np.testing.assert_array_equal(f_dark, f_bright)


def test_bright_field_preprocessing_is_unchanged_so_existing_models_stay_valid() -> None:
    # the formula every model before polarity detection was trained with
    for seed in range(5):
        img = cv2.cvtColor(_organism(seed), cv2.COLOR_GRAY2BGR)
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        bg = float(np.median(np.concatenate((g[0], g[-1], g[:, 0], g[:, -1]))))
        old = np.maximum(np.subtract(bg, g, dtype=np.float32) * np.float32(1 / 255), 0)
        assert normalize_crop(img).tobytes() == old.tobytes()
        x, f, disagree = checked_model_inputs([img], 48, shapes=True, polarity="bright")
        x0, f0 = model_inputs([img], 48, shapes=True)
        assert x.tobytes() == x0.tobytes() and f.tobytes() == f0.tobytes() and not disagree[0]


def test_to_bright_field_inverts_only_dark_field_crops() -> None:
    img = _organism(0)
    assert to_bright_field(img, "bright") is img
    np.testing.assert_array_equal(to_bright_field(255 - img, "dark"), img)
    with pytest.raises(ValueError, match="polarity"):
        normalize_crop(img, "grey")


def test_library_polarity_is_the_majority_and_counts_the_dissenters() -> None:
    crops = [_organism(s) for s in range(7)] + [255 - _organism(s) for s in range(2)]
    assert library_polarity(crops) == ("bright", 2)
    assert library_polarity([255 - c for c in crops]) == ("dark", 2)


@pytest.fixture(scope="module")
def both_libraries(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("polarity")
    make_roi_library(root / "bright", n_per_class=24, seed=4)
    return root / "bright", _invert_library(root / "bright", root / "dark")


def test_an_inverted_library_is_detected_dark_and_reads_as_the_original(
    both_libraries: tuple[Path, Path],
) -> None:
    bright, dark = both_libraries
    a, b = load_library(bright), load_library(dark)
    assert (a.polarity, b.polarity) == ("bright", "dark")
    assert a.class_names == b.class_names and (a.labels == b.labels).all()
    for ca, cb in zip(a.crops, b.crops, strict=True):
        np.testing.assert_array_equal(ca, cb)
    # forcing the wrong convention makes the background the organism
    wrong = load_library(dark, polarity="bright")
    assert np.mean([c.mean() for c in wrong.crops]) < 0.02 < np.mean([c.mean() for c in b.crops])


def test_an_inverted_library_trains_to_the_same_network_and_exports_its_polarity(
    both_libraries: tuple[Path, Path], tmp_path: Path
) -> None:
    # Both read as the same normalised crops, so with the same seed training ends with the
    # same weights and every score is equal (on real sets, scripts/eval_classifier.py
    # shows inverted copies scoring as their originals).
    results, weights = {}, {}
    for name, lib in zip(("bright", "dark"), both_libraries, strict=True):
        cfg = TrainConfig(
            library=str(lib),
            out=str(tmp_path / name),
            stop=2,
            canvas=32,
            width=4,
            layers=4,
            members=1,
            min_epoch_images=64,
            seed=2,
        )
        train(cfg)
        ck = load_checkpoint(checkpoint_path(tmp_path / name, 2))
        assert ck["polarity"] == name
        weights[name] = ck["ema"]
        results[name], _ = evaluate_checkpoint(tmp_path / name, None, tmp_path / f"{name}_rep")
        export_model(checkpoint_path(tmp_path / name, 2), tmp_path / f"{name}_model")
        meta = json.loads((tmp_path / f"{name}_model" / "meta.json").read_text())
        assert meta["polarity"] == name
    for k, v in weights["bright"].items():
        assert torch.equal(v, weights["dark"][k]), k
    b, d = results["bright"], results["dark"]
    np.testing.assert_allclose(b.probs, d.probs, atol=1e-6)
    assert b.cnn.macro_f1 == d.cnn.macro_f1
    # the feature baselines measure the same organisms too
    assert b.baselines["RF"].macro_f1 == d.baselines["RF"].macro_f1 > 0.5  # chance: 0.2


def test_classifier_normalises_with_its_polarity_and_warns_once_with_a_count(
    both_libraries: tuple[Path, Path], tmp_path: Path
) -> None:
    bright, dark = both_libraries
    train(
        TrainConfig(
            library=str(dark),
            out=str(tmp_path / "w"),
            stop=1,
            canvas=32,
            width=4,
            layers=4,
            members=1,
            min_epoch_images=16,
            vsp=0,
        )
    )
    export_model(checkpoint_path(tmp_path / "w", 1), tmp_path / "m")
    clf = Classifier.load(tmp_path / "m")
    assert clf.polarity == "dark"
    dark_crops = [read_image(p) for p in list_images(dark)[:20]]
    bright_crops = [read_image(p) for p in list_images(bright)[:20]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p_dark = clf.predict(dark_crops)
        clf.predict(dark_crops[:20] + bright_crops[:1])  # one odd ROI in 21: counted only
    with pytest.warns(
        UserWarning, match=r"7 of 27 ROIs look bright-field .* trained on dark-field"
    ):
        clf.predict(dark_crops[:20] + bright_crops[:7])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: later mismatches are counted only
        clf.predict(bright_crops[:5])
    assert (clf.polarity_checked, clf.polarity_mismatched) == (73, 13)
    assert p_dark.shape == (20, 5)


def test_classify_command_reports_every_roi_of_the_other_polarity(
    both_libraries: tuple[Path, Path], tmp_path: Path
) -> None:
    # The classifier warns once per process, at its first such batch ("further mismatches
    # are counted"): the command must give the total, from every worker, folder and tars.
    from plankline.cli import app
    from plankline.outputs.rois import write_roi_tar
    from typer.testing import CliRunner

    bright, dark = both_libraries
    cfg = dict(stop=1, canvas=32, width=4, layers=4, members=1, min_epoch_images=16, vsp=0)
    train(TrainConfig(library=str(dark), out=str(tmp_path / "w"), **cfg))  # type: ignore[arg-type]
    export_model(checkpoint_path(tmp_path / "w", 1), tmp_path / "m")
    files = list_images(bright)[:40]
    tars = tmp_path / "tars"
    tars.mkdir()
    for k in range(4):
        part = files[10 * k : 10 * k + 10]
        write_roi_tar(tars / f"part{k}.tar", [f.stem for f in part], [read_image(f) for f in part])
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in files:
        (flat / f.name).write_bytes(f.read_bytes())
    model = ["--model", str(tmp_path / "m"), "--cpu", "--workers", "2", "--batch-size", "8"]
    total = (
        "warning: 40 of 40 ROIs look bright-field (dark organisms on a bright background), but "
        "the model was trained on dark-field (bright organisms on a dark background) images"
    )
    for source, out in ((flat, tmp_path / "flat.csv"), (tars, tmp_path / "csv")):
        res = CliRunner().invoke(app, ["classify", "-i", str(source), "-o", str(out), *model])
        assert res.exit_code == 0, res.output
        assert any(line.startswith(total) for line in res.output.splitlines()), res.output
    # a few odd ROIs among the model's own polarity (a crop cut through an organism) are no
    # other imager: counted, not reported (MISMATCH_SHARE, as the classifier's warning)
    for f in files[:3]:
        (tmp_path / "own" / "odd").mkdir(parents=True, exist_ok=True)
        (tmp_path / "own" / "odd" / f.name).write_bytes(f.read_bytes())
    for f in list_images(dark):
        (tmp_path / "own" / f.name).write_bytes(f.read_bytes())
    res = CliRunner().invoke(
        app, ["classify", "-i", str(tmp_path / "own"), "-o", str(tmp_path / "own.csv"), *model]
    )
    assert res.exit_code == 0 and "look bright-field" not in res.output, res.output


def test_train_and_evaluate_commands_on_a_dark_field_library(
    both_libraries: tuple[Path, Path], tmp_path: Path
) -> None:
    from plankline.cli import app
    from typer.testing import CliRunner

    _, dark = both_libraries
    w = tmp_path / "w"
    args = ["--stop", "1", "--canvas", "32", "--width", "4", "--members", "1"]
    res = CliRunner().invoke(app, ["train", str(dark), "--out", str(w), *args])
    assert res.exit_code == 0, res.output
    assert "images read as dark-field (--polarity auto)" in res.output
    res = CliRunner().invoke(app, ["evaluate", str(w), "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| RF on shape features |" in text and "| gradient boosting on shape features |" in text
    res = CliRunner().invoke(app, ["train", str(dark), "--out", str(w), "--polarity", "grey"])
    assert res.exit_code != 0 and "polarity must be 'auto' or one of" in res.output


REAL = {
    "ndsb-isiis": "bright",
    "flowcam-vicko": "bright",
    "flowcam-planktonclas": "bright",
    "zooscan-ecotaxa-template": "bright",
    "zoolake-spc-darkfield": "dark",
}


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data sets not found at {DATA}")
@pytest.mark.parametrize("name", sorted(REAL))
def test_per_image_polarity_is_right_on_real_sets_and_on_their_inversions(name: str) -> None:
    folder = DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    files = list_images(folder)
    rng = np.random.default_rng(0)
    imgs = [read_image(files[i]) for i in rng.choice(len(files), min(400, len(files)), False)]
    want, other = REAL[name], "dark" if REAL[name] == "bright" else "bright"
    right = np.mean([detect_polarity(i) == want for i in imgs])
    right_inverted = np.mean([detect_polarity(255 - i) == other for i in imgs])
    # measured on 1,500 per set: all right except 21 near-empty FlowCam-vicko crops (1.4 %)
    assert right >= 0.97 and right_inverted >= 0.97, (right, right_inverted)
    assert library_polarity(imgs)[0] == want


def test_at_contrast_scales_the_organisms_departure_from_either_background() -> None:
    bright = np.full((30, 40), 230, np.uint8)
    bright[10:20, 10:30] = 30
    half = at_contrast(bright, 0.5)
    assert half[0, 0] == 230 and half[15, 15] == 130  # 230 + 0.5 * (30 - 230)
    dark = 255 - bright  # dark-field: the organism brighter than its background
    np.testing.assert_array_equal(at_contrast(dark, 0.5), 255 - half)
    colour = np.dstack([bright, bright // 2, bright])
    assert at_contrast(colour, 0.5)[15, 15].tolist() == [130, 65, 130]
    deep = bright.astype(np.uint16) * 257
    assert at_contrast(deep, 2.0)[15, 15] == 0 and at_contrast(deep, 1.0)[0, 0] == 230 * 257
    np.testing.assert_array_equal(at_contrast(bright, 1.0), bright)
    with pytest.raises(ValueError, match="float32"):
        at_contrast(bright.astype(np.float32), 0.5)
