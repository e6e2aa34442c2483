"""Training the classifier on a folder-per-class library, the way the seed's isiis_scnn did.

Options carry the seed's names (``start stop bs ilr lrd vsp``): weights are
saved after every epoch as ``<out>/epoch_NNNN.pt`` (model + optimizer state),
``start=N`` resumes from epoch N's checkpoint, ``start == stop`` trains
nothing, and the learning rate of the epoch that follows ``e`` completed
epochs is ``ilr * exp(-lrd * e)``.

Determinism: every random choice (split, sampling order, augmentation,
dropout) is drawn from streams keyed by ``(seed, epoch, ...)``, so a run
resumed from epoch N ends with the same weights as an uninterrupted one, and
the number of DataLoader workers does not change the result.

Optimiser: Adam (``ilr`` 2e-3) by default. Graham's SGD with momentum 0.999
and batch 350 needs hundreds of epochs; on the small libraries users start
from, Adam reaches the same plateau in tens of epochs on a CPU. ``--optimizer
sgd`` (momentum 0.9, Nesterov) is kept for large libraries.
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from plankline.defaults import TRAINING
from plankline.model.data import (
    POLARITIES,
    Augment,
    CanvasDataset,
    Library,
    feature_names,
    load_library,
    min_object_px,
    model_inputs,
    network_inputs,
    object_measurements,
    place_on_canvas,
    shape_features_of,
    split_indices,
)
from plankline.model.forest import FOREST_TREES, fit_forest, forest_digest, forest_predictor, mix
from plankline.model.pretrained import calibrate, load_trunk
from plankline.model.scnn import ARCHS, STEMS, build_model, mean_of_heads, multiply_adds

BALANCE = ("sampling", "weighting", "none")
LOG_COLUMNS = (
    "epoch",
    "lr",
    "train_mistakes_pct",
    "train_nll",
    "val_mistakes_pct",
    "val_nll",
    "images_per_s",
    "time_s",
    "mmac_per_sample",
)


@dataclass
class TrainConfig:
    """Every training setting; stored in each checkpoint so runs can be resumed and audited.

    Attributes mirror the CLI options (``plankline train --help``).
    """

    library: str
    out: str
    start: int = 0
    stop: int = TRAINING.stop
    bs: int = 32
    ilr: float = 2e-3
    lrd: float = TRAINING.lrd
    vsp: float = 20.0
    device: str = "cpu"
    arch: str = "scnn"
    canvas: int = 64
    fill: int = TRAINING.fill  # enlarge smaller crops to this (defaults.TrainingDefaults)
    width: int = 6
    layers: int = 8
    # FlowCam, 20 splits: a stride-2 first convolution 0.880, full resolution + max-pool
    # 0.882 (paired difference -0.002, se 0.008) at 1.4x the inference cost
    stem: str = "stride"
    class_min: int = 2
    balance: str = "sampling"
    optimizer: str = "adam"
    seed: int = 0
    workers: int = 0
    # draws per epoch at least; 1024 (was 512) raised FlowCam macro-F1 0.833 -> 0.875 over
    # splits 0-4 and 0.780 -> 0.807 over 0-9 (2048: 0.879 over 0-4 at twice the time)
    min_epoch_images: int = 1024
    weight_decay: float = 1e-4
    ema: float = 0.98
    # measurements beside the image (data.SHAPE_FEATURES), computed once per training image:
    # the augmented views share them (rotation and flips leave them unchanged)
    shapes: bool = True
    # the organism's colour (data.COLOUR_FEATURES, measured on the raw image before it is made
    # gray) beside the measurements; gray libraries give every image the same values
    colour: bool = TRAINING.colour
    # FlowCam, 20 seeded splits (scripts/eval_classifier.py --splits 20): one network 0.839,
    # with a head per branch 0.848, three such networks averaged 0.877, three of width 6
    # (1.8x the cost of one of width 8, not 3x) 0.88 (RF 0.809, GBM 0.773)
    aux_heads: bool = True
    members: int = 3
    # weight of a random forest on the same measurements in the prediction (model.forest);
    # 0 trains the network alone. The log's validation figures are the network's alone;
    # evaluation and export include the forest
    forest: float = TRAINING.forest
    # the imager's convention: "auto" detects it from the library (majority of the images'
    # own, data.library_polarity); the result is stored in every checkpoint and the export
    polarity: str = "auto"
    # a model folder (or its model.onnx) whose sCNN trunk and measurement embedding the
    # network starts from (model.pretrained); "" starts from random weights
    init: str = ""
    augment: dict[str, Any] = field(default_factory=lambda: asdict(Augment()))

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.start < 0 or self.stop < self.start:
            raise ValueError(f"need 0 <= start <= stop, got start={self.start} stop={self.stop}")
        if self.bs < 2:
            raise ValueError(f"bs (batch size) must be >= 2, got {self.bs}")
        if self.ilr <= 0 or self.lrd < 0:
            raise ValueError(f"need ilr > 0 and lrd >= 0, got ilr={self.ilr} lrd={self.lrd}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
        if self.balance not in BALANCE:
            raise ValueError(f"balance must be one of {BALANCE}, got {self.balance!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")
        if not 0.0 <= self.forest < 1.0:
            raise ValueError(f"forest (its weight) must be in [0, 1), got {self.forest}")
        if self.polarity != "auto" and self.polarity not in POLARITIES:
            raise ValueError(
                f"polarity must be 'auto' or one of {POLARITIES}, got {self.polarity!r}"
            )
        if self.canvas < 16:
            raise ValueError(f"canvas must be >= 16 px, got {self.canvas}")
        if self.fill < 0:
            raise ValueError(f"fill must be >= 0 px, got {self.fill}")
        contrast = self.augment.get("contrast", 0.0)
        if not 0.0 <= contrast < 1.0:
            raise ValueError(f"augment contrast must be in [0, 1), got {contrast}")


@dataclass
class EpochStats:
    """One line of the training log (the seed's Table 1)."""

    epoch: int
    lr: float
    train_mistakes_pct: float
    train_nll: float
    val_mistakes_pct: float
    val_nll: float
    images_per_s: float
    time_s: float
    mmac_per_sample: float

    def line(self) -> str:
        """The log line printed per epoch."""
        val = (
            f"val Mistakes {self.val_mistakes_pct:5.1f}% NLL {self.val_nll:.3f}"
            if not math.isnan(self.val_nll)
            else "val -"
        )
        return (
            f"epoch {self.epoch:4d}  lr {self.lr:.2e}  "
            f"train Mistakes {self.train_mistakes_pct:5.1f}% NLL {self.train_nll:.3f}  {val}  "
            f"{self.images_per_s:6.0f} img/s  "
            f"{self.time_s:5.1f} s  {self.mmac_per_sample:.1f} MMAC/sample"
        )


def learning_rate(ilr: float, lrd: float, epoch: int) -> float:
    """The seed's schedule: ``ilr * exp(-lrd * epoch)`` (``epoch`` = epochs already done)."""
    return ilr * math.exp(-lrd * epoch)


def checkpoint_path(out: Path, epoch: int) -> Path:
    """``<out>/epoch_NNNN.pt``."""
    return Path(out) / f"epoch_{epoch:04d}.pt"


def latest_epoch(out: Path) -> int:
    """Highest epoch with a checkpoint in ``out`` (0 if none)."""
    eps = [int(p.stem.split("_")[1]) for p in Path(out).glob("epoch_*.pt")]
    return max(eps, default=0)


class _EpochSampler(Sampler):
    """Yields ``(epoch, draw, index)`` keys (workers see the epoch without shared state)."""

    def __init__(self, labels: np.ndarray, balance: str, seed: int, size: int) -> None:
        self.labels = labels
        self.balance = balance
        self.seed = seed
        self.size = size
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        rng = np.random.default_rng((self.seed, self.epoch, 1))
        n = len(self.labels)
        if self.balance == "sampling":
            counts = np.bincount(self.labels)
            p = 1.0 / counts[self.labels]
            idx = rng.choice(n, size=self.size, replace=True, p=p / p.sum())
        else:
            reps = -(-self.size // n)
            idx = np.concatenate([rng.permutation(n) for _ in range(reps)])[: self.size]
        return iter((self.epoch, j, int(i)) for j, i in enumerate(idx))


def _start_from(model: torch.nn.Module, init: Path, lib: Library, cfg: TrainConfig) -> None:
    """Load ``init``'s trunk into ``model`` and calibrate it on up to 512 training images."""
    path = init / "model.onnx" if init.is_dir() else init
    if not path.is_file():
        raise FileNotFoundError(f"init {init}: no model.onnx there")
    load_trunk(model, path)
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.permutation(len(lib))[:512])
    x, s, _ = _val_tensors(lib.subset(pick), cfg)
    calibrate(model, x.to(cfg.device), s.to(cfg.device))


def _val_tensors(lib: Library, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, s = network_inputs(
        lib.crops,
        cfg.canvas,
        shapes=cfg.shapes,
        colour=lib.colour_matrix() if cfg.colour else None,
        fill=cfg.fill,
    )
    return torch.from_numpy(x), torch.from_numpy(s), torch.from_numpy(lib.labels)


@torch.no_grad()
def _evaluate_logits(
    model: torch.nn.Module, x: torch.Tensor, s: torch.Tensor, device: str, bs: int = 256
) -> torch.Tensor:
    model.eval()
    out = [
        model(x[i : i + bs].to(device), s[i : i + bs].to(device)).cpu()
        for i in range(0, len(x), bs)
    ]
    return torch.cat(out) if out else torch.zeros(0)


FOREST_FILE = "forest.onnx"
"""The training's forest (:mod:`plankline.model.forest`), beside its checkpoints: fitted
once per library, so a hundred checkpoints do not carry a hundred copies."""


def load_checkpoint(path: Path, device: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`train` (trusted, our own files).

    A checkpoint trained with a forest gets its bytes as ``forest_onnx``, read from
    :data:`FOREST_FILE` beside it and checked against the digest it recorded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    ck = torch.load(path, map_location=device, weights_only=False)
    if ck.get("forest"):
        forest_path = path.parent / FOREST_FILE
        if not forest_path.is_file():
            raise FileNotFoundError(f"checkpoint {path} was trained with {forest_path}: not found")
        data = forest_path.read_bytes()
        if forest_digest(data) != ck["forest"]["sha256"]:
            raise ValueError(f"{forest_path} is not the forest checkpoint {path} was trained with")
        ck["forest_onnx"] = data
    return ck


def _forest_inputs(
    crops: Sequence[np.ndarray], cfg: TrainConfig, fixed: list[np.ndarray], chunk: int = 2048
) -> np.ndarray:
    """The network's ``features`` input of the un-augmented ``crops``, built as
    :func:`network_inputs` builds it: the log2 scale of their placement (in chunks, so a
    large library's canvases never fill memory), then ``fixed``, the measurements and
    colour training has already computed for them."""
    log_shrink = [
        place_on_canvas(crops[j : j + chunk], cfg.canvas, cfg.fill)[1]
        for j in range(0, len(crops), chunk)
    ]
    return np.hstack([np.vstack(log_shrink), *fixed])


def network(cfg: dict[str, Any], n_classes: int) -> torch.nn.Module:
    """The untrained network a training configuration (``asdict(TrainConfig)``) describes."""
    kw: dict[str, Any] = {
        "width": cfg["width"],
        "n_inputs": len(feature_names(cfg["shapes"], cfg.get("colour", False))),
        "aux_heads": cfg["aux_heads"],
    }
    if cfg["arch"] == "scnn":
        kw["layers"] = cfg["layers"]
        kw["stem"] = cfg.get("stem", "pool")  # checkpoints from before the choice
    return build_model(cfg["arch"], n_classes, members=cfg["members"], **kw)


def model_from_checkpoint(ckpt: dict[str, Any], device: str = "cpu") -> torch.nn.Module:
    """Rebuild the network stored in ``ckpt`` in eval mode."""
    cfg = ckpt["config"]
    if "members" not in cfg:
        raise ValueError(
            "checkpoint written by an older plankline (its network takes no measurements "
            "and has no members setting): retrain it with `plankline train`"
        )
    model = network(cfg, len(ckpt["class_names"]))
    if "ema" in ckpt:
        prefix = "module."
        model.load_state_dict(
            {k[len(prefix) :]: v for k, v in ckpt["ema"].items() if k.startswith(prefix)}
        )
    else:
        model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def checkpoint_predictor(ckpt: dict[str, Any]) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """Class probabilities of ``ckpt``'s network for raw ROIs, preprocessed as it was trained.

    The torch twin of ``infer.Classifier.predict`` (canvas, inputs, polarity and
    fill from the checkpoint's config; checkpoints from before ``colour``/``fill``
    read False/0), for evaluating a checkpoint without exporting it.
    """
    model = model_from_checkpoint(ckpt)
    cfg = ckpt["config"]
    kw = {
        "shapes": bool(cfg["shapes"]),
        "polarity": str(ckpt.get("polarity", "bright")),
        "colour": bool(cfg.get("colour", False)),
        "fill": int(cfg.get("fill", 0)),
    }

    forest = forest_predictor(ckpt["forest_onnx"]) if ckpt.get("forest") else None

    @torch.no_grad()
    def predict(crops: Sequence[np.ndarray]) -> np.ndarray:
        x, s = model_inputs(crops, int(cfg["canvas"]), **kw)
        probs = torch.softmax(model(torch.from_numpy(x), torch.from_numpy(s)), 1).numpy()
        if forest is None:
            return probs
        return mix(probs, forest(s), ckpt["forest"]["weight"])

    return predict


def _ema_model(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """EMA of weights and buffers with a warm-up (decay ``min(decay, (1 + t) / (10 + t))``).

    Without the warm-up the average drags the random initial weights along for
    hundreds of steps, longer than a whole training run on a small library.
    """
    from torch.optim.swa_utils import AveragedModel

    @torch.no_grad()
    def avg(ema_p: list[torch.Tensor], cur_p: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        fe = [(e, c) for e, c in zip(ema_p, cur_p, strict=True) if e.is_floating_point()]
        if fe:
            torch._foreach_lerp_([e for e, _ in fe], [c for _, c in fe], 1.0 - d)
        for e, c in zip(ema_p, cur_p, strict=True):
            if not e.is_floating_point():
                e.copy_(c)

    return AveragedModel(model, multi_avg_fn=avg, use_buffers=True)


def train(
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    library: Library | None = None,
) -> list[EpochStats]:
    """Train epochs ``cfg.start + 1 .. cfg.stop`` and save a checkpoint after each.

    Parameters
    ----------
    cfg : TrainConfig
        Settings; ``cfg.start > 0`` resumes from ``<out>/epoch_<start>.pt``.
    on_epoch : callable, optional
        Called with each epoch's :class:`EpochStats` (the CLI prints the line).
    on_batch : callable, optional
        Called with ``(images done, images per epoch)`` (the CLI's progress bar).
    library : Library, optional
        Already-loaded library (tests, scripts); read from ``cfg.library`` if None.

    Returns
    -------
    list of EpochStats
        One per trained epoch (empty when ``start == stop``).
    """
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    lib = (
        library
        if library is not None
        else load_library(Path(cfg.library), class_min=cfg.class_min, polarity=cfg.polarity)
    )
    if cfg.polarity != "auto" and lib.polarity != cfg.polarity:
        raise ValueError(
            f"library was normalised as {lib.polarity}-field, the settings say {cfg.polarity}"
        )
    if lib.polarity_disagree:
        warnings.warn(
            f"{lib.polarity_disagree} of {len(lib)} images look like the other polarity than the "
            f"library's {lib.polarity}-field majority (near-empty or cut crops); they are "
            f"normalised as {lib.polarity}-field like the rest",
            stacklevel=2,
        )
    tr_idx, va_idx = split_indices(lib.labels, cfg.vsp, seed=cfg.seed)
    train_lib, val_lib = lib.subset(tr_idx), lib.subset(va_idx)
    n_classes = len(lib.class_names)

    torch.manual_seed(cfg.seed)
    model = network(asdict(cfg), n_classes).to(cfg.device)
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.ilr, weight_decay=cfg.weight_decay
        )
    else:
        opt = torch.optim.SGD(
            model.parameters(),
            lr=cfg.ilr,
            momentum=0.9,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
    if cfg.start > 0:
        ck = load_checkpoint(checkpoint_path(out, cfg.start), cfg.device)
        if ck["class_names"] != lib.class_names:
            raise ValueError(
                f"checkpoint {checkpoint_path(out, cfg.start)} was trained on classes "
                f"{ck['class_names']}, library has {lib.class_names}"
            )
        if ck.get("polarity", "bright") != lib.polarity:
            raise ValueError(
                f"checkpoint {checkpoint_path(out, cfg.start)} was trained on "
                f"{ck.get('polarity', 'bright')}-field images, the library is {lib.polarity}-field"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    elif cfg.init:
        _start_from(model, Path(cfg.init), train_lib, cfg)
    # Exponential moving average of the weights (and BN statistics): on small libraries the
    # last-step weights swing by several % validation error from epoch to epoch; their
    # average is steadier. It is what validation, evaluation and export use.
    ema = _ema_model(model, cfg.ema)
    if cfg.start > 0:
        ema.load_state_dict(ck["ema"])
    mmac = multiply_adds(model, cfg.canvas) / 1e6

    class_w = None
    if cfg.balance == "weighting":
        counts = np.bincount(train_lib.labels, minlength=n_classes).astype(np.float64)
        w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
        class_w = torch.tensor(w, dtype=torch.float32, device=cfg.device)

    # per-image inputs that augmentation leaves unchanged (rotation, flips), measured once,
    # and the model's size gate (its classify_min_px, meta.json) from the same measurements
    measured = object_measurements(train_lib.crops)
    size_gate = min_object_px(measured)
    fixed = [shape_features_of(measured)] if cfg.shapes else []
    if cfg.colour:
        fixed.append(train_lib.colour_matrix())
    forest = None
    if cfg.forest > 0:
        data = fit_forest(
            _forest_inputs(train_lib.crops, cfg, fixed), train_lib.labels, n_classes, seed=cfg.seed
        )
        (out / FOREST_FILE).write_bytes(data)
        # the trees it was fitted with, as the export reports them (not the constant then)
        forest = {"weight": cfg.forest, "sha256": forest_digest(data), "trees": FOREST_TREES}
    ds = CanvasDataset(
        train_lib.crops,
        train_lib.labels,
        cfg.canvas,
        augment=Augment(**cfg.augment),
        seed=cfg.seed,
        shapes=np.hstack(fixed) if fixed else None,
        shape_names=feature_names(cfg.shapes, cfg.colour)[1:],  # after log2_shrink
        fill=cfg.fill,
    )
    epoch_size = max(len(ds), cfg.min_epoch_images)
    sampler = _EpochSampler(train_lib.labels, cfg.balance, cfg.seed, epoch_size)
    loader = DataLoader(
        ds,
        batch_size=cfg.bs,
        sampler=sampler,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        drop_last=epoch_size > cfg.bs,
    )
    vx, vs, vy = _val_tensors(val_lib, cfg)
    log_path = out / "train_log.csv"
    history: list[EpochStats] = []
    for epoch in range(cfg.start, cfg.stop):
        lr = learning_rate(cfg.ilr, cfg.lrd, epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        sampler.epoch = epoch
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        model.train()
        t0 = time.perf_counter()
        n_seen, n_wrong, nll_sum = 0, 0, 0.0
        for x, s, y in loader:
            x, s, y = x.to(cfg.device), s.to(cfg.device), y.to(cfg.device)
            hs = model.heads(x, s)
            logits = mean_of_heads(hs)
            loss = sum(F.cross_entropy(h, y, weight=class_w) for h in hs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update_parameters(model)
            with torch.no_grad():
                n_seen += len(y)
                n_wrong += int((logits.argmax(1) != y).sum())
                nll_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            if on_batch is not None:
                on_batch(n_seen, epoch_size)
        dt = time.perf_counter() - t0
        if len(vy):
            vl = _evaluate_logits(ema.module, vx, vs, cfg.device)
            v_mis = 100.0 * float((vl.argmax(1) != vy).float().mean())
            v_nll = float(F.cross_entropy(vl, vy))
        else:
            v_mis, v_nll = math.nan, math.nan
        st = EpochStats(
            epoch=epoch + 1,
            lr=lr,
            train_mistakes_pct=100.0 * n_wrong / max(n_seen, 1),
            train_nll=nll_sum / max(n_seen, 1),
            val_mistakes_pct=v_mis,
            val_nll=v_nll,
            images_per_s=n_seen / dt if dt > 0 else math.nan,
            time_s=dt,
            mmac_per_sample=mmac,
        )
        history.append(st)
        torch.save(
            {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "ema": ema.state_dict(),
                "config": asdict(cfg),
                "class_names": lib.class_names,
                "polarity": lib.polarity,
                "min_object_px": size_gate,
                "forest": forest,
                "train_paths": train_lib.paths,
                "val_paths": val_lib.paths,
                "stats": asdict(st),
            },
            checkpoint_path(out, epoch + 1),
        )
        _append_log(log_path, st)
        if on_epoch is not None:
            on_epoch(st)
    (out / "labels.txt").write_text("\n".join(lib.class_names) + "\n")
    return history


def _append_log(path: Path, st: EpochStats) -> None:
    """Append one row to ``train_log.csv`` (header written once; resumed runs append)."""
    new = not path.exists()
    row = asdict(st)
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(LOG_COLUMNS)
        w.writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in LOG_COLUMNS])
