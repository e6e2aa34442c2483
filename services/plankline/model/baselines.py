"""The classifiers a plankton ecologist would otherwise use, trained on the very same split.

Our network is only worth shipping if it clearly beats what users can build
in an afternoon, so every evaluation trains these beside it:

- ``RF``: a random forest on ZooProcess-style measurements of the object
  mask (500 trees, balanced class weights), the EcoTaxa/ZooProcess classic;
- ``GBM``: gradient boosting on the same measurements (scikit-learn's
  histogram GBM, the XGBoost algorithm; UVPec and EcoTaxa's feature
  classifiers use XGBoost);
- ``small CNN``: a plain convolutional network written the usual way in
  torch: 4 VGG-style blocks of two 3x3 convolutions (32, 64, 128, 192
  channels, batch norm, ReLU, 2x2 max-pool), global average pool, dropout
  0.3, linear; gray input padded to a square with the background's grey
  (median of the border) and resized to 96x96; random flips and 90-degree
  turns; Adam (lr 1e-3), cosine schedule, batch 32, 25 epochs; no class
  balancing, no test-time augmentation. It needs no polarity setting:
  batch norm and the learned first layer take either.

Pure library: arrays in, probabilities out (``(n_test, n_classes)`` in label
order 0..K-1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import cv2
import numpy as np

FEATURE_BASELINES = ("RF", "GBM")
"""Names of the feature baselines, in report order."""

GBM_PARAMS = {"learning_rate": 0.05, "max_iter": 200}
"""The boosting's step: half scikit-learn's 0.1 for twice the rounds. At 0.1 it diverged on
the 121 classes of full NDSB (macro-F1 0.12, stopped after 11 rounds; 0.34 at 0.05); on
six splits of the small sets it moved macro-F1 by -0.015 to +0.023."""

SMALL_CNN = "small CNN"
"""Name of the plain-CNN baseline in reports."""


def _full_probs(model: object, x: np.ndarray, n_classes: int) -> np.ndarray:
    p = model.predict_proba(x)  # type: ignore[attr-defined]
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = p  # type: ignore[attr-defined]
    return out


def feature_baselines(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    n_classes: int,
    *,
    seed: int = 0,
    which: Sequence[str] = FEATURE_BASELINES,
) -> dict[str, np.ndarray]:
    """Class probabilities of the feature baselines (see module docstring).

    Parameters
    ----------
    train_features, test_features : ndarray
        ``evaluate.feature_matrix`` of the training and test crops.
    train_labels : ndarray
        ``(n_train,)`` class indices.
    n_classes : int
        Columns of the returned probabilities (classes missing from training get 0).
    seed : int
        Seeds the forest and the boosting's early-stopping split.
    which : sequence of str
        Subset of :data:`FEATURE_BASELINES`.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    unknown = set(which) - set(FEATURE_BASELINES)
    if unknown:
        raise ValueError(f"unknown feature baselines {sorted(unknown)}; one of {FEATURE_BASELINES}")
    out: dict[str, np.ndarray] = {}
    if "RF" in which:
        rf = RandomForestClassifier(
            n_estimators=500, class_weight="balanced", random_state=seed, n_jobs=2
        ).fit(train_features, train_labels)
        out["RF"] = _full_probs(rf, test_features, n_classes)
    if "GBM" in which:
        gbm = HistGradientBoostingClassifier(
            class_weight="balanced", random_state=seed, **GBM_PARAMS
        ).fit(train_features, train_labels)
        out["GBM"] = _full_probs(gbm, test_features, n_classes)
    return out


# --------------------------------------------------------------------------
# the plain small CNN
# --------------------------------------------------------------------------


def small_cnn_inputs(crops: Sequence[np.ndarray], size: int = 96) -> np.ndarray:
    """Gray crops padded to a square with their border's median grey, resized to ``size``.

    Returns ``(n, 1, size, size)`` float32 in [0, 1].
    """
    x = np.zeros((len(crops), 1, size, size), np.float32)
    for i, c in enumerate(crops):
        a = np.asarray(c)
        if a.ndim == 3:
            a = cv2.cvtColor(a[:, :, :3], cv2.COLOR_BGR2GRAY)
        if a.dtype == np.uint16:
            a = (a >> 8).astype(np.uint8)
        h, w = a.shape
        bg = float(np.median(np.concatenate((a[0], a[-1], a[:, 0], a[:, -1]))))
        side = max(h, w)
        sq = np.full((side, side), bg, np.float32)
        y0, x0 = (side - h) // 2, (side - w) // 2
        sq[y0 : y0 + h, x0 : x0 + w] = a
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        x[i, 0] = cv2.resize(sq, (size, size), interpolation=interp) / 255.0
    return x


def _small_cnn(n_classes: int) -> object:
    from torch import nn

    layers: list[nn.Module] = []
    cin = 1
    for cout in (32, 64, 128, 192):
        for _ in range(2):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True)]
            cin = cout
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(cin, n_classes),
    )


def _dihedral(x: object, rng: np.random.Generator) -> object:
    """Random flips and 90-degree turns, one draw per image of the batch."""
    import torch

    x = x.clone()  # type: ignore[attr-defined]
    k = rng.integers(0, 4, len(x))
    flip = rng.random(len(x)) < 0.5
    for r in range(4):
        for f in (False, True):
            sel = np.flatnonzero((k == r) & (flip == f))
            if len(sel) == 0 or (r == 0 and not f):
                continue
            part = x[sel]
            if f:
                part = torch.flip(part, dims=(3,))
            x[sel] = torch.rot90(part, r, dims=(2, 3))
    return x


def small_cnn_predict(
    train_crops: Sequence[np.ndarray],
    train_labels: np.ndarray,
    test_crops: Sequence[np.ndarray],
    n_classes: int,
    *,
    seed: int = 0,
    epochs: int = 25,
    size: int = 96,
    batch: int = 32,
    device: str = "cpu",
) -> tuple[np.ndarray, float]:
    """Train the plain small CNN on the training crops; probabilities of the test crops.

    Returns
    -------
    probs : ndarray
        ``(n_test, n_classes)``.
    images_per_s : float
        Training throughput (images seen per second of training).
    """
    import torch
    import torch.nn.functional as F

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xt = torch.from_numpy(small_cnn_inputs(train_crops, size))
    yt = torch.as_tensor(np.asarray(train_labels, np.int64))
    net = _small_cnn(n_classes).to(device)  # type: ignore[attr-defined]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = epochs * math.ceil(len(xt) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.perf_counter()
    for _ in range(epochs):
        net.train()
        order = rng.permutation(len(xt))
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            if len(idx) < 2:  # batch norm needs two
                continue
            xb = _dihedral(xt[idx], rng).to(device)
            loss = F.cross_entropy(net(xb), yt[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    rate = epochs * len(xt) / (time.perf_counter() - t0)
    net.eval()
    xv = torch.from_numpy(small_cnn_inputs(test_crops, size))
    with torch.no_grad():
        probs = torch.cat(
            [
                torch.softmax(net(xv[i : i + 256].to(device)), 1).cpu()
                for i in range(0, len(xv), 256)
            ]
        )
    return probs.numpy().astype(np.float64), rate
