"""The real data beside the repository (``../shared/data``, sources and licences in its
README): one definition for every test; tests that need it skip where it is absent."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_FRAME = DATA / "isiis-frames" / "mbari-isiis-raw-2048.jpg"
"""The real MBARI ISIIS frame (raw, vignetted, 2048 x 2048)."""
