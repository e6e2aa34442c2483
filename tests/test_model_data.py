"""Classifier preprocessing and training-library reading."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from plankline.model.data import (
    COLOUR_FEATURES,
    SHAPE_FEATURES,
    Augment,
    CanvasDataset,
    colour_features,
    feature_names,
    load_library,
    model_inputs,
    normalize_crop,
    object_masks,
    place_on_canvas,
    read_image,
    shape_features,
    split_indices,
)
from shared_data import DATA


def to_canvas(crops: list[np.ndarray], canvas: int) -> np.ndarray:
    return model_inputs(crops, canvas, shapes=False)[0]


def _blob(h: int, w: int, bg: int = 200, fg: int = 50) -> np.ndarray:
    img = np.full((h, w), bg, np.uint8)
    img[h // 4 : h - h // 4, w // 4 : w - w // 4] = fg
    return img


def test_background_becomes_zero_and_organism_keeps_its_darkness() -> None:
    x = to_canvas([_blob(20, 30, bg=180, fg=30)], 64)
    assert x.shape == (1, 1, 64, 64) and x.dtype == np.float32
    assert np.count_nonzero(x) == 10 * 16  # the dark rectangle only
    assert x.max() == pytest.approx(150 / 255)


def test_small_rois_are_placed_unscaled_at_the_centre() -> None:
    small, large = _blob(8, 8), _blob(40, 40)
    x, s = model_inputs([small, large], 64, shapes=False)
    assert np.count_nonzero(x[0]) == 4 * 4 and np.count_nonzero(x[1]) == 20 * 20
    ys, xs = np.nonzero(x[1, 0])
    assert (ys.min() + ys.max()) / 2 == pytest.approx(31.5, abs=1)
    assert (xs.min() + xs.max()) / 2 == pytest.approx(31.5, abs=1)
    assert np.all(s == 0)


def test_rois_bigger_than_the_canvas_are_shrunk_and_report_log2_shrink() -> None:
    x, s = model_inputs([_blob(256, 128)], 64, shapes=False)
    assert s[0, 0] == pytest.approx(2.0)
    ys, xs = np.nonzero(x[0, 0] > 0.1)
    assert ys.max() - ys.min() + 1 == pytest.approx(32, abs=1)
    assert xs.max() - xs.min() + 1 == pytest.approx(16, abs=1)


def test_fill_enlarges_tiny_rois_and_reports_a_negative_log2_shrink() -> None:
    tiny, small, large = _blob(8, 16), _blob(40, 40), _blob(256, 128)
    x, s = model_inputs([tiny, small, large], 64, shapes=False, fill=32)
    assert s[0, 0] == pytest.approx(-1.0)  # 16 -> 32 px: enlarged 2x
    ys, xs = np.nonzero(x[0, 0] > 0.35)  # above half the organism's 0.59: bilinear edges out
    assert xs.max() - xs.min() + 1 == pytest.approx(16, abs=1)  # the 8 px organism, 2x
    assert ys.max() - ys.min() + 1 == pytest.approx(8, abs=1)
    assert (ys.min() + ys.max()) / 2 == pytest.approx(31.5, abs=1)
    # crops at least ``fill`` wide are placed as before; fill 0 never enlarges
    ref_x, ref_s = model_inputs([small, large], 64, shapes=False)
    np.testing.assert_array_equal(x[1:], ref_x)
    np.testing.assert_array_equal(s[1:], ref_s)
    assert np.all(model_inputs([tiny], 64, shapes=False)[1] == 0)
    # fill beyond the canvas fills the canvas
    assert model_inputs([tiny], 32, shapes=False, fill=64)[1][0, 0] == pytest.approx(-1.0)


def test_training_views_enlarge_tiny_crops_as_inference_does() -> None:
    crop = normalize_crop(_blob(10, 12))
    ident = Augment(rotate=False, flip=False, scale=0.0, shear=0.0, translate=0.0, noise=0.0)
    x, f, _ = CanvasDataset([crop], np.array([0]), 64, augment=ident, fill=48)[(0, 0, 0)]
    ref_x, ref_s = place_on_canvas([ident(crop, np.random.default_rng(0))], 64, 48)
    assert f[0] == pytest.approx(ref_s[0, 0]) and f[0] < 0
    np.testing.assert_allclose(x, ref_x[0], atol=1e-6)


def test_colour_and_gray_versions_of_a_roi_give_the_same_input() -> None:
    g = _blob(30, 30)
    c = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    np.testing.assert_allclose(to_canvas([g], 32), to_canvas([c], 32), atol=1e-6)


def _tinted_organism(bgr: tuple[int, int, int], background: int) -> np.ndarray:
    img = np.full((40, 40, 3), background, np.uint8)
    cv2.circle(img, (20, 20), 10, bgr, -1)
    return img


def test_colour_features_give_the_organisms_channel_shares_on_either_background() -> None:
    green_on_black = _tinted_organism((0, 200, 100), 0)
    # a dark-field organism and its bright-field (inverted) copy have the same colour shares
    f = colour_features([green_on_black, 255 - green_on_black])
    np.testing.assert_allclose(f[:, :3], [[0, 2 / 3, 1 / 3]] * 2, atol=1e-6)
    np.testing.assert_allclose(f[:, 3:], 0.0, atol=1e-6)  # one flat colour: no spread
    # two colours in one organism: the shares spread
    two = green_on_black.copy()
    lower = two[20:]
    lower[lower.any(axis=2)] = (200, 0, 0)  # its lower half blue
    assert colour_features([two])[0, 3:].min() > 0.1
    # gray crops, colour copies of gray crops and blank crops are neutral
    g = _blob(30, 30)
    neutral = [1 / 3, 1 / 3, 1 / 3, 0, 0, 0]
    for crop in (g, cv2.cvtColor(g, cv2.COLOR_GRAY2BGR), np.zeros((9, 9, 3), np.uint8)):
        np.testing.assert_allclose(colour_features([crop])[0], neutral, atol=1e-7)
    _, with_colour = model_inputs([green_on_black], 32, shapes=True, colour=True, polarity="dark")
    assert with_colour.shape == (1, len(feature_names(True, True)))
    assert feature_names(True, True)[-6:] == list(COLOUR_FEATURES)
    np.testing.assert_allclose(with_colour[0, -6:], f[0], atol=1e-7)


def test_measurements_follow_the_log2_shrink_and_see_the_unshrunk_organism() -> None:
    small, large = _blob(40, 40), _blob(256, 256)
    _, f = model_inputs([small, large], 64, shapes=True)
    assert f.shape == (2, 1 + len(SHAPE_FEATURES)) and feature_names(True)[0] == "log2_shrink"
    area = f[:, 1 + SHAPE_FEATURES.index("area")]
    # 20x20 and 128x128 px organisms: log1p areas, although both fill the canvas alike
    np.testing.assert_allclose(np.expm1(area), [400, 128 * 128], rtol=0.02)
    np.testing.assert_allclose(f[:, 1 + SHAPE_FEATURES.index("solidity")], 1.0, atol=0.02)
    assert np.all(np.isfinite(f))


def test_a_roi_without_an_organism_gets_zero_measurements() -> None:
    f = shape_features([np.zeros((12, 12), np.float32)])
    assert f.shape == (1, len(SHAPE_FEATURES)) and not f.any()


def test_empty_roi_is_refused_with_its_shape() -> None:
    with pytest.raises(ValueError, match="empty"):
        normalize_crop(np.zeros((0, 5), np.uint8))


def test_augmentation_is_deterministic_and_keeps_rotated_corners() -> None:
    crop = normalize_crop(_blob(10, 60))
    aug = Augment(noise=0.0, scale=0.0, shear=0.0, translate=0.0)
    a = aug(crop, np.random.default_rng(3))
    b = aug(crop, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    # a pure rotation/flip keeps the organism's area (nothing cut at the corners)
    assert a.sum() == pytest.approx(crop.sum(), rel=0.05)


def test_training_views_of_big_crops_match_the_unshrunk_path_on_the_canvas() -> None:
    # a textured organism filling a 900 x 420 crop: training pre-shrinks it to 2 canvas sides
    # before augmenting; the view on the canvas and its log2 shrink must be what augmenting
    # the full crop gives (identity warp: the rest of the augmentation is random)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:900, 0:420]
    img = 40 + 30 * np.sin(yy / 37.0) * np.cos(xx / 23.0) + rng.normal(0, 3, yy.shape)
    crop = normalize_crop(np.clip(img, 0, 255).astype(np.uint8))
    ident = Augment(rotate=False, flip=False, scale=0.0, shear=0.0, translate=0.0, noise=0.0)
    ds = CanvasDataset([crop], np.array([0]), 64, augment=ident)
    assert max(ds.crops[0].shape) == 128  # shrunk once, up front
    x, f, label = ds[(0, 0, 0)]
    ref_x, ref_s = place_on_canvas([ident(crop, np.random.default_rng(0))], 64)
    assert label == 0 and f[0] == pytest.approx(ref_s[0, 0], abs=1e-3)  # log2(900 / 64)
    assert f[0] == pytest.approx(np.log2(900 / 64), abs=0.01)
    assert np.abs(x - ref_x[0]).max() < 0.02 and np.abs(x - ref_x[0]).mean() < 0.002
    # noise: clipped at 0, it leaves a mean offset on the canvas that shrinking keeps, the
    # same in both paths; its random part stays within what an unshrunk crop gets
    noisy = Augment(rotate=False, flip=False, scale=0.0, shear=0.0, translate=0.0, noise=0.1)
    ds = CanvasDataset([crop], np.array([0]), 64, augment=noisy)
    full = np.stack(
        [place_on_canvas([noisy(crop, np.random.default_rng(k))], 64)[0][0] for k in range(4)]
    )
    pre = np.stack([ds[(0, k, 0)][0] for k in range(4)])
    assert (pre - ref_x[0]).mean() == pytest.approx((full - ref_x[0]).mean(), rel=0.2)
    assert (pre - ref_x[0]).std() < 0.1
    # small crops are left as they are
    small = normalize_crop(_blob(40, 60))
    assert CanvasDataset([small], np.array([0]), 64, augment=ident).crops[0] is small


def test_split_is_stratified_and_keeps_each_class_on_both_sides() -> None:
    labels = np.repeat([0, 1, 2], [10, 3, 2])
    tr, va = split_indices(labels, 20, seed=1)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 15
    assert set(labels[va]) == {0, 1, 2} and set(labels[tr]) == {0, 1, 2}
    assert len(split_indices(labels, 0)[1]) == 0


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def test_library_keeps_the_colour_of_its_images_while_holding_them_gray(tmp_path: Path) -> None:
    for i in range(2):
        _write(tmp_path / "green" / f"g{i}.png", _tinted_organism((0, 200, 100 + i), 0))
        _write(tmp_path / "blue" / f"b{i}.png", _tinted_organism((180, 60 + i, 0), 0))
    lib = load_library(tmp_path)
    assert lib.polarity == "dark" and all(c.ndim == 2 for c in lib.crops)
    raw = [cv2.imread(p) for p in lib.paths]
    np.testing.assert_allclose(lib.colour, colour_features(raw), atol=1e-7)
    assert lib.colour[lib.labels == lib.class_names.index("green"), 1].min() > 0.6


def test_library_drops_small_and_empty_classes_and_skips_bad_files(tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path / "big copepod" / f"a{i}.png", _blob(20, 20 + i))
        _write(tmp_path / "diatom" / f"b{i}.png", _blob(10 + i, 30))
    _write(tmp_path / "rare" / "r0.png", _blob(12, 12))
    (tmp_path / "empty").mkdir()
    (tmp_path / "diatom" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning) as rec:
        lib = load_library(tmp_path, class_min=2)
    msgs = " ".join(str(w.message) for w in rec)
    assert "broken.png" in msgs and "'rare'" in msgs and "'empty'" in msgs
    assert lib.class_names == ["big copepod", "diatom"]
    assert lib.counts().tolist() == [3, 3]
    # gray files: every image's colour is the neutral one, in the subsets too
    assert lib.colour is not None and lib.colour.shape == (6, len(COLOUR_FEATURES))
    np.testing.assert_allclose(lib.subset(np.array([1, 4])).colour_matrix()[:, :3], 1 / 3)
    x, _ = place_on_canvas(lib.crops, 32)
    assert x.shape == (6, 1, 32, 32)


def _textured_organism(seed: int) -> np.ndarray:
    """A dark, textured, soft-edged organism on a white background (imager convention)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:40]
    r = np.hypot((yy - 24) / rng.uniform(8, 18), (xx - 20) / rng.uniform(6, 14))
    body = np.clip(1.3 - r, 0, 1) * (0.6 + 0.4 * np.sin(yy / 3.0 + seed) * np.cos(xx / 4.0))
    return np.clip(250 - 200 * body + rng.normal(0, 2, r.shape), 0, 255).astype(np.uint8)


def test_contrast_augmentation_scales_the_image_and_its_grey_level_measurements() -> None:
    # the shipped ISIIS model is trained with it (other cameras' organisms are fainter):
    # a view at contrast k must carry the measurements of the organism at contrast k
    crops = [normalize_crop(_textured_organism(s)) for s in range(6)]
    features = shape_features(crops)
    ident = dict(rotate=False, flip=False)
    aug = Augment(contrast=0.6, **ident)
    ds = CanvasDataset(
        crops,
        np.zeros(6, np.int64),
        64,
        augment=aug,
        shapes=features,
        shape_names=list(SHAPE_FEATURES),
    )
    plain = CanvasDataset(
        crops,
        np.zeros(6, np.int64),
        64,
        augment=Augment(**ident),
        shapes=features,
        shape_names=list(SHAPE_FEATURES),
    )
    scaled_views = 0
    for draw in range(12):
        for i in range(6):
            rng = np.random.default_rng((0, 0, draw, i))
            aug(crops[i], rng)
            k = aug.contrast_factor(rng)
            x, f, _ = ds[(0, draw, i)]
            x1, f1, _ = plain[(0, draw, i)]
            np.testing.assert_allclose(x, k * x1, atol=1e-6)
            if k == 1.0:
                np.testing.assert_array_equal(f, f1)
                continue
            scaled_views += 1
            assert 0.4 <= k < 1.0
            measured = shape_features([crops[i] * np.float32(k)])[0]
            for name in ("mean", "std", "max", "median"):
                j = SHAPE_FEATURES.index(name)
                # within the rounding of the scaled pixels, and the median of a mask whose
                # soft edge moves by a pixel or two
                assert f[1 + j] == pytest.approx(measured[j], abs=3 / 255), name
            j = SHAPE_FEATURES.index("area")  # log1p: the mask moves by a few % at most
            assert f[1 + j] == pytest.approx(measured[j], abs=0.05)
    assert 18 <= scaled_views <= 54  # about half the views
    # off (the default): no draw, every view at the library's own contrast
    rng = np.random.default_rng(1)
    assert Augment().contrast_factor(rng) == 1.0
    assert rng.random() == np.random.default_rng(1).random()


ZOOSCAN = DATA / "zooscan-ecotaxa-template"


@pytest.mark.skipif(not ZOOSCAN.is_dir(), reason=f"real ZooScan vignettes absent: {ZOOSCAN}")
def test_real_zooscan_vignettes_measure_the_organism_not_the_ruler() -> None:
    """Every one of the 400 ZooScan vignettes has a ZooProcess ruler in its bottom rows
    (96 x 2 px bar, "1 mm" above it): before the ruler was recognised, 81 masks were the
    bar and, with the bar passed over, 58 faint ones the legend's letters."""
    paths = sorted(p for p in ZOOSCAN.rglob("*.jpg"))
    crops = [normalize_crop(read_image(p), "bright") for p in paths]
    masks = object_masks(crops)
    assert len(masks) == 400
    assert all(m[:-12].any() and not m[-12:].any() for m in masks)
