"""Flat-field correction: even out the background so one threshold fits the whole frame.

A line-scan camera (ISIIS) sees the same sensor line again and again, so its artefacts are
per *column*: pixel-response stripes and a 1-D vignetting falloff toward the sensor ends,
plus a slow drift of the light level along the tape. An area-scan frame (like the MBARI
ISIIS sample frame) adds 2-D vignetting. :class:`FlatField` keeps a running estimate of
the background, ``B(row, col) = column(col) * V(row, col)``, blended over frames with an
exponential memory and updated only from background pixels (objects excluded), and maps
every frame to ``level * frame / B``: background at ``level`` (255 like the OSU pipeline's
flat-fielded TIFFs), objects dark.

Cost per 2048x2048 frame is a few ms: one broadcast multiply, a saturating cast, and the
estimate update on every ``sample_step``-th row (the column statistics need far fewer than
2048 rows to beat the noise).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import cv2
import numpy as np


class FlatField:
    """Running background estimate of a video, and the correction it implies.

    Parameters
    ----------
    mode : {"column", "vignetting", "both"}
        ``column``: per-column gain only (line-scan). ``vignetting``: a smooth 2-D
        background only (area-scan). ``both``: column gain times a smooth 2-D residual.
    memory : float
        Weight of the old estimate at each update, in [0, 1): 0.9 follows drift over ~10
        frames; 0 re-estimates from each frame alone.
    level : float
        Output value of the background (uint8 scale).
    object_margin : float
        A pixel darker than ``(1 - object_margin) * level`` after correction counts as an
        object and is left out of the background update.
    sample_step : int
        Use every n-th row to update the estimate (speed; >= 1).
    grid : int
        Cell size in px of the low-resolution 2-D background (vignetting modes); objects much
        larger than a few cells are still excluded by the object mask.
    smooth : float
        Gaussian sigma, in cells, smoothing the 2-D background.
    rows : bool
        Also correct a per-line gain estimated from each frame itself (line-scan lamp
        drift/flicker along the tape; ignored in ``vignetting`` mode).

    Examples
    --------
    >>> ff = FlatField(mode="column", memory=0.9)
    >>> ff.prime(first_frames)                     # doctest: +SKIP
    >>> flat = [ff.correct(f) for f in frames]     # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        mode: Literal["column", "vignetting", "both"] = "column",
        memory: float = 0.9,
        level: float = 255.0,
        object_margin: float = 0.12,
        sample_step: int = 8,
        grid: int = 32,
        smooth: float = 1.5,
        rows: bool = True,
    ) -> None:
        if mode not in ("column", "vignetting", "both"):
            raise ValueError(f"FlatField mode must be column, vignetting or both, got {mode!r}")
        if not 0 <= memory < 1:
            raise ValueError(f"FlatField memory must be in [0, 1), got {memory}")
        if not 0 < level <= 255 or not 0 < object_margin < 1:
            raise ValueError("FlatField level must be in (0, 255], object_margin in (0, 1)")
        if sample_step < 1 or grid < 2 or smooth < 0:
            raise ValueError("FlatField sample_step >= 1, grid >= 2 and smooth >= 0 required")
        self.mode = mode
        self.memory = float(memory)
        self.level = float(level)
        self.object_margin = float(object_margin)
        self.sample_step = int(sample_step)
        self.grid = int(grid)
        self.smooth = float(smooth)
        self.rows = bool(rows)
        self.shape: tuple[int, int] | None = None
        self.column: np.ndarray | None = None  # (W,) float32 background per column
        self.vignette: np.ndarray | None = None  # (H/grid, W/grid) float32, mean ~1
        self._gain: np.ndarray | None = None  # (W,) or (H, W) float32, level / background
        self._buf: np.ndarray | None = None

    # ----------------------------------------------------------------- public

    def reset(self) -> None:
        """Forget the estimate (a new video, a new deployment)."""
        self.shape = self.column = self.vignette = self._gain = self._buf = None

    def prime(self, frames: Iterable[np.ndarray]) -> None:
        """Warm the estimate on some frames so a chunk's first frame is corrected as well
        as its tenth (e.g. the first few frames of the chunk, or the ones before it)."""
        for frame in frames:
            self._check(frame)
            if self.column is None:
                self._initialise(frame)
            self._corrected_float(frame)
            self._update(frame)

    def correct(self, frame: np.ndarray) -> np.ndarray:
        """Flat-field one frame and fold its background into the running estimate.

        Parameters
        ----------
        frame : (H, W) uint8 or uint16
            Raw frame, same shape as the frames before it.

        Returns
        -------
        (H, W) uint8
            Background ~``level``, objects dark.
        """
        self._check(frame)
        if self.column is None:
            self._initialise(frame)
        corrected = self._corrected_float(frame)
        out = cv2.convertScaleAbs(corrected)  # round + saturate to uint8 in one pass
        self._update(frame)
        return out

    def background(self) -> np.ndarray:
        """The current background estimate ``B`` as a full-size float32 image."""
        if self.column is None or self.shape is None:
            raise ValueError("FlatField has no estimate yet: call prime() or correct() first")
        h, w = self.shape
        bg = np.broadcast_to(self.column[None, :], (h, w)).astype(np.float32)
        if self.vignette is not None:
            bg = bg * self._vignette_full()
        return bg

    # ----------------------------------------------------------------- internals

    def _check(self, frame: np.ndarray) -> None:
        if (
            not isinstance(frame, np.ndarray)
            or frame.ndim != 2
            or frame.dtype not in (np.uint8, np.uint16)
        ):
            raise ValueError(
                f"frame must be 2-D uint8 or uint16, got "
                f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}"
            )
        if self.shape is not None and frame.shape != self.shape:
            raise ValueError(f"frame shape {frame.shape} differs from earlier frames {self.shape}")

    def _small_shape(self) -> tuple[int, int]:
        h, w = self.shape  # type: ignore[misc]
        return max(2, round(h / self.grid)), max(2, round(w / self.grid))

    def _initialise(self, frame: np.ndarray) -> None:
        """First estimate from one frame: robust statistics that ignore dark objects."""
        self.shape = frame.shape
        sub = frame[:: self.sample_step].astype(np.float32)
        if self.mode == "column":
            self.column = np.percentile(sub, 75, axis=0).astype(np.float32)
            self.vignette = None
        else:
            sh, sw = self._small_shape()
            small = cv2.resize(frame.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
            # Grayscale closing removes dark objects a few cells across (they are darker
            # than their surroundings); blur gives the smooth vignetting field.
            small = cv2.morphologyEx(small, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
            if self.mode == "both":
                col = np.percentile(sub, 75, axis=0).astype(np.float32)
                col_small = cv2.resize(col[None, :], (sw, 1), interpolation=cv2.INTER_AREA)[0]
                vig = small / np.maximum(col_small[None, :], 1e-3)
                scale = float(np.median(vig))
                self.vignette = self._blur(vig / scale)
                # The column profile keeps the fine stripes; the coarse shape is the vignette's.
                self.column = col / np.maximum(self._vignette_columns(), 1e-3)
            else:
                self.vignette = self._blur(small / max(float(np.median(small)), 1e-3))
                self.column = np.full(frame.shape[1], float(np.median(small)), np.float32)
        self._refresh_gain()
        # One refinement pass with objects masked out, so the first frame is corrected well.
        self._corrected_float(frame)
        keep = self.memory
        self.memory = 0.0
        self._update(frame)
        self.memory = keep

    def _blur(self, small: np.ndarray) -> np.ndarray:
        if self.smooth > 0:
            small = cv2.GaussianBlur(small, (0, 0), self.smooth, borderType=cv2.BORDER_REPLICATE)
        return small.astype(np.float32)

    def _vignette_full(self) -> np.ndarray:
        h, w = self.shape  # type: ignore[misc]
        return cv2.resize(self.vignette, (w, h), interpolation=cv2.INTER_LINEAR)

    def _vignette_columns(self) -> np.ndarray:
        """Mean vignetting per full-resolution column (its column-wise shape)."""
        w = self.shape[1]  # type: ignore[index]
        mean_row = self.vignette.mean(axis=0, keepdims=True)  # type: ignore[union-attr]
        return cv2.resize(mean_row, (w, 1), interpolation=cv2.INTER_LINEAR)[0]

    def _refresh_gain(self) -> None:
        col_gain = (self.level / np.maximum(self.column, 1e-3)).astype(np.float32)  # type: ignore[arg-type]
        if self.vignette is None:
            self._gain = col_gain
        else:
            full = self._vignette_full()
            np.maximum(full, 1e-3, out=full)
            self._gain = np.divide(col_gain[None, :], full).astype(np.float32)

    def _corrected_float(self, frame: np.ndarray) -> np.ndarray:
        if self._buf is None or self._buf.shape != frame.shape:
            self._buf = np.empty(frame.shape, np.float32)
        gain = self._gain
        if not (self.rows and self.mode != "vignetting"):
            np.multiply(frame, gain[None, :] if gain.ndim == 1 else gain, out=self._buf)  # type: ignore[union-attr]
            return self._buf
        # Row gain from a column subsample, then one cache-friendly pass in row blocks.
        sub_gain = gain[::8] if gain.ndim == 1 else gain[:, ::8]  # type: ignore[index]
        rowg = self._row_gain(np.multiply(frame[:, ::8], sub_gain, dtype=np.float32))[:, None]
        buf = self._buf
        block = 64
        for y in range(0, frame.shape[0], block):
            sl = slice(y, y + block)
            np.multiply(frame[sl], gain if gain.ndim == 1 else gain[sl], out=buf[sl])  # type: ignore[index]
            buf[sl] *= rowg[sl]
        return buf

    def _row_gain(self, corr: np.ndarray) -> np.ndarray:
        """Per-line gain from this frame alone: lamp drift and flicker along the tape.

        ``corr`` is every 8th column, column-corrected. Mean of the background pixels of
        each line, smoothed over a few
        lines by normalised convolution so lines crossed by a large object borrow from
        their neighbours.
        """
        sub = np.ascontiguousarray(corr)
        _, is_bg = cv2.threshold(
            sub, self.level * (1 - self.object_margin) - 1e-3, 1.0, cv2.THRESH_BINARY
        )
        sums = cv2.reduce(cv2.multiply(sub, is_bg), 1, cv2.REDUCE_SUM)
        counts = cv2.reduce(is_bg, 1, cv2.REDUCE_SUM)
        sums = cv2.GaussianBlur(sums, (1, 0), sigmaX=0, sigmaY=6, borderType=cv2.BORDER_REPLICATE)
        counts = cv2.GaussianBlur(
            counts, (1, 0), sigmaX=0, sigmaY=6, borderType=cv2.BORDER_REPLICATE
        )
        mean = np.where(counts[:, 0] > 2, sums[:, 0] / np.maximum(counts[:, 0], 1e-6), self.level)
        return (self.level / np.maximum(mean, 1e-3)).astype(np.float32)

    def _update(self, frame: np.ndarray) -> None:
        """Blend in this frame's background (uses the corrected values left in the buffer).

        Works on every ``sample_step``-th row with OpenCV reductions: a 0/1 background mask
        from the corrected values, masked column sums (column term) and masked cell means
        (vignetting term), so no full-resolution temporaries are made.
        """
        step = self.sample_step
        corr = self._buf[::step]  # type: ignore[index]
        raw = frame[::step].astype(np.float32)
        _, is_bg = cv2.threshold(
            corr, self.level * (1 - self.object_margin) - 1e-3, 1.0, cv2.THRESH_BINARY
        )
        a = 1.0 - self.memory
        counts = cv2.reduce(is_bg, 0, cv2.REDUCE_SUM)[0]
        ok = counts >= max(4, raw.shape[0] // 20)
        if self.vignette is None:
            sums = cv2.reduce(cv2.multiply(raw, is_bg), 0, cv2.REDUCE_SUM)[0]
            new_col = np.where(ok, sums / np.maximum(counts, 1), self.column)
            self.column = ((1 - a) * self.column + a * new_col).astype(np.float32)
            self._refresh_gain()
            return
        sh, sw = self.vignette.shape
        w = self.shape[1]  # type: ignore[index]
        if self.mode == "both":
            # Column term from the background divided by the current vignette.
            vig_rows = cv2.resize(self.vignette, (w, raw.shape[0]), interpolation=cv2.INTER_LINEAR)
            raw_v = cv2.divide(raw, np.maximum(vig_rows, 1e-3, out=vig_rows))
            sums = cv2.reduce(cv2.multiply(raw_v, is_bg), 0, cv2.REDUCE_SUM)[0]
            new_col = np.where(ok, sums / np.maximum(counts, 1), self.column)
            self.column = ((1 - a) * self.column + a * new_col).astype(np.float32)
            colcorr = raw / np.maximum(self.column[None, :], 1e-3)  # type: ignore[index]
        else:
            colcorr = raw
        # Vignetting term: masked mean per cell of the column-corrected background.
        num = cv2.resize(cv2.multiply(colcorr, is_bg), (sw, sh), interpolation=cv2.INTER_AREA)
        den = cv2.resize(is_bg, (sw, sh), interpolation=cv2.INTER_AREA)
        valid = den > 0.2
        if not valid.any():  # a frame full of objects: keep the old estimate
            self._refresh_gain()
            return
        ratio = num / np.maximum(den, 1e-6)
        scale = max(float(np.median(ratio[valid])), 1e-3)
        new_v = np.where(valid, ratio / scale, self.vignette)
        if self.mode == "vignetting":
            # The overall level lives in the (constant) column term; V stays around 1.
            self.column = ((1 - a) * self.column + a * scale).astype(np.float32)
        self.vignette = ((1 - a) * self.vignette + a * self._blur(new_v)).astype(np.float32)
        self._refresh_gain()
