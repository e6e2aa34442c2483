"""The writers' vectorised shortcuts give exactly what their one-value-at-a-time
definitions give (the outputs of a run are byte-identical with or without them)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
from plankline.outputs.rois import encode_image, encode_images
from plankline.pipeline import capture_times


def test_capture_times_equal_start_plus_timedelta_of_each_value():
    start = datetime(2018, 7, 6, 17, 8, 5, 476000)
    rng = np.random.default_rng(0)
    lines = np.arange(0, 300_000, 7)
    seconds = np.concatenate([lines / (2048 * 13.7), rng.uniform(0, 7200, 20_000), [0.0]])
    got = capture_times(start, seconds)
    assert got == [start + timedelta(seconds=float(s)) for s in seconds]
    assert all(type(t) is datetime for t in got[:3])


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_encode_images_equals_encode_image_and_passes_bytes_through(fmt):
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (h, w), dtype=np.uint8) for h, w in [(1, 1), (5, 1), (9, 40)]]
    ids = [f"r{i}" for i in range(len(crops))]
    once = encode_images(ids, crops, fmt)
    assert once == [encode_image(c, fmt) for c in crops]
    again = encode_images(ids, once, fmt)
    assert all(a is b for a, b in zip(again, once, strict=True))
    with pytest.raises(ValueError, match="'r1'"):
        encode_images(ids, [once[0], b"not an image", once[2]], fmt)


def test_ecotaxa_tsv_same_for_datetime64_stamps_and_each_float_formatted_once(tmp_path):
    """The EcoTaxa writer's vectorised paths (capture times as one datetime64 array, finite
    measurements formatted by the row format) write the TSV the per-value path writes:
    dates/times by strftime of each datetime, every number as "%.9g", NaN empty."""
    import zipfile

    from plankline.outputs.ecotaxa import write_ecotaxa_zip
    from plankline.pipeline import capture_stamps

    start = datetime(2018, 7, 6, 23, 59, 59, 476000)
    rng = np.random.default_rng(2)
    n = 40
    seconds = np.sort(rng.uniform(0, 3, n))
    area = rng.integers(1, 10_000, n)
    esd = rng.random(n) * 100
    skew = rng.normal(0, 1, n)
    skew[3] = np.nan  # a column with a non-finite value keeps the per-value path
    crop = np.full((3, 3), 200, np.uint8)
    ids = [f"r{i:03d}" for i in range(n)]
    tsvs = []
    for stamps in (capture_times(start, seconds), capture_stamps(start, seconds)):
        path = tmp_path / f"e{len(tsvs)}.zip"
        write_ecotaxa_zip(
            path, object_ids=ids, images=[crop] * n, sample_id="s", acq_id="a",
            measurements={"area": area, "esd": esd, "skew": skew}, datetimes=stamps,
        )  # fmt: skip
        with zipfile.ZipFile(path) as z:
            tsvs.append(z.read("ecotaxa_s.tsv").decode("latin-1"))
    assert tsvs[0] == tsvs[1]
    header, _, *rows = (line.split("\t") for line in tsvs[0].splitlines())
    col = {h: i for i, h in enumerate(header)}
    times = capture_times(start, seconds)
    for i, row in enumerate(rows):
        assert row[col["object_date"]] == f"{times[i]:%Y%m%d}"
        assert row[col["object_time"]] == f"{times[i]:%H%M%S}"
        assert row[col["object_area"]] == f"{float(area[i]):.9g}"
        assert row[col["object_esd"]] == f"{esd[i]:.9g}"
        assert row[col["object_skew"]] == ("" if i == 3 else f"{skew[i]:.9g}")
