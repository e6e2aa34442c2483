"""Starting a training from a model folder's network: transfer from a large library.

Small libraries (a few hundred images of a new imager) are where networks trained from
scratch fall to the level of the plain CNN and the feature classifiers. The shipped
ISIIS model has seen 30,000 plankton images; its convolutions and measurement
embedding are a better start than random numbers, the way the field fine-tunes
ImageNet networks, but from plankton.

The ONNX export folds each batch normalisation into its convolution (and pads channel
counts, :func:`plankline.model.export.pad_conv_channels`), so the trunk is read back as
folded weights: each convolution gets them, and its batch normalisation is then set
from the statistics of a batch of the new library (:func:`calibrate`) so that the
network computes, in training mode, what the exported one computed. The classifier
heads start afresh: the new library's classes are not the old ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from plankline.model.scnn import Ensemble, SparseCNN


def _members(model: nn.Module) -> list[nn.Module]:
    return list(model.members) if isinstance(model, Ensemble) else [model]


def _conv_bn_pairs(net: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    mods = list(net.features)  # type: ignore[attr-defined]
    return [
        (m, mods[i + 1])
        for i, m in enumerate(mods)
        if isinstance(m, nn.Conv2d) and isinstance(mods[i + 1], nn.BatchNorm2d)
    ]


def load_trunk(model: nn.Module, onnx_path: Path) -> int:
    """Copy the convolutions and measurement embeddings of an exported sCNN into ``model``.

    Members are matched in order (member ``i`` of ``model`` takes member ``i`` modulo the
    file's count). Returns the number of members read. Raises ``ValueError`` naming the
    file when its network is not an sCNN of ``model``'s shape.
    """
    path = Path(onnx_path)
    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # the exporter shares equal initializers (the members' norms) through Identity nodes
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    for out, src in alias.items():
        weights.setdefault(out, weights.get(alias.get(src, src)))  # type: ignore[arg-type]
    convs = [n for n in graph.node if n.op_type == "Conv"]
    gemm_of = {n.input[0]: n for n in graph.node if n.op_type == "Gemm"}
    norms = [
        (n, gemm_of.get(n.output[0]))
        for n in graph.node
        if n.op_type == "BatchNormalization" and n.input[0] == "features"
    ]
    members = _members(model)
    if not all(isinstance(m, SparseCNN) for m in members):
        raise ValueError(f"{path}: only an sCNN (--arch scnn) can start from a model folder")
    per = len(_conv_bn_pairs(members[0]))
    n_file = sum(1 for n in convs if n.input[0] == "image")  # each member's first layer
    if not n_file or len(convs) != n_file * per:
        raise ValueError(
            f"{path}: holds {len(convs)} convolutions in {n_file} member(s), not the {per} "
            "a member of this network has (another --layers or --arch?)"
        )
    with torch.no_grad():
        for i, net in enumerate(members):
            src = i % n_file
            for j, (conv, bn) in enumerate(_conv_bn_pairs(net)):
                node = convs[src * per + j]
                w = weights[node.input[1]]
                b = weights[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0])
                cout, cin = conv.weight.shape[:2]
                if w.shape[0] < cout or w.shape[1] < cin or w.shape[2:] != conv.weight.shape[2:]:
                    raise ValueError(
                        f"{path}: convolution {j} of member {src} is {list(w.shape)}, this "
                        f"network's is {list(conv.weight.shape)} (another --width?)"
                    )
                # exported channels are padded with zeros past the network's own
                conv.weight.copy_(torch.from_numpy(w[:cout, :cin].copy()))
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(b[:cout].astype(np.float32)))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
            _load_embed(net, weights, norms[src] if src < len(norms) else None)
    return n_file


def _load_embed(net: nn.Module, weights: dict[str, np.ndarray], nodes: tuple | None) -> None:
    """The measurement embedding (batch norm, linear) when its width matches; else left."""
    if nodes is None or nodes[1] is None:
        return
    norm_node, linear_node = nodes
    norm, linear = net.embed[0], net.embed[1]  # type: ignore[index]
    pairs = list(
        zip(
            norm_node.input[1:5],
            (norm.weight, norm.bias, norm.running_mean, norm.running_var),
            strict=True,
        )
    )
    pairs += list(zip(linear_node.input[1:3], (linear.weight, linear.bias), strict=True))
    found = [(weights.get(name), tensor) for name, tensor in pairs]
    if any(w is None or w.shape != tuple(t.shape) for w, t in found):
        return
    for w, tensor in found:
        tensor.copy_(torch.from_numpy(np.array(w, dtype=np.float32)))


@torch.no_grad()
def calibrate(model: nn.Module, image: torch.Tensor, features: torch.Tensor) -> None:
    """Set every trunk batch norm so that, on this batch, it reproduces the folded network.

    After :func:`load_trunk` a convolution computes ``w'x`` and its batch norm (in
    evaluation mode) adds the folded bias ``b'``. In training mode the norm standardises
    over the batch instead; each norm's running statistics become this batch's and its
    scale and shift are rewritten so that evaluation mode computes what it computed, so
    training mode agrees on this batch. One forward pass sets the layers in order, each on
    its true input.
    """
    hooks = []

    def set_norm(bn: nn.BatchNorm2d, args: tuple[torch.Tensor, ...]) -> None:
        # eval mode computes (y - m) / sqrt(v + eps) * w + b: keep that function, with
        # this batch's mean and variance as m and v (what training mode will use)
        y = args[0]
        mean = y.mean(dim=(0, 2, 3))
        var = y.var(dim=(0, 2, 3), unbiased=False)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bn.bias.add_((mean - bn.running_mean) * scale)
        bn.weight.copy_(scale * torch.sqrt(var + bn.eps))
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)

    for net in _members(model):
        for _conv, bn in _conv_bn_pairs(net):
            hooks.append(bn.register_forward_pre_hook(set_norm))
    was = model.training
    model.eval()  # the pre-hooks fire before each norm; eval applies what they just set
    try:
        for net in _members(model):
            net.image_vector(image)  # type: ignore[operator]
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
