"""Starting a training from a model folder: the trunk read back from ONNX is the trunk
that was exported, calibration keeps the function, a mismatch names the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from plankline.imaging.synth import make_roi_library
from plankline.model.data import load_library, model_inputs
from plankline.model.pretrained import calibrate, load_trunk
from plankline.model.train import TrainConfig, checkpoint_path, load_checkpoint, network, train
from tiny_models import TINY, tiny_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny exported ensemble of the CLI's depth (its conv channels padded by the export)
    and its library."""
    lib, _weights, model = tiny_model(tmp_path_factory.mktemp("pre"), members=2, width=3, layers=8)
    return lib, model


def _inputs(lib: Path, model: Path) -> tuple[np.ndarray, np.ndarray]:
    meta = json.loads((model / "meta.json").read_text())
    crops = load_library(lib).crops
    return model_inputs(
        crops, meta["canvas"], shapes=meta["shapes"], colour=meta["colour"], fill=meta["fill"]
    )


def _network_of(model: Path) -> torch.nn.Module:
    meta = json.loads((model / "meta.json").read_text())
    return network(meta["train_config"], len(meta["class_names"]))


def _copy_heads(net: torch.nn.Module, model: Path) -> None:
    """The classifier heads, which :func:`load_trunk` leaves (they name other classes)."""
    weights = {
        t.name: numpy_helper.to_array(t)
        for t in onnx.load(str(model / "model.onnx")).graph.initializer
    }
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if "head" in name:
                tensor.copy_(torch.from_numpy(weights["model." + name].copy()))


def test_trunk_read_back_from_onnx_computes_what_the_export_computes(
    exported: tuple[Path, Path],
) -> None:
    lib, model = exported
    x, s = _inputs(lib, model)
    net = _network_of(model)
    assert load_trunk(net, model / "model.onnx") == 2
    _copy_heads(net, model)
    net.eval()
    with torch.no_grad():
        ours = torch.softmax(net(torch.from_numpy(x), torch.from_numpy(s)), 1).numpy()
    session = ort.InferenceSession(str(model / "model.onnx"))
    ref = session.run(None, {"image": x, "features": s})[0]
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_calibration_keeps_the_function_and_gives_training_mode_the_same_trunk(
    exported: tuple[Path, Path],
) -> None:
    lib, model = exported
    x, s = (torch.from_numpy(a) for a in _inputs(lib, model))
    net = _network_of(model)
    load_trunk(net, model / "model.onnx")
    member = net.members[0]
    member.eval()
    with torch.no_grad():
        before = member.image_vector(x)
        calibrate(net, x, s)
        after = member.image_vector(x)
        member.train()  # batch statistics now: on this batch, the same trunk
        training = member.image_vector(x)
    np.testing.assert_allclose(after.numpy(), before.numpy(), atol=1e-4)
    np.testing.assert_allclose(training.numpy(), before.numpy(), atol=1e-3)
    assert not torch.allclose(before, torch.zeros_like(before))


def test_a_network_of_another_shape_is_refused_naming_the_file(
    exported: tuple[Path, Path],
) -> None:
    _lib, model = exported
    meta = json.loads((model / "meta.json").read_text())
    wider = network({**meta["train_config"], "width": 8}, 3)
    with pytest.raises(ValueError, match=r"model\.onnx.*another --width"):
        load_trunk(wider, model / "model.onnx")
    for layers in (4, 6):  # 4 divides the file's 2 x 8 convolutions, yet is not its depth
        other = network({**meta["train_config"], "layers": layers}, 3)
        with pytest.raises(ValueError, match=r"model\.onnx.*another --layers"):
            load_trunk(other, model / "model.onnx")
    resnet = network({**meta["train_config"], "arch": "resnet"}, 3)
    with pytest.raises(ValueError, match=r"model\.onnx.*only an sCNN"):
        load_trunk(resnet, model / "model.onnx")


def test_training_from_a_model_folder_starts_from_its_trunk(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    _lib, model = exported
    other = tmp_path / "other"  # another library: classes the model never saw
    make_roi_library(other, n_per_class=4, seed=11)
    settings = {**TINY, "members": 2, "width": 3, "layers": 8, "vsp": 0, "stop": 1, "ilr": 1e-9}
    train(TrainConfig(library=str(other), out=str(tmp_path / "w"), init=str(model), **settings))
    ck = load_checkpoint(checkpoint_path(tmp_path / "w", 1))
    assert ck["config"]["init"] == str(model)
    started = _network_of(model)
    load_trunk(started, model / "model.onnx")
    first = "members.0.features.0.weight"  # at a learning rate of 1e-9, still the model's
    torch.testing.assert_close(ck["model"][first], started.state_dict()[first])
    nowhere = TrainConfig(
        library=str(other), out=str(tmp_path / "x"), init=str(tmp_path), **settings
    )
    with pytest.raises(FileNotFoundError, match=r"no model\.onnx"):
        train(nowhere)


def test_train_cli_starts_from_a_model_folder_or_says_why_not(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    from plankline.cli import app
    from typer.testing import CliRunner

    lib, model = exported
    args = ["train", str(lib), "--stop", "1", "--canvas", "32", "--min-epoch-images", "16"]
    args += ["--members", "2"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a"), "--width", "3"])
    assert res.exit_code == 0, res.output  # from scratch: init "" by default
    assert load_checkpoint(checkpoint_path(tmp_path / "a", 1))["config"]["init"] == ""
    ok = [*args, "--out", str(tmp_path / "b"), "--width", "3", "--init", str(model)]
    res = CliRunner().invoke(app, ok)
    assert res.exit_code == 0, res.output
    assert load_checkpoint(checkpoint_path(tmp_path / "b", 1))["config"]["init"] == str(model)
    wide = [*args, "--out", str(tmp_path / "c"), "--width", "8", "--init", str(model)]
    res = CliRunner().invoke(app, wide)
    assert res.exit_code != 0 and "another --width" in res.output
    missing = [*args, "--out", str(tmp_path / "d"), "--init", str(tmp_path / "none")]
    res = CliRunner().invoke(app, missing)
    assert res.exit_code != 0 and "no model.onnx there" in res.output
