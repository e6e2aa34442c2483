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


def _blobs(n: int, seed: int) -> list[np.ndarray]:
    """Small gray crops of a few dark rectangles (some uniform, some 1-4 px wide)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        img = np.full((h, w), int(rng.integers(150, 256)), np.uint8)
        for _ in range(int(rng.integers(0, 4))):
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            img[y : y + int(rng.integers(1, 8)), x : x + int(rng.integers(1, 8))] = rng.integers(
                0, 150
            )
        out.append(img)
    return out


def test_object_masks_equal_object_mask_on_every_kind_of_crop(crops: list[np.ndarray]) -> None:
    from plankline.imaging.segment import object_mask
    from plankline.model.data import _imager_uint8, normalize_crop, object_masks

    rng = np.random.default_rng(1)
    noise = [
        rng.integers(0, 256, (int(h), int(w)), np.uint8) for h, w in rng.integers(1, 30, (40, 2))
    ]
    kinds = {
        # what shape_features gives it: normalised crops of either polarity, white background
        "normalised": [_imager_uint8(normalize_crop(c)) for c in crops],
        "inverted": [_imager_uint8(normalize_crop(255 - c, "dark")) for c in crops],
        # raw crops and bright objects: object_mask's own polarity decision (the plain path)
        "raw": crops,
        "bright objects": [255 - c for c in crops],
        "blobs": _blobs(200, 2),
        "noise": noise,
    }
    for kind, imgs in kinds.items():
        fast = object_masks(imgs)
        for i, img in enumerate(imgs):
            assert np.array_equal(fast[i], object_mask(img)), f"{kind} {i}"
