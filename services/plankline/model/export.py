"""Exporting a trained checkpoint: ONNX model folder and a Triton model repository.

The ONNX graph takes ``image (n, 1, C, C)`` and ``features (n, F)`` float32
(``log2`` shrink and the measurements; see :mod:`plankline.model.data`) and
returns ``probs (n, n_classes)``
(softmax included), with a dynamic batch axis, opset >= 17 and only
standard operators (Conv, MaxPool, LeakyRelu, ReduceMax/Mean, Gemm,
Softmax), so ONNX Runtime, TensorRT and Triton's ``onnxruntime_onnx``
backend run it as is. Export fails loudly when ONNX Runtime and torch
disagree by more than ``1e-4`` on a batch.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plankline.model.data import feature_names
from plankline.model.forest import forest_predictor, merge_forest, mix
from plankline.model.infer import MODEL_FINGERPRINT_PARAMETER, model_fingerprint
from plankline.model.scnn import WithSoftmax, n_inputs
from plankline.model.train import load_checkpoint, model_from_checkpoint

INPUTS = ("image", "features")
OUTPUT = "probs"
PARITY_TOL = 1e-4


def to_onnx_bytes(model: torch.nn.Module, canvas: int, *, opset: int = 17) -> bytes:
    """Serialise ``model`` (logits) with a softmax head to ONNX bytes with a dynamic batch."""
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    wrapped = WithSoftmax(model).eval()
    x = torch.zeros(2, 1, canvas, canvas)
    s = torch.zeros(2, n_inputs(model))
    buf = io.BytesIO()
    # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
    # onnxscript and emits a larger graph for this plain CNN; its output is identical here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapped,
            (x, s),
            buf,
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return pad_conv_channels(buf.getvalue())


CHANNEL_BLOCK = 8
"""ONNX Runtime's blocked convolutions (NCHWc: AVX2 blocks of 8 channels) take only
convolutions whose channel counts are multiples of this; others run plain im2col + GEMM."""

_CHANNELWISE = frozenset({"LeakyRelu", "Relu", "MaxPool"})


def pad_conv_channels(onnx_bytes: bytes, block: int = CHANNEL_BLOCK) -> bytes:
    """The same network with every inner convolution's output channels padded with zero
    filters to a multiple of ``block``, and the next convolution given zero weights for
    them: outputs are unchanged (a zero channel stays zero through the leaky ReLU and
    max-pooling between them) and ONNX Runtime's CPU graph optimiser can block them.

    The sCNN's widths (6, 12, 18, ... for ``width=6``) are mostly not multiples of 8, so
    none of its convolutions was blocked; padded, the shipped NDSB model's network ran
    10-18 % less CPU per ROI on one thread (``scripts/bench_infer.py``) for 40 % more
    multiply-adds (10.1 M against 7.2 M a member).
    Only a convolution whose output reaches exactly one other convolution through
    channel-wise operations is padded; the last one (pooled into the classifier) is left.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def plain(conv: Any) -> bool:
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        own = all(x in arrays and len(consumers[x]) == 1 for x in conv.input[1:])
        return group == 1 and own  # weights its own (the exporter shares equal ones)

    changed = set()
    for conv in (n for n in graph.node if n.op_type == "Conv" and plain(n)):
        weight = arrays[conv.input[1]]
        missing = -weight.shape[0] % block
        tensor, nxt = conv.output[0], None
        while len(users := consumers.get(tensor, [])) == 1:
            user = users[0]
            if user.op_type in _CHANNELWISE and user.input[0] == tensor:
                tensor = user.output[0]
                continue
            if user.op_type == "Conv" and user.input[0] == tensor and plain(user):
                nxt = user
            break
        if not missing or nxt is None:
            continue
        arrays[conv.input[1]] = np.concatenate(
            [weight, np.zeros((missing, *weight.shape[1:]), weight.dtype)]
        )
        if len(conv.input) > 2:
            bias = arrays[conv.input[2]]
            arrays[conv.input[2]] = np.concatenate([bias, np.zeros(missing, bias.dtype)])
        after = arrays[nxt.input[1]]
        zeros = np.zeros((after.shape[0], missing, *after.shape[2:]), after.dtype)
        arrays[nxt.input[1]] = np.concatenate([after, zeros], axis=1)
        changed.update(conv.input[1:3])
        changed.add(nxt.input[1])
    if not changed:
        return onnx_bytes
    for init in graph.initializer:
        if init.name in changed:
            init.CopyFrom(numpy_helper.from_array(arrays[init.name], init.name))
    del graph.value_info[:]  # channel counts of the tensors between changed; re-inferred
    onnx.checker.check_model(model)
    return model.SerializeToString()


def parity(
    model: torch.nn.Module,
    onnx_bytes: bytes,
    canvas: int,
    *,
    n: int = 16,
    seed: int = 0,
    forest: tuple[bytes, float] | None = None,
) -> float:
    """Max abs difference of probabilities between torch and ONNX Runtime on a random batch.

    The batch mixes sparse blobs on a zero background (like real inputs) and
    non-zero feature values, and its size differs from the export batch, so
    the dynamic batch axis is exercised too. ``forest`` (its bytes and weight) is
    mixed into torch's side as the merged graph mixes it.
    """
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, canvas, canvas), np.float32)
    for i in range(n):
        h, w = rng.integers(4, canvas, 2)
        y0, x0 = (canvas - h) // 2, (canvas - w) // 2
        x[i, 0, y0 : y0 + h, x0 : x0 + w] = rng.random((h, w), np.float32)
    s = rng.uniform(0, 3, (n, n_inputs(model))).astype(np.float32)
    with torch.no_grad():
        ref = WithSoftmax(model).eval()(torch.from_numpy(x), torch.from_numpy(s)).numpy()
    if forest is not None:
        ref = mix(ref, forest_predictor(forest[0])(s), forest[1])
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x, "features": s})[0]
    return float(np.abs(got - ref).max())


def export_model(
    checkpoint: Path,
    model_dir: Path,
    *,
    opset: int = 17,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model.onnx``, ``labels.txt`` and ``meta.json`` for ``checkpoint`` into ``model_dir``.

    Returns the metadata written. Raises ``RuntimeError`` when the ONNX
    Runtime/torch parity check exceeds ``1e-4``.
    """
    ck = load_checkpoint(Path(checkpoint))
    model = model_from_checkpoint(ck)
    cfg = ck["config"]
    canvas = int(cfg["canvas"])
    shapes = bool(cfg["shapes"])
    colour = bool(cfg.get("colour", False))
    fill = int(cfg.get("fill", 0))
    features = feature_names(shapes, colour)
    data = to_onnx_bytes(model, canvas, opset=opset)
    forest = (ck["forest_onnx"], float(ck["forest"]["weight"])) if ck.get("forest") else None
    if forest is not None:
        data = merge_forest(data, *forest, OUTPUT)
    diff = parity(model, data, canvas, forest=forest)
    if not diff <= PARITY_TOL:
        raise RuntimeError(
            f"ONNX export of {checkpoint} disagrees with torch: "
            f"max abs diff {diff:.2e} > {PARITY_TOL}"
        )
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(data)
    (out / "labels.txt").write_text("\n".join(ck["class_names"]) + "\n")
    meta: dict[str, Any] = {
        "format": "plankline-classifier/1",
        "arch": cfg["arch"],
        "canvas": canvas,
        "width": cfg["width"],
        "layers": cfg.get("layers"),
        "inputs": {"image": ["batch", 1, canvas, canvas], "features": ["batch", len(features)]},
        "shapes": shapes,
        "colour": colour,
        "fill": fill,
        "features": features,
        "output": OUTPUT,
        "polarity": ck.get("polarity", "bright"),
        **({"min_object_px": ck["min_object_px"]} if "min_object_px" in ck else {}),
        "forest": {**ck["forest"], "reads": "features"} if forest else None,
        "preprocessing": (
            "plankline.model.data.model_inputs(crops, canvas, shapes=shapes, "
            "polarity=polarity, colour=colour, fill=fill)"
        ),
        "opset": opset,
        "epoch": ck["epoch"],
        "class_names": ck["class_names"],
        "train_config": {k: v for k, v in cfg.items() if k not in ("augment",)},
        "last_epoch_stats": ck.get("stats"),
        "onnx_torch_max_abs_diff": diff,
    }
    meta.update(extra_meta or {})
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# --------------------------------------------------------------------------
# Triton model repository
# --------------------------------------------------------------------------

_CONFIG_IO = """\
max_batch_size: {max_batch}
input [
  {{ name: "image", data_type: TYPE_FP32, dims: [ 1, {canvas}, {canvas} ] }},
  {{ name: "features", data_type: TYPE_FP32, dims: [ {n_inputs} ] }}
]
output [
  {{ name: "probs", data_type: TYPE_FP32, dims: [ {n_classes} ], label_filename: "labels.txt" }}
]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {delay_us}
}}
"""

GPU_CONFIG = (
    'name: "{name}"\nplatform: "onnxruntime_onnx"\n'
    + _CONFIG_IO
    + """\
instance_group [ {{ count: {instances}, kind: KIND_GPU }} ]
parameters {{ key: "{fingerprint_key}" value: {{ string_value: "{fingerprint}" }} }}
optimization {{
  execution_accelerators {{
    gpu_execution_accelerator: [ {{
      name: "tensorrt"
      parameters {{ key: "precision_mode" value: "FP16" }}
      parameters {{ key: "max_workspace_size_bytes" value: "1073741824" }}
    }} ]
  }}
}}
"""
)

# One ONNX Runtime thread per instance: the default pool (all cores, spinning) cost
# ~1.5x the CPU per ROI beside the other services; scale a CPU node with `count`.
CPU_PYTHON_CONFIG = (
    'name: "{name}"\nbackend: "python"\n'
    + _CONFIG_IO
    + """\
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
parameters {{ key: "intra_op_threads" value: {{ string_value: "1" }} }}
parameters {{ key: "{fingerprint_key}" value: {{ string_value: "{fingerprint}" }} }}
"""
)

TRITON_MODEL_PY = '''\
"""Triton python_backend model: runs the exported model.onnx with ONNX Runtime on CPU.

Generated by ``plankline export``. Inputs are already preprocessed by the
client (``plankline.model.data.model_inputs``), exactly as for the GPU
``onnxruntime_onnx`` configuration, so one client serves both.
"""

import json
import os

import numpy as np
import onnxruntime as ort


RUN_BATCH = 32  # ROIs per ONNX Runtime call, as plankline.model.infer.CPU_RUN_BATCH


def run_onnx(session, image, features):
    """Probabilities for one (possibly concatenated) batch, in calls of RUN_BATCH ROIs:
    their activations stay in a core's L2 cache, those of the batch Triton gathers do not."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    features = np.ascontiguousarray(features, dtype=np.float32).reshape(len(image), -1)
    parts = []
    for j in range(0, max(len(image), 1), RUN_BATCH):  # an empty batch: one call, as before
        feed = {"image": image[j : j + RUN_BATCH], "features": features[j : j + RUN_BATCH]}
        parts.append(session.run(["probs"], feed)[0])
    return np.concatenate(parts) if len(parts) != 1 else parts[0]


def open_session(model_dir, threads=0):
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(
        os.path.join(model_dir, "model.onnx"), so, providers=["CPUExecutionProvider"]
    )


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = cfg.get("parameters", {})
        threads = int(params.get("intra_op_threads", {}).get("string_value", "0"))
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        self.session = open_session(model_dir, threads)

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        images = [pb_utils.get_input_tensor_by_name(r, "image").as_numpy() for r in requests]
        feats = [pb_utils.get_input_tensor_by_name(r, "features").as_numpy() for r in requests]
        probs = run_onnx(self.session, np.concatenate(images), np.concatenate(feats))
        out, start = [], 0
        for im in images:
            part = probs[start : start + len(im)]
            start += len(im)
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probs", part)]))
        return out

    def finalize(self):
        self.session = None
'''


def write_triton_repository(
    model_dir: Path,
    repo: Path,
    *,
    model_name: str = "plankline_classifier",
    max_batch_size: int = 256,
    preferred_batch_sizes: tuple[int, ...] = (64, 128, 256),
    queue_delay_us: int = 2000,
    gpu_instances: int = 1,
) -> Path:
    """Write ``<repo>/<model_name>/`` serving ``model_dir``'s ONNX model on GPU and CPU.

    Layout::

        <model_name>/config.pbtxt              onnxruntime_onnx, KIND_GPU, TensorRT FP16
        <model_name>/configs/cpu_python.pbtxt  python backend, KIND_CPU
                                               (tritonserver --model-config-name=cpu_python)
        <model_name>/labels.txt
        <model_name>/1/model.onnx
        <model_name>/1/model.py                thin python_backend shell around onnxruntime

    Both configs carry the parameter ``plankline_model_sha256``
    (``infer.model_fingerprint`` of ``model_dir``): clients check with it that the
    served model is the one a job asked for.

    Returns the model folder.
    """
    from plankline.model.card import read_model_card

    card = read_model_card(model_dir)
    src, names = card.folder, card.class_names
    if any(p > max_batch_size for p in preferred_batch_sizes):
        raise ValueError(
            f"preferred batch sizes {preferred_batch_sizes} exceed max_batch_size {max_batch_size}"
        )
    root = Path(repo) / model_name
    (root / "1").mkdir(parents=True, exist_ok=True)
    (root / "configs").mkdir(exist_ok=True)
    shutil.copyfile(src / "model.onnx", root / "1" / "model.onnx")
    shutil.copyfile(src / "labels.txt", root / "labels.txt")
    fields = {
        "name": model_name,
        "max_batch": max_batch_size,
        "canvas": card.canvas,
        "n_classes": len(names),
        "n_inputs": card.n_features,
        "preferred": ", ".join(str(p) for p in preferred_batch_sizes),
        "delay_us": queue_delay_us,
        "instances": gpu_instances,
        "fingerprint_key": MODEL_FINGERPRINT_PARAMETER,
        "fingerprint": model_fingerprint(src),
    }
    (root / "config.pbtxt").write_text(GPU_CONFIG.format(**fields))
    (root / "configs" / "cpu_python.pbtxt").write_text(CPU_PYTHON_CONFIG.format(**fields))
    (root / "1" / "model.py").write_text(TRITON_MODEL_PY)
    return root
