"""Every ROI is measurable: properties over random and degenerate masks and crops.

Each column of ``measure_rois`` is finite, or NaN exactly where its Notes say (empty mask;
circularity when the perimeter is 0; skew/kurtosis when every pixel has the same value);
the numbers agree with scikit-image and numpy on every shape, do not depend on which other
ROIs share the batch, and the EcoTaxa export made from them passes the project's validator.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plankline.imaging.measure import FEATURE_COLUMNS, measure_rois
from plankline.outputs.ecotaxa import validate_ecotaxa_zip, write_ecotaxa_zip
from plankline.outputs.tables import read_csv, write_csv
from shared_data import REAL_FRAME
from skimage.measure import perimeter as sk_perimeter
from skimage.measure import regionprops_table

KINDS = ("noise", "blob", "empty", "full", "pixel", "pair", "hline", "vline", "diag", "ring")
SHAPE_COLUMNS = {
    "area": "area",
    "perimeter": "perimeter",
    "major_axis_length": "axis_major_length",
    "minor_axis_length": "axis_minor_length",
    "orientation": "orientation",
    "eccentricity": "eccentricity",
    "centroid_x": "centroid-1",
    "centroid_y": "centroid-0",
}
# Where a NaN is documented (measure_rois Notes); everything else must be finite.
DOCUMENTED_NAN = {"circularity", "skew", "kurtosis"}


def make_mask(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A mask of the given kind; degenerate kinds fall back to what fits in (h, w)."""
    m = np.zeros((h, w), bool)
    r, c = int(rng.integers(h)), int(rng.integers(w))
    if kind == "noise":
        m = rng.random((h, w)) < rng.uniform(0.05, 0.95)
    elif kind == "blob":
        cv2.ellipse(
            m.view(np.uint8),
            (c, r),
            (int(rng.integers(0, w)), int(rng.integers(0, h))),
            float(rng.uniform(0, 180)),
            0,
            360,
            1,
            -1,
        )
    elif kind == "full":
        m[:] = True
    elif kind == "pixel":
        m[r, c] = True
    elif kind == "pair":
        m[r, c] = True
        m[min(r + int(rng.integers(2)), h - 1), min(c + 1, w - 1)] = True
    elif kind == "hline":
        m[r, int(rng.integers(w)) :] = True
    elif kind == "vline":  # a line-scan column defect: bbox width 1
        m[int(rng.integers(h)) :, c] = True
    elif kind == "diag":
        k = np.arange(min(h - r, w - c))
        m[r + k, c + k] = True
    elif kind == "ring":
        cv2.circle(m.view(np.uint8), (c, r), int(rng.integers(1, max(h, w) + 1)), 1, 1)
    return m


def make_crop(h: int, w: int, dtype: type, style: str, rng: np.random.Generator) -> np.ndarray:
    top = np.iinfo(dtype).max
    if style == "constant":
        return np.full((h, w), rng.integers(0, top + 1), dtype)
    if style == "extreme":
        return rng.choice(np.array([0, top], dtype), size=(h, w))
    return rng.integers(0, top + 1, (h, w)).astype(dtype)


@st.composite
def rois(draw, max_side: int = 200, max_n: int = 8):
    """(crops, masks): 1..max_n ROIs of random kinds, sizes 1..max_side, uint8/uint16."""
    n = draw(st.integers(1, max_n))
    crops, masks = [], []
    for _ in range(n):
        side = st.integers(1, max_side) if draw(st.booleans()) else st.integers(1, 12)
        h, w = draw(side), draw(side)
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        masks.append(make_mask(draw(st.sampled_from(KINDS)), h, w, rng))
        dtype = draw(st.sampled_from([np.uint8, np.uint16]))
        crops.append(
            make_crop(h, w, dtype, draw(st.sampled_from(["random", "constant", "extreme"])), rng)
        )
    return crops, masks


def assert_finite_or_documented(table: dict, masks: list[np.ndarray]) -> None:
    """Every value finite, except the NaNs documented in measure_rois' Notes."""
    for i, m in enumerate(masks):
        row = {k: table[k][i] for k in FEATURE_COLUMNS}
        if not m.any():
            assert row["area"] == 0 and row["esd"] == 0
            assert all(math.isnan(v) for k, v in row.items() if k not in ("area", "esd"))
            continue
        for k, v in row.items():
            if k not in DOCUMENTED_NAN:
                assert math.isfinite(v), (i, k, v)
        assert math.isnan(row["circularity"]) == (row["perimeter"] == 0), i
        for k in ("skew", "kurtosis"):
            assert math.isnan(row[k]) == (row["std"] == 0), (i, k)
            assert not math.isinf(row[k])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rois())
def test_every_column_is_finite_or_documented_empty(batch) -> None:
    crops, masks = batch
    table = measure_rois(crops, masks, pixel_size_um=10.0)
    assert_finite_or_documented(table, masks)
    for i, (c, m) in enumerate(zip(crops, masks, strict=True)):
        if not m.any():
            continue
        assert table["area"][i] == m.sum()
        rows, cols = np.nonzero(m)
        assert table["bbox_height"][i] == rows.max() - rows.min() + 1
        assert table["bbox_width"][i] == cols.max() - cols.min() + 1
        # elongation >= 1, eccentricity in [0, 1], extent and solidity in (0, 1]
        assert table["elongation"][i] >= 1
        assert 0 <= table["eccentricity"][i] <= 1
        assert 0 < table["extent"][i] <= 1
        assert 0 < table["solidity"][i] <= 1
        assert 1 <= table["feret_min"][i] <= table["feret_max"][i] + 1e-9
        # intensities: inverted with the crop's own dtype maximum
        v = np.iinfo(c.dtype).max - c[m].astype(np.float64)
        assert table["mean"][i] == pytest.approx(v.mean(), rel=1e-12)
        assert table["median"][i] == np.median(v)
        assert (table["min"][i], table["max"][i]) == (v.min(), v.max())
        assert table["std"][i] == pytest.approx(v.std(), rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rois(max_side=60))
def test_shape_features_agree_with_skimage_on_any_shape(batch) -> None:
    crops, masks = batch
    table = measure_rois(crops, masks)
    for i, m in enumerate(masks):
        if not m.any():
            continue
        sk = regionprops_table(m.astype(np.uint8), properties=["area", "orientation",
            "axis_major_length", "axis_minor_length", "eccentricity", "centroid"])  # fmt: skip
        sk["perimeter"] = [sk_perimeter(m, neighborhood=4)]
        for ours, theirs in SHAPE_COLUMNS.items():
            got, want = table[ours][i], float(sk[theirs][0])
            if ours == "orientation":  # an axis: +-pi/2 are the same (sign of a zero moment)
                major, minor = sk["axis_major_length"][0], sk["axis_minor_length"][0]
                if minor == pytest.approx(major, rel=1e-9):
                    continue  # isotropic (a square, a disc): no axis, any answer is right
                got = want + (got - want + np.pi / 2) % np.pi - np.pi / 2
            # eccentricity is sqrt(1 - l2 / l1): for an isotropic shape (a square) the
            # eigenvalues' 1e-16 rounding comes out as ~1e-8 (hypothesis found 2.4e-8)
            tol = 1e-7 if ours == "eccentricity" else 1e-9
            assert got == pytest.approx(want, rel=1e-9, abs=tol), (i, ours)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rois(max_side=80, max_n=10))
def test_a_rois_values_do_not_depend_on_the_rest_of_the_batch(batch) -> None:
    # All ROIs are measured together (one packed canvas, one pixel vector): a ROI must
    # get the same numbers alone as in any batch.
    crops, masks = batch
    together = measure_rois(crops, masks)
    for i in range(len(crops)):
        alone = measure_rois([crops[i]], [masks[i]])
        for k in FEATURE_COLUMNS:
            a, b = together[k][i], alone[k][0]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12), (i, k)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rois(max_side=40, max_n=6))
def test_ecotaxa_export_of_any_rois_is_valid(tmp_path_factory, batch) -> None:
    crops, masks = batch
    table = measure_rois(crops, masks, pixel_size_um=12.5)
    folder = tmp_path_factory.mktemp("eco")
    ids = [f"roi_{i}" for i in range(len(crops))]
    path = folder / "chunk.zip"
    write_ecotaxa_zip(
        path, object_ids=ids, images=crops, measurements=table, sample_id="s", acq_id="a"
    )
    assert validate_ecotaxa_zip(path) == []
    # the measurements CSV round-trips, NaN where the table has NaN
    write_csv(folder / "m.csv", table, float_format="%.17g")
    back = read_csv(folder / "m.csv")
    for k in FEATURE_COLUMNS:
        np.testing.assert_array_equal(np.isnan(back[k].astype(float)), np.isnan(table[k]))


# ----------------------------------------------------------------- named degenerate shapes


def _one(mask: np.ndarray, crop: np.ndarray | None = None) -> dict[str, float]:
    crop = np.full(mask.shape, 40, np.uint8) if crop is None else crop
    table = measure_rois([crop], [mask])
    assert_finite_or_documented(table, [mask])
    return {k: float(v[0]) for k, v in table.items()}


def test_vertical_one_pixel_streak_has_finite_elongation_equal_to_its_length() -> None:
    # The real-footage failure: a 1-px-wide column defect, 30 lines tall.
    m = np.zeros((42, 13), bool)
    m[6:36, 6] = True
    r = _one(m)
    major = 4 * math.sqrt((30**2 - 1) / 12)  # 4 sqrt(variance of 30 pixel centres)
    assert r["minor_axis_length"] == 0
    assert r["major_axis_length"] == pytest.approx(major)
    assert r["elongation"] == pytest.approx(major)  # minor axis counted as one pixel
    assert r["eccentricity"] == 1
    assert (r["bbox_width"], r["bbox_height"]) == (1, 30)
    assert r["feret_max"] == 30 and r["feret_min"] == 1
    assert r["perimeter"] == 28  # skimage's estimator: the two end pixels weigh 0
    assert r["circularity"] == pytest.approx(4 * math.pi * 30 / 28**2)
    assert r["convex_area"] == 30 and r["solidity"] == 1 and r["extent"] == 1


@pytest.mark.parametrize("direction", ["horizontal", "diagonal"])
def test_other_one_pixel_lines_are_measured(direction: str) -> None:
    m = np.zeros((20, 20), bool)
    if direction == "horizontal":
        m[5, 2:17] = True
    else:
        m[np.arange(2, 17), np.arange(2, 17)] = True
    r = _one(m)
    assert r["minor_axis_length"] == pytest.approx(0, abs=1e-6)
    assert r["elongation"] == pytest.approx(r["major_axis_length"])
    assert r["feret_min"] == pytest.approx(1)
    expected_max = 15 if direction == "horizontal" else 14 * math.sqrt(2) + 1
    assert r["feret_max"] == pytest.approx(expected_max)


def test_single_pixel_and_pairs_have_documented_values() -> None:
    m = np.zeros((3, 3), bool)
    m[1, 1] = True
    r = _one(m)
    assert r["area"] == 1 and r["perimeter"] == 0 and math.isnan(r["circularity"])
    assert r["major_axis_length"] == 0 and r["elongation"] == 1 and r["eccentricity"] == 0
    assert r["feret_max"] == 1 and r["feret_min"] == 1 and r["convex_area"] == 1
    assert r["std"] == 0 and math.isnan(r["skew"]) and math.isnan(r["kurtosis"])
    m[1, 2] = True
    r = _one(m)
    assert r["perimeter"] == 0 and math.isnan(r["circularity"])
    assert r["major_axis_length"] == 2 and r["elongation"] == 2


def test_object_filling_its_crop_and_touching_every_edge() -> None:
    m = np.ones((17, 9), bool)
    crop = np.arange(17 * 9, dtype=np.uint16).reshape(17, 9) * 300
    r = _one(m, crop)
    assert r["area"] == 153 and r["convex_area"] == 153
    assert r["extent"] == 1 and r["solidity"] == 1
    assert (r["bbox_width"], r["bbox_height"]) == (9, 17)
    assert r["perimeter"] == pytest.approx(sk_perimeter(m, neighborhood=4))
    assert r["max"] == 65535 and r["min"] == 65535 - 152 * 300


def test_mixed_8_and_16_bit_crops_use_their_own_maximum() -> None:
    m = np.ones((4, 4), bool)
    crops = [np.full((4, 4), 55, np.uint8), np.full((4, 4), 1000, np.uint16)]
    table = measure_rois(crops, [m, m])
    assert table["mean"].tolist() == [200.0, 64535.0]


def test_measurements_of_a_real_isiis_frame_are_finite_and_exportable(tmp_path) -> None:
    path = REAL_FRAME
    if not path.exists():
        pytest.skip(f"real ISIIS frame not found: {path} (../shared/data is absent)")
    from plankline.config import PipelineSettings
    from plankline.imaging.flatfield import FlatField
    from plankline.imaging.segment import Rois, segment_stream
    from plankline.pipeline import segment_params

    raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    settings_ = PipelineSettings()
    flat = FlatField(mode="column")  # the raw camera's look: ~200 ROIs, dark corners
    flat.prime([raw] * 4)
    rois = Rois.concat(segment_stream([(0, flat.correct(raw))], segment_params(settings_)))
    assert len(rois) >= 30
    table = measure_rois(rois.crops, rois.masks)
    assert_finite_or_documented(table, rois.masks)
    for i in range(0, len(rois), 7):
        assert table["perimeter"][i] == pytest.approx(
            sk_perimeter(rois.masks[i], neighborhood=4), rel=1e-9
        )
    ids = [f"isiis_{i}" for i in range(len(rois))]
    zip_path = tmp_path / "isiis.zip"
    write_ecotaxa_zip(
        zip_path, object_ids=ids, images=rois.crops, measurements=table, sample_id="mbari",
        acq_id="frame0",
    )  # fmt: skip
    assert validate_ecotaxa_zip(zip_path, decode_images=False) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rois(max_side=50, max_n=4))
def test_feret_diameters_are_the_extreme_caliper_widths(batch) -> None:
    # Caliper width of the pixel centres over 3,600 directions, plus one pixel: feret_max
    # is the widest, feret_min the narrowest (to within the angular step: half a step off
    # the narrowest direction moves each end by at most the shape's diameter times the step).
    crops, masks = batch
    table = measure_rois(crops, masks)
    angles = np.linspace(0, np.pi, 3600, endpoint=False)
    directions = np.stack([np.cos(angles), np.sin(angles)])
    for i, m in enumerate(masks):
        if not m.any():
            continue
        rows, cols = np.nonzero(m)
        proj = np.stack([cols, rows], 1).astype(float) @ directions
        widths = proj.max(0) - proj.min(0) + 1
        assert table["feret_max"][i] == pytest.approx(widths.max(), rel=2e-6)
        slack = (widths.max() - 1) * (angles[1] - angles[0]) + 1e-9
        assert widths.min() - slack <= table["feret_min"][i] <= widths.min() + 1e-9
