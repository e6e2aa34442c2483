"""A random forest on the network's own ``features`` input, averaged into its prediction.

The network reads the organism's measurements through one small embedding
among hundreds of pooled image features; a forest reads them the way the
ecologists' classic classifiers do (thresholds on size, shape and colour).
The two make different mistakes, so their average beats both where the
measurements carry the classes, e.g. copepod genera that differ mostly in
size on the Scripps cameras (``scripts/eval_classifier.py``; figures in the
README). The forest is fitted once per training library on the un-augmented
crops' ``features`` (exactly what inference feeds the network), written as
ONNX (``ai.onnx.ml`` ``TreeEnsembleClassifier``, run by ONNX Runtime and
Triton) and merged into the exported graph, so every consumer of
``model.onnx`` gets the mixture without knowing it exists.

Pure library: arrays in, ONNX bytes and probabilities out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

FOREST_TREES = 100
"""Trees: 500 scored the same on the benchmark's sets at 5x the model's bytes."""

FOREST_MAX_LEAVES = 512
"""Leaves per tree at most: a few-hundred-image library grows fewer, while the 121
classes of 24,000 NDSB images would otherwise give a model of hundreds of MB."""

FOREST_OUTPUT = "forest_probs"
"""Name of the forest's probabilities inside a merged graph."""

_ML_DOMAIN = "ai.onnx.ml"


def fit_forest(features: np.ndarray, labels: np.ndarray, n_classes: int, *, seed: int = 0) -> bytes:
    """ONNX bytes of a class-balanced random forest on ``features``.

    The graph takes ``features`` ``(n, F)`` float32 and returns
    ``forest_probs`` ``(n, n_classes)``: one column per class index, zero for
    classes the training labels lack.
    """
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    x = np.ascontiguousarray(features, np.float32)
    if x.ndim != 2 or len(x) != len(labels) or len(x) == 0:
        raise ValueError(f"need (n, F) features for n labels, got {x.shape} for {len(labels)}")
    forest = RandomForestClassifier(
        FOREST_TREES,
        class_weight="balanced",
        max_leaf_nodes=FOREST_MAX_LEAVES,
        random_state=seed,
        n_jobs=1,
    ).fit(x, labels)
    graph = to_onnx(
        forest,
        x[:1],
        options={id(forest): {"zipmap": False}},
        target_opset={"": 17, _ML_DOMAIN: 3},
    )
    return _to_class_columns(graph, [int(c) for c in forest.classes_], n_classes)


def _to_class_columns(graph: object, present: list[int], n_classes: int) -> bytes:
    """Rename the converter's graph to ``features`` -> ``forest_probs`` with one column
    per class index (a 0/1 matrix spreads the present classes' columns), keeping only
    the leaves' non-zero class weights.

    The converter lists every class at every leaf: 870,400 weights for 100 trees of 512
    leaves and 17 classes, 13.8 MB, most of them 0 (a leaf of a grown tree holds one or
    a few classes); an absent weight adds nothing, so the probabilities are unchanged.
    """
    import onnx
    from onnx import helper, numpy_helper

    g = graph.graph  # type: ignore[attr-defined]
    (tree,) = g.node
    tree.input[0] = "features"
    tree.output[0], tree.output[1] = "forest_label", "forest_present_probs"
    attrs = {a.name: a for a in tree.attribute}
    keep = np.flatnonzero(np.asarray(attrs["class_weights"].floats, np.float32))
    for name in ("class_ids", "class_nodeids", "class_treeids"):
        values = np.asarray(attrs[name].ints, np.int64)[keep].tolist()
        attrs[name].CopyFrom(helper.make_attribute(name, values))
    weights = np.asarray(attrs["class_weights"].floats, np.float32)[keep].tolist()
    attrs["class_weights"].CopyFrom(helper.make_attribute("class_weights", weights))
    for optional in ("nodes_hitrates", "nodes_missing_value_tracks_true"):  # all defaults
        if optional in attrs:
            tree.attribute.remove(attrs[optional])
    spread = np.zeros((len(present), n_classes), np.float32)
    spread[np.arange(len(present)), present] = 1.0
    model = helper.make_model(
        helper.make_graph(
            [
                tree,
                helper.make_node(
                    "MatMul", ["forest_present_probs", "forest_spread"], [FOREST_OUTPUT]
                ),
            ],
            "forest",
            [helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["batch", None])],
            [
                helper.make_tensor_value_info(
                    FOREST_OUTPUT, onnx.TensorProto.FLOAT, ["batch", n_classes]
                )
            ],
            [numpy_helper.from_array(spread, "forest_spread")],
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_ML_DOMAIN, 3)],
        ir_version=8,  # opset 17's; onnx writes its newest, which ONNX Runtime may not read
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def forest_digest(forest_onnx: bytes) -> str:
    """SHA-256 of a forest's bytes: what a checkpoint records to find its own forest."""
    return hashlib.sha256(forest_onnx).hexdigest()


def forest_predictor(forest_onnx: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """``features -> (n, n_classes)`` probabilities of a :func:`fit_forest` graph."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(forest_onnx, so, providers=["CPUExecutionProvider"])

    def predict(features: np.ndarray) -> np.ndarray:
        feed = {"features": np.ascontiguousarray(features, np.float32)}
        return session.run([FOREST_OUTPUT], feed)[0]

    return predict


def mix(network_probs: np.ndarray, forest_probs: np.ndarray, weight: float) -> np.ndarray:
    """The exported model's prediction: ``(1 - weight) * network + weight * forest``."""
    return (1.0 - weight) * network_probs + weight * forest_probs


def merge_forest(network_onnx: bytes, forest_onnx: bytes, weight: float, output: str) -> bytes:
    """The network's graph whose ``output`` is :func:`mix` of its probabilities and the
    forest's, both reading the graph's ``features`` input."""
    import onnx
    from onnx import helper, numpy_helper

    if not 0.0 < weight < 1.0:
        raise ValueError(f"forest weight must be in (0, 1), got {weight}")
    net = onnx.load_from_string(network_onnx)
    forest = onnx.load_from_string(forest_onnx)
    g = net.graph
    for node in g.node:
        for i, name in enumerate(node.output):
            if name == output:
                node.output[i] = "network_probs"
    g.node.extend(forest.graph.node)
    g.initializer.extend(forest.graph.initializer)
    g.initializer.extend(
        [
            numpy_helper.from_array(np.float32(1.0 - weight), "network_weight"),
            numpy_helper.from_array(np.float32(weight), "forest_weight"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Mul", ["network_probs", "network_weight"], ["network_part"]),
            helper.make_node("Mul", [FOREST_OUTPUT, "forest_weight"], ["forest_part"]),
            helper.make_node("Add", ["network_part", "forest_part"], [output]),
        ]
    )
    if not any(o.domain == _ML_DOMAIN for o in net.opset_import):
        net.opset_import.append(helper.make_opsetid(_ML_DOMAIN, 3))
    onnx.checker.check_model(net)
    return net.SerializeToString()
