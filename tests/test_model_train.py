"""Training loop: the seed's schedule, checkpoints, resume and library checks."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from plankline.imaging.synth import make_roi_library
from plankline.model.train import (
    TrainConfig,
    checkpoint_path,
    learning_rate,
    load_checkpoint,
    train,
)


@pytest.fixture(scope="module")
def tiny_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lib")
    make_roi_library(root, n_per_class=8, seed=1)
    return root


def _cfg(lib: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(
        library=str(lib),
        out=str(out),
        stop=2,
        bs=8,
        canvas=32,
        width=4,
        layers=4,
        min_epoch_images=24,
        vsp=25,
        workers=0,
        seed=5,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_learning_rate_follows_ilr_exp_minus_lrd_epoch() -> None:
    assert learning_rate(0.01, 0.1, 0) == pytest.approx(0.01)
    assert learning_rate(0.01, 0.1, 10) == pytest.approx(0.01 * math.exp(-1))
    assert learning_rate(0.01, 0.0, 99) == pytest.approx(0.01)


def test_log_and_checkpoints_record_each_epoch_with_scheduled_lr(
    tiny_library: Path, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_library, tmp_path, ilr=0.004, lrd=0.5)
    hist = train(cfg)
    assert [h.epoch for h in hist] == [1, 2]
    assert [h.lr for h in hist] == pytest.approx([0.004, 0.004 * math.exp(-0.5)])
    assert checkpoint_path(tmp_path, 1).is_file() and checkpoint_path(tmp_path, 2).is_file()
    rows = list(csv.DictReader((tmp_path / "train_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val_mistakes_pct"]) <= 100 and float(r["train_nll"]) > 0 for r in rows)
    assert (tmp_path / "labels.txt").read_text().split() == sorted(
        ["copepod", "protist", "diatom_chain", "larval_fish", "marine_snow"]
    )


def test_resuming_from_epoch_n_gives_the_same_weights_as_an_uninterrupted_run(
    tiny_library: Path, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    train(_cfg(tiny_library, a, stop=3))
    train(_cfg(tiny_library, b, stop=2))
    # resumed part runs with a DataLoader worker process: the result must not depend on it
    train(_cfg(tiny_library, b, start=2, stop=3, workers=1))
    wa = load_checkpoint(checkpoint_path(a, 3))["model"]
    wb = load_checkpoint(checkpoint_path(b, 3))["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6, msg=k)
    # and training did change the weights
    w2 = load_checkpoint(checkpoint_path(b, 2))["model"]
    assert any(not torch.equal(w2[k], wb[k]) for k in wb if wb[k].is_floating_point())


def test_start_equal_to_stop_trains_nothing(tiny_library: Path, tmp_path: Path) -> None:
    train(_cfg(tiny_library, tmp_path, stop=1))
    before = checkpoint_path(tmp_path, 1).read_bytes()
    assert train(_cfg(tiny_library, tmp_path, start=1, stop=1)) == []
    assert checkpoint_path(tmp_path, 1).read_bytes() == before
    assert not checkpoint_path(tmp_path, 2).exists()


def test_resume_refuses_a_library_with_other_classes(tiny_library: Path, tmp_path: Path) -> None:
    train(_cfg(tiny_library, tmp_path, stop=1))
    other = tmp_path / "other"
    make_roi_library(other, n_per_class=4, seed=2, classes=("copepod", "protist"))
    with pytest.raises(ValueError, match="classes"):
        train(_cfg(other, tmp_path, start=1, stop=2))


def test_bad_settings_are_refused_naming_the_field(tiny_library: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="start"):
        train(_cfg(tiny_library, tmp_path, start=3, stop=2))
    with pytest.raises(ValueError, match="balance"):
        train(_cfg(tiny_library, tmp_path, balance="magic"))
    with pytest.raises(ValueError, match="stem"):
        train(_cfg(tiny_library, tmp_path, stem="magic"))
