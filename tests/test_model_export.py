"""ONNX export parity, the model folder, Triton repository files and the classification CSV."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from plankline.model.data import (
    COLOUR_FEATURES,
    feature_names,
    list_images,
    load_library,
    min_object_px,
    model_inputs,
    object_measurements,
    read_image,
)
from plankline.model.export import (
    CHANNEL_BLOCK,
    parity,
    to_onnx_bytes,
    write_triton_repository,
)
from plankline.model.infer import (
    CPU_RUN_BATCH,
    UNCLASSIFIED,
    Classifier,
    read_classification_csv,
    write_classification_csv,
)
from plankline.model.scnn import STEMS, build_model
from plankline.model.train import (
    checkpoint_path,
    load_checkpoint,
    model_from_checkpoint,
    network,
)
from tiny_models import tiny_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return tiny_model(tmp_path_factory.mktemp("exp"), fill=24)


def test_onnx_matches_torch_within_1e4_for_any_batch_size(
    exported: tuple[Path, Path, Path],
) -> None:
    import torch

    lib, w, model_dir = exported
    clf = Classifier.load(model_dir, providers=["CPUExecutionProvider"])
    ck = load_checkpoint(checkpoint_path(w, 1))
    model = model_from_checkpoint(ck)
    assert clf.fill == ck["config"]["fill"] == 24  # the training's, through meta.json
    crops = [read_image(p) for p in list_images(lib)]
    # a quarter size too (8-56 px): the crops under ``fill`` are enlarged on the canvas
    crops += [cv2.resize(c, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA) for c in crops]
    for n in (1, 7, len(crops)):
        got = clf.predict(crops[-n:], batch_size=4)
        x, s = model_inputs(crops[-n:], clf.canvas, shapes=clf.shapes, colour=clf.colour, fill=24)
        with torch.no_grad():
            ref = torch.softmax(model(torch.from_numpy(x), torch.from_numpy(s)), 1).numpy()
        assert got.shape == (n, 5)
        assert np.abs(got - ref).max() <= 1e-4
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("stem", STEMS)
def test_each_scnn_stem_exports_with_parity(stem: str) -> None:
    model = build_model("scnn", 4, members=2, width=4, layers=4, n_inputs=3, stem=stem)
    assert parity(model.eval(), to_onnx_bytes(model, 32), 32) <= 1e-4


def test_inner_convolutions_are_exported_padded_to_whole_channel_blocks() -> None:
    """Widths 6, 12, 18... get zero filters up to multiples of 8 (ONNX Runtime blocks only
    those), the next convolution zero weights for them: same probabilities as torch."""
    import onnx
    import torch
    from onnx import numpy_helper

    torch.manual_seed(0)
    model = build_model("scnn", 5, members=2, width=6, layers=4, n_inputs=3).eval()
    with torch.no_grad():  # trained-like batch norms: no two folded biases alike
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.uniform_(-0.5, 0.5)
    data = to_onnx_bytes(model, 32)
    graph = onnx.load_from_string(data).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    outs = [weights[n.input[1]].shape[0] for n in graph.node if n.op_type == "Conv"]
    # two members of 4 layers: 6, 12, 18 padded to 8, 16, 24; the last (24) feeds the head
    assert outs == [8, 16, 24, 24] * 2
    assert all(c % CHANNEL_BLOCK == 0 for c in outs)
    assert parity(model, data, 32) <= 1e-5


def test_checkpoints_from_before_the_stem_choice_rebuild_the_pooled_stem(
    exported: tuple[Path, Path, Path],
) -> None:
    from torch import nn

    cfg = dict(load_checkpoint(checkpoint_path(exported[1], 1))["config"], members=1)
    assert not isinstance(network(cfg, 5).features[3], nn.MaxPool2d)  # stride, the default
    del cfg["stem"]
    assert isinstance(network(cfg, 5).features[3], nn.MaxPool2d)


def test_model_folder_holds_onnx_labels_and_meta(exported: tuple[Path, Path, Path]) -> None:
    lib, _, model_dir = exported
    clf = Classifier.load(model_dir)
    assert clf.class_names == ["copepod", "diatom_chain", "larval_fish", "marine_snow", "protist"]
    assert clf.canvas == 32 and clf.thresholds is None
    assert clf.meta["onnx_torch_max_abs_diff"] <= 1e-4 and clf.meta["opset"] >= 17
    # its size gate, from the objects of its own training images (vsp=0: all of them)
    gate = min_object_px(object_measurements(load_library(lib).crops))
    assert clf.card.min_object_px == clf.meta["min_object_px"] == gate > 1


def test_a_model_whose_inputs_differ_from_its_meta_is_refused(
    exported: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    import json
    import shutil

    bad = tmp_path / "model"
    shutil.copytree(exported[2], bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["shapes"] = False  # the ONNX graph takes the measurements, the meta says not
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="re-export"):
        Classifier.load(bad)


def test_the_model_takes_the_organisms_colour_and_records_it(
    exported: tuple[Path, Path, Path],
) -> None:
    lib, _, model_dir = exported
    clf = Classifier.load(model_dir, providers=["CPUExecutionProvider"])
    assert clf.colour and clf.meta["features"] == feature_names(True, True)
    assert clf.meta["features"][-6:] == list(COLOUR_FEATURES)
    crops = [read_image(p) for p in list_images(lib)]
    # a ROI whose red channel is all background reaches the network as blue and green only
    gray = crops[0]
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    tinted = np.dstack([gray, gray, np.full_like(gray, int(np.median(border)))])
    f_gray = model_inputs([gray], clf.canvas, shapes=True, colour=True)[1]
    f_tint = model_inputs([tinted], clf.canvas, shapes=True, colour=True)[1]
    np.testing.assert_allclose(f_gray[0, -6:], [1 / 3, 1 / 3, 1 / 3, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(f_tint[0, -6:], [0.5, 0.5, 0, 0, 0, 0], atol=1e-6)


def test_predict_names_the_index_of_an_empty_roi(exported: tuple[Path, Path, Path]) -> None:
    clf = Classifier.load(exported[2])
    with pytest.raises(ValueError, match="ROI 1"):
        clf.predict([np.full((5, 5), 200, np.uint8), np.zeros((0, 3), np.uint8)])


def test_triton_repository_has_gpu_and_cpu_configs(
    exported: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, _, model_dir = exported
    root = write_triton_repository(
        model_dir, tmp_path, model_name="scnn", max_batch_size=128, preferred_batch_sizes=(32, 128)
    )
    gpu = (root / "config.pbtxt").read_text()
    cpu = (root / "configs" / "cpu_python.pbtxt").read_text()
    assert re.search(r'platform:\s*"onnxruntime_onnx"', gpu)
    assert re.search(r"max_batch_size:\s*128", gpu)
    assert re.search(r"preferred_batch_size:\s*\[\s*32, 128\s*\]", gpu)
    assert re.search(r"max_queue_delay_microseconds:\s*\d+", gpu)
    assert re.search(r"kind:\s*KIND_GPU", gpu)
    assert re.search(r'name:\s*"tensorrt".*precision_mode"\s*value:\s*"FP16"', gpu, re.S)
    assert re.search(r"dims:\s*\[\s*1, 32, 32\s*\]", gpu) and re.search(r"dims:\s*\[\s*5\s*\]", gpu)
    n_features = len(feature_names(shapes=True, colour=True))
    assert re.search(rf'"features", data_type: TYPE_FP32, dims: \[ {n_features} \]', gpu)
    assert re.search(r'backend:\s*"python"', cpu) and re.search(r"kind:\s*KIND_CPU", cpu)
    assert gpu.count("{") == gpu.count("}") and cpu.count("[") == cpu.count("]")
    assert (root / "1" / "model.onnx").read_bytes() == (model_dir / "model.onnx").read_bytes()
    assert (root / "labels.txt").read_text().split()[0] == "copepod"


def test_triton_python_model_runs_the_same_onnx(
    exported: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    lib, _, model_dir = exported
    root = write_triton_repository(model_dir, tmp_path)
    spec = importlib.util.spec_from_file_location("triton_model", root / "1" / "model.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    assert {"initialize", "execute", "finalize"} <= set(vars(mod.TritonPythonModel))
    assert mod.RUN_BATCH == CPU_RUN_BATCH
    crops = [read_image(p) for p in list_images(lib)[:9]] * 8  # 72 ROIs: three calls
    x, f = model_inputs(crops, 32, shapes=True, colour=True)
    got = mod.run_onnx(mod.open_session(str(root / "1"), 1), x, f)
    np.testing.assert_allclose(got, Classifier.load(model_dir).predict(crops), atol=1e-6)


def test_classification_csv_has_the_seed_header_and_rows_summing_to_one(tmp_path: Path) -> None:
    names = ["copepod", "diatom chain", "protist"]
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.05, 0.9, 0.05]], np.float32)
    path = write_classification_csv(
        tmp_path / "c" / "chunk.csv",
        ["a", "b", "c"],
        probs,
        names,
        thresholds={"copepod": 0.6, "diatom chain": 0.95, "protist": None},
    )
    lines = path.read_text().splitlines()
    assert (
        lines[0] == "image,copepod,diatom chain,protist,top_class,top_probability,thresholded_class"
    )
    assert lines[1].endswith(",copepod,0.700000,copepod")
    assert lines[2].endswith(f",protist,0.400000,{UNCLASSIFIED}")  # protist never reaches precision
    assert lines[3].endswith(f",diatom chain,0.900000,{UNCLASSIFIED}")
    ids, back, back_names = read_classification_csv(path)
    assert ids == ["a", "b", "c"] and back_names == names
    np.testing.assert_allclose(back, probs, atol=1e-6)
    np.testing.assert_allclose(back.sum(1), 1.0, atol=1e-5)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_classification_csv_refuses_mismatched_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_images=2"):
        write_classification_csv(tmp_path / "x.csv", ["a", "b"], np.ones((3, 2)), ["p", "q"])
