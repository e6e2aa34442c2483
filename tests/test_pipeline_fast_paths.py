"""The chunk-at-once helpers give what the per-ROI code gave, and the stage timer adds up."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import numpy as np
import pytest
from plankline.outputs.naming import roi_id, roi_ids
from plankline.pipeline import STAGES, StageTimes, iso_times


def test_roi_ids_equal_roi_id_per_roi() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 10**6, 500)
    line, column = frame * 2048 + rng.integers(0, 2048, 500), rng.integers(0, 99999, 500)
    got = roi_ids("20180706170805.476", frame, line, column)
    want = [roi_id("20180706170805.476", int(f), int(li), int(c), i)
            for i, (f, li, c) in enumerate(zip(frame, line, column, strict=True))]  # fmt: skip
    assert got == want
    assert roi_ids("dive3-c0000", np.zeros(0, np.int64), [], []) == []


@pytest.mark.parametrize(
    ("frame", "chunk"), [([-1], "a"), ([1.5], "a"), ([1], "has space"), ([1], "")]
)
def test_roi_ids_refuse_what_roi_id_refuses(frame: list, chunk: str) -> None:
    with pytest.raises(ValueError):
        roi_ids(chunk, frame, [0], [0])


def test_iso_times_equal_timedelta_and_isoformat() -> None:
    start = datetime(2018, 7, 6, 17, 8, 5, 476000)
    rng = np.random.default_rng(1)
    seconds = np.concatenate(
        [rng.uniform(0, 86_400 * 3, 50_000), np.arange(0, 2, 1 / 13.7 / 2048), [0.0, 0.0005]]
    )
    want = [(start + timedelta(seconds=float(s))).isoformat(timespec="milliseconds")
            for s in seconds]  # fmt: skip
    assert iso_times(start, seconds).tolist() == want


def test_stage_times_charge_nested_time_to_the_innermost_stage() -> None:
    times = StageTimes()

    def slow_items():
        for i in range(3):
            with times.stage("decode"):
                time.sleep(0.02)
            yield i

    began = time.perf_counter()
    with times.stage("segment"):
        for _ in times.iterate("flatfield", slow_items()):
            time.sleep(0.01)
    wall = time.perf_counter() - began
    s = times.seconds
    assert set(s) == set(STAGES)
    assert s["decode"] >= 0.06 and s["segment"] >= 0.03
    assert s["flatfield"] < s["decode"]  # its own glue only: decode's sleeps are not in it
    assert 0.09 <= sum(s.values()) <= wall  # every interval charged once, none twice
    with pytest.raises(ValueError, match="unknown stage"):
        times.stage("painting")
