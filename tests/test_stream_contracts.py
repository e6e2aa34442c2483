"""The plankline.v1 contracts: keys are deterministic and validated, messages round-trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from plankline.stream import contracts as c

ROOT = Path(__file__).resolve().parents[1]


def test_generated_protobuf_modules_match_the_proto_file() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_object_keys_are_a_pure_function_of_job_video_chunk() -> None:
    key = c.chunk_key("cruise42", "20260101120000.000", 7, "rois.tar")
    assert key == "jobs/cruise42/videos/20260101120000.000/chunks/000007/rois.tar"
    assert key == c.chunk_key("cruise42", "20260101120000.000", 7, "rois.tar")
    assert key.startswith(c.chunk_prefix("cruise42", "20260101120000.000", 7))
    assert c.message_key("20260101120000.000", 7) == b"20260101120000.000/000007"


@pytest.mark.parametrize("bad", ["", "a/b", "../x", " x", "x y", "é"])
def test_ids_that_would_escape_or_break_a_key_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="job_id"):
        c.chunk_key(bad, "v", 0, "video")


def test_unknown_artifacts_and_negative_chunks_are_refused() -> None:
    with pytest.raises(ValueError, match="artifact"):
        c.chunk_key("j", "v", 0, "rois.zip")
    with pytest.raises(ValueError, match="chunk_index"):
        c.chunk_prefix("j", "v", -1)


def test_every_topic_message_round_trips_through_bytes() -> None:
    ref = c.chunk_ref("job1", "vid-1", 3, "20260101120003.000")
    messages = {
        c.TOPIC_CHUNKS: c.VideoChunk(
            chunk=ref,
            first_frame=300,
            n_frames=100,
            fps=13.7,
            video_key=c.chunk_key("job1", "vid-1", 3, "video"),
            bucket="plankline",
        ),
        c.TOPIC_ROIS: c.RoiBatch(
            chunk=ref, roi_archive_key="k.tar", positions_key="p.csv", n_rois=42
        ),
        c.TOPIC_MEASUREMENTS: c.MeasurementResult(chunk=ref, measurements_key="m.csv", n_rois=42),
        c.TOPIC_CLASSIFICATIONS: c.ClassificationResult(
            chunk=ref, classifications_key="c.csv", n_rois=42, model_name="scnn"
        ),
        c.TOPIC_DEAD_LETTER: c.Failure(
            input_topic=c.TOPIC_CHUNKS,
            input_partition=2,
            input_offset=17,
            input_value=b"\x00\xff",
            error="boom",
            service="segmenter",
            attempts=3,
        ),
    }
    assert set(messages) == set(c.TOPICS)
    for topic, message in messages.items():
        data = c.encode(message)
        assert c.encode(message) == data  # deterministic bytes
        assert c.parse(topic, data) == message
    assert c.parse(c.TOPIC_CHUNKS, c.encode(messages[c.TOPIC_CHUNKS])).fps == pytest.approx(13.7)


def test_a_message_without_a_chunk_reference_is_not_sent() -> None:
    with pytest.raises(ValueError, match=r"RoiBatch\.chunk is required"):
        c.encode(c.RoiBatch(n_rois=1))


def test_garbage_bytes_fail_with_the_record_position() -> None:
    with pytest.raises(ValueError, match=r"plankline\.chunks\[4\]@99: not a valid"):
        c.parse(c.TOPIC_CHUNKS, b"\xff\xff\xff", partition=4, offset=99)
    with pytest.raises(ValueError, match="unknown topic"):
        c.parse("other", b"")


def test_roi_pixels_round_trip_exactly_and_a_mismatch_is_refused() -> None:
    import numpy as np
    from plankline.stream.jobs import pixels_from_bytes, pixels_to_bytes

    rng = np.random.default_rng(0)
    shapes = [(3, 5), (1, 1), (40, 7)]
    crops = [rng.integers(0, 65535, s, dtype=np.uint16) for s in shapes]
    masks = [rng.random(s) > 0.5 for s in shapes]
    got_crops, got_masks = pixels_from_bytes(pixels_to_bytes(crops, masks))
    assert all(
        np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got_crops, crops, strict=True)
    )
    assert all(
        np.array_equal(a, b) and a.dtype == bool for a, b in zip(got_masks, masks, strict=True)
    )
    assert pixels_from_bytes(pixels_to_bytes([], [])) == ([], [])
    assert pixels_from_bytes(pixels_to_bytes(crops, masks), masks=False)[1] == []
    with pytest.raises(ValueError, match="positions list 2 ROIs"):
        from plankline.stream.jobs import POSITION_FIELDS, rois_from_objects

        header = ",".join(("image", *POSITION_FIELDS))
        rows = [",".join([rid] + ["1"] * len(POSITION_FIELDS)) for rid in ("a", "b")]
        rois_from_objects(pixels_to_bytes(crops, masks), "\n".join([header, *rows]).encode())
