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


# --------------------------------------------------------------------------
# training defaults (``plankline train`` and ``model.train.TrainConfig`` read them here,
# so the command line and the library cannot drift apart)
# --------------------------------------------------------------------------


class TrainingDefaults:
    """Defaults of ``plankline train`` chosen on the real multi-instrument benchmark.

    ``scripts/eval_classifier.py`` (README "Classifier") measured them; a
    default changes only when the mean over the real sets improves, never on
    one set.

    Attributes
    ----------
    stop : int
        Epochs. 100 (was 60, 40, first 20). 20 -> 40: the libraries of many classes
        with a few images each (zoolake, 35 x 10; zooscan's big vignettes)
        still underfitted after 20 (split 0: zooscan 0.664 -> 0.748, zoolake
        0.477 -> 0.485, FlowCam even; mean 0.679 -> 0.710). 40 -> 60, once the
        augmentation was cut to rotations and flips (splits 0-1, the same
        final rate): FlowCam 0.892 -> 0.919, lake camera 0.604 -> 0.646,
        ZooScan 0.779 -> 0.787, vicko 0.891 -> 0.891, NDSB subset 0.664 ->
        0.683; mean 0.766 -> 0.785. 60 -> 100 (splits 0-1): lake camera 0.646
        -> 0.651, ZooScan 0.787 -> 0.815, vicko 0.891 -> 0.904, NDSB subset
        0.683 -> 0.686, FlowCam 0.919 -> 0.892; mean 0.785 -> 0.790. Costs
        100 x 1,024 draws: ~6.5 min for a library of 1,000 images on one core
        (~265 images/s).
    lrd : float
        Learning-rate decay per epoch (``ilr * exp(-lrd * epoch)``): 0.02, so
        that the rate at the last epoch is what 60 at 1/30, 40 at 0.05 and 20
        at 0.1 ended with.
    colour : bool
        Feed the organism's colour (``model.data.COLOUR_FEATURES``) beside the
        measurements.
    fill : int
        Crops (and training views, which are trimmed to the organism) whose
        longer side is under 32 px are enlarged to 32 on the 64 px canvas, with
        the log2 scale fed beside the image (was 0: placed unscaled). Splits
        0-1: NDSB subset 0.686 -> 0.726 (0.670 -> 0.723, 0.701 -> 0.728; 4 % of
        its training views are under 32 px, none of its test crops), vicko 0.904
        -> 0.904 (87 % of its crops are under 32 px; 0.891 -> 0.883, 0.916 ->
        0.925); FlowCam, ZooScan and the lake camera have no view under 32 px and
        give identical figures. 48 on split 0: NDSB 0.683, vicko 0.884.
    forest : float
        Weight of the random forest on the measurements in the prediction
        (``model.forest``): 0. On split 0, at 0.33: Scripps camera +0.043 (100
        a class) and +0.060 (40 a class, splits 0-1); lake camera -0.009, NDSB
        subset -0.011 (splits 0-1), ZooScan -0.014, vicko and FlowCam even. The
        mean over the six imagers is +0.003, which is noise, so it is a setting for
        imagers whose measurement baselines are level with the network.
    """

    stop: int = 100
    lrd: float = 0.02
    colour: bool = True
    fill: int = 32
    forest: float = 0.0


TRAINING = TrainingDefaults()
