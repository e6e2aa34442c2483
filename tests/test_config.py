"""Settings files: the README's example .ini loads as written (comments and all)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from plankline.config import BatchSettings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_ini_example_loads_with_its_inline_comments(tmp_path: Path) -> None:
    block = re.search(r"```ini\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no ```ini example"
    ini = tmp_path / "cgrb.ini"
    ini.write_text(block.group(1))
    settings = BatchSettings(config=ini)
    assert settings.flatfield == "both"
    assert settings.method == "adaptive" and settings.polarity == "auto"
    assert settings.k_high == 5 and settings.k_low == 2.5
    assert settings.threshold is None  # commented out
    assert settings.pixel_size_um == 68 and settings.lat == 44.65


def test_an_unknown_ini_key_is_refused_naming_it(tmp_path: Path) -> None:
    ini = tmp_path / "bad.ini"
    ini.write_text("[plankline]\nthreshhold = 100\n")
    with pytest.raises(ValueError, match="threshhold"):
        BatchSettings(config=ini)
