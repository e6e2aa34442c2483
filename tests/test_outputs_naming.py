"""Chunk and ROI names: timestamp arithmetic and traceability."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
from plankline.outputs.naming import (
    RoiRef,
    chunk_name,
    date_time_texts,
    format_timestamp,
    frame_time,
    parse_roi_id,
    parse_timestamp,
    roi_id,
)


def test_chunk_zero_of_isiis_video_is_the_video_stem():
    assert chunk_name("20180706170805.476", 0, 0, 13.7) == "20180706170805.476"


def test_chunk_is_named_by_its_own_start_time():
    # 411 frames at 13.7 fps = 30.000 s after the video start.
    assert chunk_name("20180706170805.476", 1, 411, 13.7) == "20180706170835.476"
    # 137 frames at 13.7 fps = 10 s; 1 frame at 13.7 fps = 72.99 ms -> 73 ms.
    assert chunk_name("20180706170805.476", 3, 1, 13.7) == "20180706170805.549"


def test_chunk_time_crosses_minute_day_and_year():
    assert chunk_name("20180706170859.900", 1, 10, 10.0) == "20180706170900.900"
    assert chunk_name("20181231235959.900", 1, 2, 10.0) == "20190101000000.100"
    assert chunk_name("20200228235930.000", 1, 600, 10.0) == "20200229000030.000"


def test_non_timestamp_stems_get_chunk_index_suffix_including_chunk_zero():
    assert chunk_name("dive3_cam1", 0, 0, 13.7) == "dive3_cam1-c0000"
    assert chunk_name("dive3_cam1", 12, 5000, 13.7) == "dive3_cam1-c0012"


def test_timestamp_stem_without_fps_falls_back_to_index_suffix():
    assert chunk_name("20180706170805.476", 2, 800, None) == "20180706170805.476-c0002"


def test_chunk_name_rejects_bad_input():
    with pytest.raises(ValueError, match="fps"):
        chunk_name("20180706170805.476", 1, 10, 0.0)
    with pytest.raises(ValueError, match="start_frame"):
        chunk_name("x", 1, -1, 10.0)
    with pytest.raises(ValueError, match="video_stem"):
        chunk_name("has space", 0, 0, 10.0)


def test_parse_timestamp_finds_stamp_in_seed_file_names():
    want = datetime(2018, 7, 6, 17, 8, 5, 476000)
    for name in (
        "20180706170805.476",
        "raw/20180706170805.476.avi",
        "excsvs/20180706170805.476-library_bigcam.csv",
        "20180706170805.476.tar.gz",
    ):
        assert parse_timestamp(name) == want, name


def test_parse_timestamp_returns_none_for_other_names():
    assert parse_timestamp("dive3_cam1.avi") is None
    assert parse_timestamp("20181399999999.000.avi") is None  # not a date
    assert parse_timestamp("1201807061708051.476") is None  # 15 digits: not a stamp


def test_format_timestamp_rounds_to_milliseconds():
    assert format_timestamp(datetime(2018, 7, 6, 17, 8, 5, 476400)) == "20180706170805.476"
    assert format_timestamp(datetime(2018, 7, 6, 17, 8, 59, 999600)) == "20180706170900.000"


def test_frame_time_adds_frame_over_fps():
    t = frame_time("20180706170805.476", 137, 13.7)
    assert t == datetime(2018, 7, 6, 17, 8, 15, 476000)
    assert frame_time("dive3", 10, 13.7) is None
    assert frame_time("20180706170805.476", 10, None) is None


def test_roi_id_format_and_round_trip():
    rid = roi_id("20180706170805.476", 12, 24576, 1234, 3)
    assert rid == "20180706170805.476_f000012_l00024576_x01234_r0003"
    assert " " not in rid
    assert parse_roi_id(rid) == RoiRef("20180706170805.476", 12, 24576, 1234, 3)
    assert parse_roi_id(rid + ".png") == RoiRef("20180706170805.476", 12, 24576, 1234, 3)
    assert parse_roi_id("dive3-c0001_f000001_l00002048_x00005_r0012").chunk == "dive3-c0001"
    assert parse_roi_id("random.png") is None


def test_roi_ids_are_unique_within_a_chunk():
    ids = {
        roi_id("c", f, f * 2048 + y, x, i)
        for i, (f, y, x) in enumerate((f, y, x) for f in range(3) for y in (0, 7) for x in (0, 9))
    }
    assert len(ids) == 12


def test_roi_id_rejects_negative_and_bad_chunk():
    with pytest.raises(ValueError, match="line"):
        roi_id("c", 0, -1, 0, 0)
    with pytest.raises(ValueError, match="chunk"):
        roi_id("a b", 0, 0, 0, 0)


def test_date_time_texts_equal_strftime_of_each_stamp():
    start = datetime(2018, 7, 6, 23, 59, 58, 476000)
    rng = np.random.default_rng(0)
    offsets = np.concatenate([np.arange(0, 5, 1 / 137), rng.uniform(0, 86400 * 3, 500)])
    times = [start + timedelta(seconds=float(s)) for s in offsets]
    stamps = np.array([*times, None], dtype="datetime64[us]")
    dates, hms = date_time_texts(stamps)
    assert dates == [f"{t:%Y%m%d}" for t in times] + [""]
    assert hms == [f"{t:%H%M%S}" for t in times] + [""]
    assert date_time_texts(np.array([], "datetime64[us]")) == ([], [])


def test_file_names_become_stems_ids_can_hold_and_safe_ones_stay() -> None:
    """Spaces, brackets, accents: the name of a user's file failed its whole video (or every
    chunk at the ROI tar); the stem now holds only what ROI ids and keys accept."""
    from plankline.outputs.naming import safe_stem
    from plankline.pipeline import video_stem

    cases = {
        "Überfahrt Station #3 (tow 1)": "Uberfahrt_Station_3_tow_1",
        "cast[2]_20240611T101500": "cast_2_20240611T101500",
        "  x (1) ": "x_1",
        "20180706170805.476": "20180706170805.476",  # ISIIS stamps and safe names unchanged
        "dive3_cam1.v2": "dive3_cam1.v2",
        "a__b": "a__b",
    }
    for name, want in cases.items():
        assert safe_stem(name) == want, name
        assert chunk_name(safe_stem(name), 1, 100, 13.7)  # accepted
    assert safe_stem("日本語") == safe_stem("日本語") != safe_stem("中文")
    assert safe_stem("日本語").startswith("video-")
    assert video_stem("raw/Überfahrt Station #3 (tow 1).avi") == "Uberfahrt_Station_3_tow_1"
    assert video_stem("20180706170805.476.ts") == "20180706170805.476"
