"""Classifier quality: the sCNN against the random-forest feature baseline, same split.

Figures are printed (run with ``-s``) and recorded as junit properties.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from plankline.imaging.synth import make_roi_library
from plankline.model.evaluate import evaluate_checkpoint
from plankline.model.train import TrainConfig, checkpoint_path, load_checkpoint, train
from shared_data import DATA

FLOWCAM = DATA / "flowcam-planktonclas"
ZOOLAKE = DATA / "zoolake-spc-darkfield"


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


def _report(record_property: object, name: str, result: object) -> None:
    c, b = result.cnn, result.baseline  # type: ignore[attr-defined]
    line = (
        f"{name}: sCNN macro-F1 {c.macro_f1:.3f} acc {c.accuracy:.3f} | "
        f"RF baseline macro-F1 {b.macro_f1:.3f} acc {b.accuracy:.3f} | "
        f"n_test {result.n_test}"  # type: ignore[attr-defined]
    )
    print(line)
    record_property(name, line)  # type: ignore[operator]


@pytest.mark.skipif(not FLOWCAM.is_dir(), reason=f"real FlowCam ROIs not found at {FLOWCAM}")
def test_scnn_beats_the_feature_baseline_on_real_flowcam_rois(
    tmp_path: Path, record_property: object
) -> None:
    # default settings but the schedule, fixed seeded split (20 % of each class held out).
    # FlowCam's validation plateaus by epoch 6, so the previous default schedule (20 epochs
    # at lrd 0.1) keeps this test at half the cost of the default 40 (the default schedule's
    # figures on every set: scripts/eval_classifier.py)
    cfg = TrainConfig(library=str(FLOWCAM), out=str(tmp_path / "w"), seed=0, stop=20, lrd=0.1)
    hist = train(cfg)
    assert len(hist) == cfg.stop
    result, report = evaluate_checkpoint(tmp_path / "w", None, tmp_path / "report")
    _report(record_property, "flowcam", result)
    assert result.n_test == 22 and sorted(set(result.y_true)) == list(range(6))
    # measured 0.848 vs 0.746 on this split; 10 splits: 0.852 vs 0.781 (eval_classifier.py)
    assert result.cnn.macro_f1 >= result.baseline.macro_f1 + 0.05
    assert result.cnn.macro_f1 >= 0.8
    for f in ("confusion.png", "f1_vs_size.png", "confidence_hist.png", "per_class.csv"):
        assert (tmp_path / "report" / f).stat().st_size > 0
    assert "RF on shape features" in report.read_text()


def test_scnn_learns_the_synthetic_classes(tmp_path: Path, record_property: object) -> None:
    make_roi_library(tmp_path / "lib", n_per_class=40, seed=7)
    # one network, not the default three: whether it learns is the question here (the
    # ensemble's training and export are test_model_train's); 57 s instead of ~3 min
    cfg = TrainConfig(
        library=str(tmp_path / "lib"), out=str(tmp_path / "w"), stop=14, lrd=0.1, seed=0, members=1
    )
    train(cfg)
    result, _ = evaluate_checkpoint(tmp_path / "w", None, tmp_path / "report", tta=2)
    _report(record_property, "synthetic", result)
    assert result.n_test == 40
    assert result.cnn.macro_f1 >= 0.85
    assert result.cnn.macro_f1 >= result.baseline.macro_f1 - 0.05


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~1 min on a quiet 2-core machine (7.5 min, 1 thread, load 8)
@pytest.mark.skipif(not ZOOLAKE.is_dir(), reason=f"real dark-field ROIs not found at {ZOOLAKE}")
def test_a_real_dark_field_library_trains_without_settings(
    tmp_path: Path, record_property: object
) -> None:
    # Scripps Plankton Camera (bright organisms on black, colour), 35 classes of 10: read with
    # the bright-field convention the network learned nothing (the UVP set: macro-F1
    # 0.03, chance 0.03). No polarity setting is given: it must be detected. The schedule is
    # shortened (8 epochs decayed as far as the default's; the full default run and the
    # baselines are scripts/eval_classifier.py --data zoolake's job): measured 0.28 (RF 0.48)
    cfg = TrainConfig(library=str(ZOOLAKE), out=str(tmp_path / "w"), seed=0, stop=8, lrd=0.25)
    train(cfg)
    ck = load_checkpoint(checkpoint_path(tmp_path / "w", 8))
    assert ck["polarity"] == "dark"
    result, _ = evaluate_checkpoint(tmp_path / "w", None, tmp_path / "report")
    _report(record_property, "zoolake", result)
    assert result.n_test == 70
    assert result.cnn.macro_f1 >= 0.2  # 7x chance
    # the feature baselines measure the organisms, not the background, too
    assert result.baselines["RF"].macro_f1 >= 0.3
