"""A Triton model repository entry for the ONNX decoder, ready for KServe's `kserve-tritonserver` runtime.

Layout (the repository root is what an InferenceService's `storageUri` points at):

    <root>/<name>/config.pbtxt
    <root>/<name>/1/model.onnx
    <root>/<name>/README.md      (model card; Triton ignores files it does not know)

The config uses the `onnxruntime_onnx` platform with dynamic batching; with `max_batch_size > 0` Triton's
dims leave the batch axis out, and every other axis that is dynamic in the graph is -1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from asymvae.export.config import DEFAULT_MAX_BATCH, check_model_name
from asymvae.extras import require

if TYPE_CHECKING:
    import onnx

__all__ = ["triton_config", "validate_triton_model"]

# ONNX element types (`TensorProto.DataType` in onnx/onnx.proto, fixed by the ONNX spec) to Triton's.
_ONNX_TO_TRITON = {
    1: "TYPE_FP32",  # FLOAT
    10: "TYPE_FP16",  # FLOAT16
    16: "TYPE_BF16",  # BFLOAT16
    7: "TYPE_INT64",  # INT64
    6: "TYPE_INT32",  # INT32
}


def _tensors(values: list[onnx.ValueInfoProto]) -> list[tuple[str, str, list[int]]]:
    """(name, Triton data type, dims without the batch axis) of graph inputs or outputs."""
    out = []
    for v in values:
        t = v.type.tensor_type
        if t.elem_type not in _ONNX_TO_TRITON:
            raise ValueError(f"tensor {v.name}: ONNX element type {t.elem_type} has no Triton mapping here")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not dims or dims[0] != -1:
            raise ValueError(f"tensor {v.name}: the first axis must be a dynamic batch axis, got dims {dims}")
        out.append((v.name, _ONNX_TO_TRITON[t.elem_type], dims[1:]))
    return out


def _graph_io(graph: onnx.GraphProto) -> dict[str, list[tuple[str, str, list[int]]]]:
    """The graph's inputs (initializers left out) and outputs, as `_tensors` describes them."""
    initializers = {i.name for i in graph.initializer}
    return {
        "input": _tensors([i for i in graph.input if i.name not in initializers]),
        "output": _tensors(list(graph.output)),
    }


def _block(kind: str, tensors: list[tuple[str, str, list[int]]]) -> str:
    items = []
    for name, dtype, dims in tensors:
        shape = ", ".join(map(str, dims))
        items.append(f'  {{\n    name: "{name}"\n    data_type: {dtype}\n    dims: [ {shape} ]\n  }}')
    return f"{kind} [\n" + ",\n".join(items) + "\n]\n"


def triton_config(name: str, model: onnx.ModelProto, max_batch_size: int = DEFAULT_MAX_BATCH) -> str:
    """config.pbtxt text for `model` (its graph's input/output names, types and dynamic dims)."""
    check_model_name(name)
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1 for dynamic batching, got {max_batch_size}")
    io = _graph_io(model.graph)
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        + _block("input", io["input"])
        + _block("output", io["output"])
        + "dynamic_batching { }\n"
        + "instance_group [\n  {\n    count: 1\n    kind: KIND_AUTO\n  }\n]\n"
    )


def validate_triton_model(model_dir: Path, name: str | None = None) -> dict[str, list[str]]:
    """Parse `<model_dir>/config.pbtxt` as Triton's ModelConfig and check it against `<model_dir>/1/model.onnx`.

    Checks: the protobuf parses, the platform, the name (`name`, by default the folder's: Triton requires
    them equal), dynamic batching, and that input/output names,
    data types and ranks equal the graph's. Returns the input and output names; raises ValueError on a mismatch.
    """
    model_config_pb2 = require("tritonclient.grpc.model_config_pb2", "export", "checking a Triton model config")
    onnx = require("onnx", "export", "checking a Triton model config")
    from google.protobuf import text_format  # installed with tritonclient[grpc]

    model_dir = Path(model_dir)
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    problems = []
    expected_name = name or model_dir.name
    if config.name != expected_name:
        problems.append(f"config name {config.name!r} != model folder name {expected_name!r}")
    if config.platform != "onnxruntime_onnx":
        problems.append(f"platform {config.platform!r} is not onnxruntime_onnx")
    if not config.HasField("dynamic_batching") or config.max_batch_size < 1:
        problems.append("dynamic batching is off")
    expected = _graph_io(onnx.load(str(model_dir / "1" / "model.onnx"), load_external_data=False).graph)
    for kind, declared in (("input", config.input), ("output", config.output)):
        got = [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in declared]
        if got != expected[kind]:
            problems.append(f"{kind}s {got} do not match the graph's {expected[kind]}")
    if problems:
        raise ValueError(f"Triton model {model_dir}: " + "; ".join(problems))
    return {"inputs": [t.name for t in config.input], "outputs": [t.name for t in config.output]}
