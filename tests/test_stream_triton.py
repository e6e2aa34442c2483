"""Real Triton (nvidia-pytriton's tritonserver, Python backend on CPU) serves an ONNX model."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

# The Triton model file, as the classifier will ship it: load once, batch in, batch out.
MODEL_PY = textwrap.dedent("""
    import json
    from pathlib import Path

    import numpy as np
    import onnxruntime as ort
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            folder = Path(args["model_repository"]) / args["model_version"]
            self.session = ort.InferenceSession(str(folder / "model.onnx"),
                                                providers=["CPUExecutionProvider"])

        def execute(self, requests):
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
                (y,) = self.session.run(None, {"x": x.astype(np.float32)})
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("OUTPUT", y.astype(np.float32))]))
            return responses

        def finalize(self):
            self.session = None
""")

GPU_CONFIG = """\
name: "tiny"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""

CPU_PYTHON_CONFIG = """\
name: "tiny"
backend: "python"
max_batch_size: 64
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 3 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


def tiny_model_repository(root: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """A model folder 'tiny' computing y = x @ W + b, with GPU and cpu_python configs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder = root / "tiny"
    (folder / "1").mkdir(parents=True)
    (folder / "configs").mkdir()
    onnx.save(model, str(folder / "1" / "model.onnx"))
    (folder / "1" / "model.py").write_text(MODEL_PY)
    (folder / "config.pbtxt").write_text(GPU_CONFIG)
    (folder / "configs" / "cpu_python.pbtxt").write_text(CPU_PYTHON_CONFIG)
    return root


def test_triton_cpu_python_backend_answers_grpc_inference_with_the_onnx_numbers(
    tmp_path: Path, stack_dir: Path, triton_venv: Path
) -> None:
    import tritonclient.grpc as grpcclient
    from plankline.stream.stack import start_triton

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    repo = tiny_model_repository(tmp_path / "models", weight, bias)
    server = start_triton(
        stack_dir, repo, venv=triton_venv, model_config_name="cpu_python", name="triton-test"
    )
    try:
        client = grpcclient.InferenceServerClient(server.endpoint)
        assert client.is_model_ready("tiny")
        x = rng.normal(size=(32, 4)).astype(np.float32)
        request = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        result = client.infer(
            "tiny", [request], outputs=[grpcclient.InferRequestedOutput("OUTPUT")]
        )
        y = result.as_numpy("OUTPUT")
        assert y is not None and y.shape == (32, 3)  # numpy 2 in the stub gives empty answers
        np.testing.assert_allclose(y, x @ weight + bias, rtol=1e-5, atol=1e-5)
        client.close()
    finally:
        assert server.stop()
    assert not server.alive()
