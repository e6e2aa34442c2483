"""Typed settings for each entry point.

Precedence, highest first: command-line options, ``PLANKLINE_*`` environment
variables, the ``.ini`` file given with ``--config`` (section ``[plankline]``,
like the seed's ``plankline.py -c cgrb.ini``), then the defaults, which run on
a laptop.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

INI_SECTION = "plankline"


class IniSettingsSource(PydanticBaseSettingsSource):
    """Reads the ``[plankline]`` section of the ``.ini`` named by the ``config`` field."""

    def __init__(self, settings_cls: type[BaseSettings], ini_path: Path | None) -> None:
        super().__init__(settings_cls)
        self.values: dict[str, Any] = {}
        if ini_path is None:
            return
        path = Path(ini_path)
        if not path.is_file():
            raise ValueError(f"{path}: config file not found")
        parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
        parser.read(path)
        if not parser.has_section(INI_SECTION):
            raise ValueError(f"{path}: no [{INI_SECTION}] section")
        known = set(settings_cls.model_fields)
        for key, value in parser.items(INI_SECTION):
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"{path}: unknown setting {key!r} in [{INI_SECTION}]")
            self.values[name] = value

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


class PipelineSettings(BaseSettings):
    """How a chunk is processed: the same fields in the batch CLI and in every service,
    so the two produce the same outputs for the same video."""

    model_config = SettingsConfigDict(env_prefix="PLANKLINE_", extra="forbid")

    chunk_frames: int = Field(100, ge=1, description="Frames per chunk (unit of work and output).")
    fps: float | None = Field(None, gt=0, description="Frame rate when the container lacks one.")
    # flat-field
    flatfield: Literal["column", "vignetting", "both"] = "both"
    prime_frames: int = Field(8, ge=0, description="Frames used to warm the background estimate.")
    # segmentation
    polarity: Literal["auto", "bright-field", "dark-field"] = Field(
        "auto",
        description="Dark organisms on light (bright-field) or bright on black (dark-field);"
        " auto decides from the first frame and inverts dark-field video once.",
    )
    method: Literal["adaptive", "static", "percentile", "otsu"] = Field(
        "adaptive",
        description="adaptive: levels from the footage's own background noise, hysteresis.",
    )
    threshold: float | None = Field(None, description="Static threshold on the flat-fielded frame.")
    k_high: float | None = Field(None, gt=0, description="Adaptive seed level, noise sigmas.")
    k_low: float | None = Field(None, gt=0, description="Adaptive growth level, noise sigmas.")
    min_area_px: int | None = Field(None, ge=1)
    max_area_px: int | None = Field(None, ge=1)
    pixel_size_um: float | None = Field(None, gt=0, description="Pixel size; enables _um columns.")
    min_esd_um: float | None = Field(None, gt=0)
    max_esd_um: float | None = Field(None, gt=0)
    padding: int | None = Field(None, ge=0)
    image_format: Literal["png", "jpg"] = "png"
    # classification
    classify: bool = True
    model: Path | None = Field(None, description="Model folder; default = the shipped model.")
    classify_min_px: int | None = Field(
        None,
        ge=0,
        description="ROIs whose longer bbox side is under this many px are not shown to the"
        " model: class below_model_size. Default: the model's own gate (meta.json"
        " min_object_px, set at training so that at most 2 % of its training objects are"
        " smaller; 8 px for the default model); 0 classifies every ROI.",
    )
    # EcoTaxa metadata (optional)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    depth_m: float | None = None

    @field_validator(
        "fps",
        "threshold",
        "k_high",
        "k_low",
        "min_area_px",
        "max_area_px",
        "pixel_size_um",
        "min_esd_um",
        "max_esd_um",
        "padding",
        "model",
        "lat",
        "lon",
        "depth_m",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value


class BatchSettings(PipelineSettings):
    """Everything the batch pipeline needs; one field per ``.ini`` key and CLI option."""

    config: Path | None = Field(None, description="Optional .ini file with a [plankline] section.")
    project: Path = Field(Path("."), description="Project folder holding raw/.")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        ini_path = init_settings.init_kwargs.get("config") or os.environ.get("PLANKLINE_CONFIG")  # type: ignore[attr-defined]
        return (init_settings, env_settings, IniSettingsSource(settings_cls, ini_path))

    def masked(self) -> dict[str, Any]:
        """The effective configuration, for printing at start (no secrets here yet)."""
        return self.model_dump(mode="json")
