"""Classifier networks: an exportable sparse-CNN (sCNN) and a small ResNet.

Both take the same two inputs (see :mod:`plankline.model.data`):

``image``  ``(n, 1, canvas, canvas)`` float32, ROI inverted, background 0,
           centred: unscaled, shrunk if too big, enlarged if under ``fill``;
``features`` ``(n, F)`` float32: ``log2`` of how much the ROI was shrunk
           (negative: enlarged; 0 for most ROIs), so absolute size survives
           scaling, then (by default) the organism's measurements;

and return ``(n, n_classes)`` logits (softmax is applied by the caller /
appended at export, so training uses the numerically stable
``cross_entropy`` on logits).

The sCNN follows Graham's SparseConvNet as Plankline used it (DESIGN.md):

* stacks of small convolutions, layer ``i`` having ``width * (i + 1)``
  filters (Graham: ``32 * (i + 1)``). Narrow by measurement on the
  FlowCam set: ``width=16`` (51 M multiply-adds per 64x64 ROI) overfits
  the small libraries users start from (validation macro-F1 0.67 vs 0.82
  for ``width=8``, 13 M); training's default is an ensemble of three
  ``width=6`` networks (7.3 M each), as good as three of ``width=8`` and
  1.8x the cost of one;
* very leaky ReLU (negative slope 1/3, Graham's choice);
* gradual pooling. ONNX has no fractional max-pooling, and Graham's FMP
  shrinks the field by sqrt(2) per layer, i.e. by 2 every two layers. We
  use the deterministic equivalent: a 2x2/stride-2 max-pool after every
  second convolution, which reaches the same field size after the same
  number of layers. The first layer leaves the expensive full-resolution
  field at once: by default a stride-2 convolution (``stem="stride"``;
  FlowCam macro-F1 0.880 over 20 splits against 0.882 for a full-resolution
  convolution + max-pool, ``stem="pool"``, which costs 1.4x at inference:
  that layer and its pooling were a quarter of the network's time);
* a global max+average pool at the end (valid for any canvas size and
  cheap), concatenated with an embedding of the ``features`` input, and a
  linear classifier.

Graham's nets had no batch normalisation; we add it after every convolution
because it makes training from scratch on small libraries converge in
minutes instead of hours, and ONNX Runtime folds it into the convolution at
inference (zero cost). Dropout before the classifier regularises the small
libraries plankton ecologists start from.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ARCHS = ("scnn", "resnet")
"""Architectures selectable with ``--arch``."""

STEMS = ("pool", "stride")
"""sCNN first layer: full-resolution convolution then 2x2 max-pool, or a stride-2 one."""


EMBED = 32
"""Width of the learned embedding of the ``features`` input (see :func:`_feature_embed`)."""


def _feature_embed(n_inputs: int) -> nn.Module:
    """Standardise the measurement vector (batch norm) and embed it in ``EMBED`` hinge units.

    A few raw scalars among hundreds of pooled image features are easily ignored
    (measured: huge Noctilucales, shrunk 4x, were called Ciliophora when the
    shrink factor was fed raw); an embedding of the same order as the image
    features gives them their weight.
    """
    return nn.Sequential(nn.BatchNorm1d(n_inputs), nn.Linear(n_inputs, EMBED), nn.LeakyReLU(1 / 3))


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]


def mean_of_heads(logits: list[torch.Tensor]) -> torch.Tensor:
    """Logits whose softmax is the mean of the heads' softmaxes (one head: unchanged)."""
    if len(logits) == 1:
        return logits[0]
    logp = torch.stack([torch.log_softmax(h, dim=1) for h in logits])
    return torch.logsumexp(logp, dim=0) - math.log(len(logits))


class _TwoBranchNet(nn.Module):
    """An image trunk and the ``features`` embedding, joined by a linear head.

    With ``aux_heads`` each branch also gets its own classifier, trained on the
    same labels, and the prediction is the mean of the three heads' softmaxes.
    Multi-input networks on small data lean on one branch and overfit it
    (Wang et al. 2020, "What makes training multi-modal classification networks
    hard?"); a loss per branch keeps both discriminative.
    """

    def _init_heads(
        self, n_image: int, n_inputs: int, n_classes: int, dropout: float, aux_heads: bool
    ) -> None:
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.embed = _feature_embed(n_inputs)
        self.n_features = n_image + EMBED
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.n_features, n_classes))
        self.aux_heads = aux_heads
        if aux_heads:
            self.image_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_image, n_classes))
            self.feature_head = nn.Linear(EMBED, n_classes)

    def image_vector(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def heads(self, image: torch.Tensor, features: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every head: the joint one first (training puts a loss on each)."""
        img = self.image_vector(image)
        emb = self.embed(features)
        joint = self.head(torch.cat([img, emb], dim=1))
        if not self.aux_heads:
            return [joint]
        return [joint, self.image_head(img), self.feature_head(emb)]

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return mean_of_heads(self.heads(image, features))


class SparseCNN(_TwoBranchNet):
    """Graham-style sCNN with deterministic pooling (see module docstring).

    Parameters
    ----------
    n_classes : int
        Number of output classes.
    width : int
        Filters per layer step: layer ``i`` has ``width * (i + 1)`` filters.
    layers : int
        Number of convolution layers (the field is pooled after layer 0 and
        then after every second layer).
    leak : float
        Negative slope of the leaky ReLU.
    dropout : float
        Dropout before the linear classifier.
    n_inputs : int
        Width of the ``features`` input.
    aux_heads : bool
        A classifier per branch besides the joint one (see :class:`_TwoBranchNet`).
    stem : str
        First layer, one of :data:`STEMS` (see the module docstring).
    """

    def __init__(
        self,
        n_classes: int,
        *,
        width: int = 6,
        layers: int = 8,
        leak: float = 1 / 3,
        dropout: float = 0.2,
        n_inputs: int = 1,
        aux_heads: bool = False,
        stem: str = "stride",
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {STEMS}")
        mods: list[nn.Module] = []
        cin = 1
        for i in range(layers):
            cout = width * (i + 1)
            strided = i == 0 and stem == "stride"
            mods += _conv_bn(cin, cout, 3, 2 if strided else 1)
            mods.append(nn.LeakyReLU(leak, inplace=True))
            if i % 2 == 0 and i < layers - 1 and not strided:
                mods.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            cin = cout
        self.features = nn.Sequential(*mods)
        self._init_heads(2 * cin, n_inputs, n_classes, dropout, aux_heads)

    def image_vector(self, image: torch.Tensor) -> torch.Tensor:
        f = self.features(image)
        return torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], dim=1)


class _Block(nn.Module):
    """ResNet basic block (two 3x3 convs + identity or 1x1 projection)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, cout, 3, stride),
            nn.ReLU(inplace=True),
            *_conv_bn(cout, cout, 3),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(*_conv_bn(cin, cout, 1, stride))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class SmallResNet(_TwoBranchNet):
    """A standard small ResNet (ResNet-10 shape) behind the same interface, for comparison.

    Stem 3x3 stride 2, four stages of one basic block each with
    ``width * (1, 2, 4, 8)`` channels, global average pool, linear head.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        width: int = 16,
        dropout: float = 0.2,
        n_inputs: int = 1,
        aux_heads: bool = False,
    ) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(*_conv_bn(1, w, 3, 2), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(
            _Block(w, w, 1), _Block(w, 2 * w, 2), _Block(2 * w, 4 * w, 2), _Block(4 * w, 8 * w, 2)
        )
        self._init_heads(8 * w, n_inputs, n_classes, dropout, aux_heads)

    def image_vector(self, image: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(image)).mean(dim=(2, 3))


class Ensemble(nn.Module):
    """``members`` networks trained side by side; predicts the mean of all their heads.

    Averaging independently initialised networks is the standard remedy for the
    split-to-split and seed-to-seed swings of networks trained on a few hundred
    images.
    """

    def __init__(self, members: list[_TwoBranchNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def heads(self, image: torch.Tensor, features: torch.Tensor) -> list[torch.Tensor]:
        return [h for m in self.members for h in m.heads(image, features)]  # type: ignore[operator]

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return mean_of_heads(self.heads(image, features))


def build_model(arch: str, n_classes: int, *, members: int = 1, **kwargs: int | float) -> nn.Module:
    """Instantiate ``arch`` (one of :data:`ARCHS`) for ``n_classes`` classes.

    ``members > 1`` gives an :class:`Ensemble` of that many, initialised differently.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    cls = SparseCNN if arch == "scnn" else SmallResNet
    nets = [cls(n_classes, **kwargs) for _ in range(members)]  # type: ignore[arg-type]
    return nets[0] if members == 1 else Ensemble(nets)


class WithSoftmax(nn.Module):
    """Wrap a logits model so its output is class probabilities (for export)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(image, features), dim=1)


def n_inputs(model: nn.Module) -> int:
    """Width of ``model``'s ``features`` input."""
    net = model.members[0] if isinstance(model, Ensemble) else model
    return int(net.embed[0].num_features)  # type: ignore[index]


def multiply_adds(model: nn.Module, canvas: int) -> int:
    """Multiply-adds per image of the convolutions and linear layers (the log's MMAC/sample)."""
    total = 0
    hooks = []

    def conv_hook(m: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += int(out.shape[1] * out.shape[2] * out.shape[3] * k)

    def lin_hook(m: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += m.in_features * m.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, canvas, canvas), torch.zeros(1, n_inputs(model)))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total
