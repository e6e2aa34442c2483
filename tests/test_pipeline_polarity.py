"""The pipeline honours the polarity setting: auto finds dark-field video by itself."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from plankline.config import PipelineSettings
from plankline.imaging.score import score_video
from plankline.imaging.synth import synth_frames
from plankline.pipeline import Chunk, find_rois

S = 512


@pytest.fixture(scope="module")
def dark_video() -> tuple[list[np.ndarray], object]:
    frames, truth = synth_frames(
        10,
        height=S,
        width=S,
        seed=3,
        difficulty="hard",
        density=160 * S * S / 2048**2,
        polarity="dark-field",
    )
    return list(frames), truth


def _recall(frames: list[np.ndarray], truth: object, polarity: str) -> float:
    def read(start: int, stop: int | None) -> Iterator[tuple[int, np.ndarray]]:
        for i in range(start, len(frames) if stop is None else min(stop, len(frames))):
            yield i, frames[i]

    chunk = Chunk("dark.avi", 0, 0, len(frames), "dark-c0000", None, S)
    settings = PipelineSettings(polarity=polarity, chunk_frames=len(frames))
    rois, _ = find_rois(read, chunk, settings)
    return score_video(truth, rois, min_area_px=25).recall


def test_dark_field_video_is_found_with_auto_and_lost_when_forced_bright(dark_video) -> None:
    frames, truth = dark_video
    auto = _recall(frames, truth, "auto")
    dark = _recall(frames, truth, "dark-field")
    bright = _recall(frames, truth, "bright-field")
    assert auto >= 0.95 and auto == dark
    assert bright < 0.5  # the setting reaches the flat-field: forcing the wrong one fails
