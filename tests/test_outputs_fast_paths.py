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
