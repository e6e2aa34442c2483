"""Inference fast paths give what the plain paths give: the shipped model's probabilities
in small ONNX Runtime calls, and the batched preprocessing against one crop at a time."""

from __future__ import annotations

import numpy as np
import pytest
from plankline.imaging.synth import make_roi_library
from plankline.model.data import list_images, read_image
from plankline.model.infer import CPU_RUN_BATCH, Classifier


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Synthetic ROIs (gray, one organism each) of every class and size of the generator."""
    root = tmp_path_factory.mktemp("rois")
    make_roi_library(root, n_per_class=12, seed=3)
    return [read_image(p) for p in list_images(root)]


def test_the_network_in_small_cpu_calls_gives_the_one_call_probabilities(
    crops: list[np.ndarray],
) -> None:
    clf = Classifier.load(providers=["CPUExecutionProvider"], threads=1)
    assert clf.run_batch == CPU_RUN_BATCH < len(crops)
    split = clf.predict(crops, batch_size=len(crops))
    clf.run_batch = 0  # the whole prepared batch in one ONNX Runtime call (as on a GPU)
    np.testing.assert_allclose(clf.predict(crops, batch_size=len(crops)), split, atol=1e-6)
