"""The random forest on the network's measurements: fitted at training, merged at export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from plankline.model.data import list_images, model_inputs, read_image
from plankline.model.forest import (
    FOREST_MAX_LEAVES,
    FOREST_TREES,
    fit_forest,
    forest_predictor,
    mix,
)
from plankline.model.infer import Classifier
from plankline.model.train import (
    FOREST_FILE,
    TrainConfig,
    checkpoint_path,
    checkpoint_predictor,
    load_checkpoint,
    model_from_checkpoint,
)
from tiny_models import tiny_model


def test_forest_gives_a_column_per_class_index_zero_where_training_lacked_it() -> None:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 2, 3], 30)
    x = rng.normal(0, 0.3, (90, 4)).astype(np.float32)
    x[:, 0] += labels  # class told apart by the first feature
    predict = forest_predictor(fit_forest(x, labels, 5, seed=1))
    probs = predict(x)
    assert probs.shape == (90, 5)
    assert not probs[:, [1, 4]].any()  # classes 1 and 4 had no training image
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == labels).mean() > 0.95
    # the ONNX graph, its zero class weights dropped, is scikit-learn's forest
    same = RandomForestClassifier(
        FOREST_TREES, class_weight="balanced", max_leaf_nodes=FOREST_MAX_LEAVES, random_state=1
    ).fit(x, labels)
    test = rng.normal(1.5, 1.5, (200, 4)).astype(np.float32)
    np.testing.assert_allclose(predict(test)[:, [0, 2, 3]], same.predict_proba(test), atol=1e-6)


def test_forest_refuses_features_that_do_not_match_labels() -> None:
    with pytest.raises(ValueError, match=r"need \(n, F\) features for n labels"):
        fit_forest(np.zeros((3, 2), np.float32), np.zeros(4, np.int64), 2)


def test_forest_weight_must_leave_the_network_a_share() -> None:
    with pytest.raises(ValueError, match="forest"):
        TrainConfig(library="x", out="y", forest=1.0).validate()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return tiny_model(tmp_path_factory.mktemp("forest"), members=1, forest=0.4)


def test_exported_model_is_the_mixture_of_network_and_forest(
    trained: tuple[Path, Path, Path],
) -> None:
    import torch

    lib, w, model_dir = trained
    ck = load_checkpoint(checkpoint_path(w, 1))
    assert ck["forest"]["weight"] == 0.4
    clf = Classifier.load(model_dir, providers=["CPUExecutionProvider"])
    assert clf.meta["forest"]["weight"] == 0.4
    crops = [read_image(p) for p in list_images(lib)]
    got = clf.predict(crops, batch_size=7)
    x, s = model_inputs(crops, clf.canvas, shapes=clf.shapes, colour=clf.colour, fill=clf.fill)
    with torch.no_grad():
        net = torch.softmax(model_from_checkpoint(ck)(torch.from_numpy(x), torch.from_numpy(s)), 1)
    forest = forest_predictor(ck["forest_onnx"])(s)
    np.testing.assert_allclose(got, mix(net.numpy(), forest, 0.4), atol=1e-4)
    assert np.abs(got - net.numpy()).max() > 1e-2  # the forest changed the answer
    np.testing.assert_allclose(checkpoint_predictor(ck)(crops), got, atol=1e-4)


def test_checkpoint_without_its_own_forest_is_refused_naming_the_file(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, w, _ = trained
    copy = tmp_path / "w"
    copy.mkdir()
    (copy / "epoch_0001.pt").write_bytes(checkpoint_path(w, 1).read_bytes())
    with pytest.raises(FileNotFoundError, match=FOREST_FILE):
        load_checkpoint(checkpoint_path(copy, 1))
    (copy / FOREST_FILE).write_bytes((w / FOREST_FILE).read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match="is not the forest"):
        load_checkpoint(checkpoint_path(copy, 1))


@pytest.mark.integration
def test_real_triton_serves_the_merged_forest_with_the_onnx_runtime_numbers(
    trained: tuple[Path, Path, Path], tmp_path: Path, stack_dir: Path, triton_venv: Path
) -> None:
    import tritonclient.grpc as grpcclient
    from plankline.model.export import write_triton_repository
    from plankline.stream.stack import start_triton

    lib, _, model_dir = trained
    write_triton_repository(model_dir, tmp_path / "repo")
    server = start_triton(
        stack_dir,
        tmp_path / "repo",
        venv=triton_venv,
        model_config_name="cpu_python",
        name="triton-forest",
    )
    try:
        clf = Classifier.load(model_dir, providers=["CPUExecutionProvider"])
        crops = [read_image(p) for p in list_images(lib)]
        x, s = model_inputs(crops, clf.canvas, shapes=clf.shapes, colour=clf.colour, fill=clf.fill)
        inputs = []
        for name, value in (("image", x), ("features", s)):
            inputs.append(grpcclient.InferInput(name, list(value.shape), "FP32"))
            inputs[-1].set_data_from_numpy(value)
        client = grpcclient.InferenceServerClient(server.endpoint)
        result = client.infer("plankline_classifier", inputs)
        np.testing.assert_allclose(result.as_numpy("probs"), clf.predict(crops), atol=1e-5)
        client.close()
    finally:
        assert server.stop()
