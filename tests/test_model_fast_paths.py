"""Inference fast paths give what the plain paths give: the shipped model's probabilities
in small ONNX Runtime calls, and the batched preprocessing against one crop at a time."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from plankline.imaging.segment import object_mask
from plankline.imaging.synth import make_roi_library
from plankline.model.data import (
    MASK_SMALL,
    SMALL,
    _imager_uint8,
    _normalize,
    checked_model_inputs,
    list_images,
    model_inputs,
    network_inputs,
    normalize_crop,
    object_masks,
    read_image,
)
from plankline.model.infer import CPU_RUN_BATCH, Classifier

NDSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ndsb-isiis"


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
        # small crops (the whole-batch mosaic): shrunk organisms, specks, equal twin blobs
        "small": [_imager_uint8(normalize_crop(c)) for c in _small(crops)],
        "small inverted": [_imager_uint8(normalize_crop(255 - c, "dark")) for c in _small(crops)],
        "small blobs": [_imager_uint8(normalize_crop(c)) for c in _blobs(300, 4)],
    }
    assert sum(i.size <= MASK_SMALL for i in kinds["small"]) == len(kinds["small"])
    for kind, imgs in kinds.items():
        fast = object_masks(imgs)
        for i, img in enumerate(imgs):
            assert np.array_equal(fast[i], object_mask(img)), f"{kind} {i}"


def _small(crops: list[np.ndarray]) -> list[np.ndarray]:
    """The crops shrunk to at most 24 px (real ISIIS ROIs: median 21 px), twin blobs (two
    largest components of equal size) and 1-4 px wide strips."""
    out = []
    for c in crops:
        f = 24 / max(c.shape)
        out.append(cv2.resize(c, (max(1, round(c.shape[1] * f)), max(1, round(c.shape[0] * f)))))
    twin = np.full((12, 20), 230, np.uint8)
    twin[3:7, 2:6] = twin[3:7, 12:16] = 40
    return [*out, twin, twin[:, :3], twin[2:5], np.full((9, 9), 200, np.uint8)]


def _two_sided(n: int, seed: int) -> list[np.ndarray]:
    """Noisy small crops holding a dark and a bright blob of random sizes: the polarity check's
    threshold follows the noise, and its two sums are close in some of them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(8, 32, 2))
        img = rng.normal(128, rng.uniform(2, 20), (h, w))
        for level in (40, 216):
            y, x = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
            img[y : y + int(rng.integers(2, 9)), x : x + int(rng.integers(2, 9))] = level
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _plain(crops: list[np.ndarray], polarity: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """checked_model_inputs one crop at a time, as before the whole-batch passes."""
    norm, own = zip(*(_normalize(c, polarity, check=True) for c in crops), strict=True)
    x, f = network_inputs(list(norm), 64, shapes=True)
    return x, f, np.array(own) != polarity


@pytest.mark.parametrize("polarity", ["bright", "dark"])
def test_batched_preprocessing_equals_one_crop_at_a_time(
    crops: list[np.ndarray], polarity: str
) -> None:
    small = _small(crops)
    rng = np.random.default_rng(5)
    mixed = [
        *small,
        *crops[:20],
        *(255 - c for c in small[:20]),  # the other polarity: disagree
        cv2.cvtColor(small[0], cv2.COLOR_GRAY2BGR),
        small[1].astype(np.uint16) * 257,  # 16-bit: one at a time
        rng.integers(0, 256, (7, 5), np.uint8),
        *_two_sided(300, 6),
    ]
    assert sum(c.shape[0] * c.shape[1] <= SMALL for c in mixed) > len(mixed) / 2
    x, f, disagree = checked_model_inputs(mixed, 64, shapes=True, polarity=polarity)
    px, pf, pdisagree = _plain(mixed, polarity)
    assert np.array_equal(x, px) and np.array_equal(f, pf)
    assert np.array_equal(disagree, pdisagree) and 0 < disagree.sum() < len(mixed)
    x2, f2 = model_inputs(mixed, 64, shapes=True, polarity=polarity)
    assert np.array_equal(x2, px) and np.array_equal(f2, pf)


@pytest.mark.skipif(not NDSB.is_dir(), reason=f"{NDSB}: real ISIIS vignettes not here")
def test_batched_preprocessing_equals_one_crop_at_a_time_on_real_isiis_rois() -> None:
    files = list_images(NDSB)
    pick = np.random.default_rng(0).permutation(len(files))[:200]
    real = [read_image(files[i]) for i in pick]
    real += [cv2.resize(c, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA) for c in real]
    for polarity in ("bright", "dark"):
        x, f, disagree = checked_model_inputs(real, 64, shapes=True, polarity=polarity)
        px, pf, pdisagree = _plain(real, polarity)
        assert np.array_equal(x, px) and np.array_equal(f, pf)
        assert np.array_equal(disagree, pdisagree)
    imgs = [_imager_uint8(normalize_crop(c)) for c in real]
    for fast, img in zip(object_masks(imgs), imgs, strict=True):
        assert np.array_equal(fast, object_mask(img))


def test_medians_from_histograms_equal_the_median_of_each_crop() -> None:
    from plankline.model.data import _median, _medians

    rng = np.random.default_rng(7)
    lengths = 2 * rng.integers(1, 60, 200)  # crop borders: an even number of pixels
    owner = np.repeat(np.arange(len(lengths)), lengths)
    for bins in (256, 511):
        tops = rng.integers(1, bins + 1, len(lengths))  # few or many distinct values
        values = np.concatenate([rng.integers(0, v, k) for v, k in zip(tops, lengths, strict=True)])
        ends = np.cumsum(lengths)
        want = [_median(values[e - k : e]) for e, k in zip(ends, lengths, strict=True)]
        shuffled = rng.permutation(len(values))  # any order of the pixels: by their owner
        got = _medians(values[shuffled], owner[shuffled], len(lengths), bins)
        assert got.tolist() == want
