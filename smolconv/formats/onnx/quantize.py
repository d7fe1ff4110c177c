"""The variants transformers.js names, made from the fp32 graphs with onnxruntime's own tools.

- `_fp16`: onnxruntime.transformers.float16 with keep_io_types (float32 inputs and outputs, float16 inside);
- `_quantized`: onnxruntime.quantization.quantize_dynamic, 8-bit (uint8) weights of MatMul and Gather, except
  the MLP down projections (below);
- `_q4`: MatMulNBitsQuantizer, 4-bit symmetric, block 32 (MatMul weights only);
- `_q4f16`: `_q4` then the float16 conversion.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from smolconv.core.errors import SmolconvError

VARIANTS = ("fp32", "fp16", "quantized", "q4", "q4f16")
DEFAULT_VARIANTS = ("fp32", "fp16", "quantized", "q4")
Q4_BLOCK = 32
EXTERNAL_DATA_OVER = 2 * 1024**3 - 64 * 1024**2  # protobuf's 2 GiB limit, with room for the graph itself


# Dynamic 8-bit quantization also quantizes each MatMul's input, per tensor, at run time. The input of the MLP
# down projection carries SmolLM2's few huge activation outliers: quantized, they take the resolution of every
# other channel. Measured on the 256m fixture (256 tokens, KL divergence from fp32): 1.29 with every MatMul
# quantized, 0.14 with the down projections kept in float32 (the lm_head alone: 1.26). They stay float32.
INT8_KEEP_FLOAT = ("down_proj",)


def suffix(variant: str) -> str:
    return "" if variant == "fp32" else f"_{variant}"


def variant_params(variant: str) -> dict:
    """What build.json records about how a variant is made."""
    import onnxruntime

    params = {"onnxruntime": onnxruntime.__version__}
    if variant in ("fp16", "q4f16"):
        params["fp16"] = {"tool": "onnxruntime.transformers.float16", "keep_io_types": True}
    if variant == "quantized":
        params["int8"] = {"tool": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QUInt8",
                          "op_types": ["MatMul", "Gather"], "kept_float": list(INT8_KEEP_FLOAT)}
    if variant in ("q4", "q4f16"):
        params["q4"] = {"tool": "MatMulNBitsQuantizer", "bits": 4, "block_size": Q4_BLOCK, "symmetric": True}
    return params


def check_variants(names: tuple[str, ...]) -> tuple[str, ...]:
    wanted = []
    for name in names:
        key = name.lower().lstrip("_")
        if key not in VARIANTS:
            raise SmolconvError(f"unknown ONNX variant {name!r}", f"choose from {', '.join(VARIANTS)}")
        if key not in wanted:
            wanted.append(key)
    return tuple(wanted)


def save_model(model, path: Path) -> None:
    """Save a ModelProto; over 2 GB the weights go to `<name>_data` beside it (as the published 2.2B decoder)."""
    import onnx

    large = model.ByteSize() > EXTERNAL_DATA_OVER if _in_memory(model) else True
    if large:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}_data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def _in_memory(model) -> bool:
    # ByteSize itself fails over 2 GB (ValueError from the pure-Python protobuf, EncodeError from upb, which
    # onnx 1.23 uses: the 2.2B decoder's _fp16 failed on it); a model that large always goes to external data.
    from google.protobuf.message import EncodeError

    try:
        model.ByteSize()
        return True
    except (ValueError, EncodeError):
        return False


def make_variant(variant: str, source: Path, target: Path) -> None:
    """Write `target` (and its external data, if any) from the fp32 graph `source`."""
    import onnx

    if variant == "fp16":
        save_model(_to_fp16(onnx.load(str(source))), target)
    elif variant == "quantized":
        _quantize_int8(source, target)
    elif variant == "q4":
        save_model(_to_q4(onnx.load(str(source))), target)
    elif variant == "q4f16":
        save_model(_to_fp16(_to_q4(onnx.load(str(source)))), target)
    else:
        raise ValueError(variant)


def _to_fp16(model):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)


def _to_q4(model):
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # It logs every node it looks at at INFO level: thousands of lines once anything configures logging.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)

    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=Q4_BLOCK, is_symmetric=True)
    quantizer.process()
    return quantizer.model.model


def _quantize_int8(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    large = source.with_name(source.name + "_data").exists()
    graph = onnx.load(str(source), load_external_data=False).graph
    keep = [n.name for n in graph.node if n.op_type == "MatMul" and any(k in n.name for k in INT8_KEEP_FLOAT)]
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=target.parent) as tmp, _shape_inference_in_place():
        out = Path(tmp) / target.name
        quantize_dynamic(source, out, weight_type=QuantType.QUInt8, op_types_to_quantize=["MatMul", "Gather"],
                         nodes_to_exclude=keep, use_external_data_format=large,
                         extra_options={"MatMulConstBOnly": True})
        if large:  # its data file is `<name>.data`: renamed (not loaded and saved again: 3.5 GB for 2.2B)
            _rename_external_data(out, out.with_name(out.name + ".data"), target)
        else:
            out.replace(target)


def _rename_external_data(graph: Path, data: Path, target: Path) -> None:
    """Move `graph` and its one external data file `data` to `target` + `<target name>_data`."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = onnx.load(str(graph), load_external_data=False)
    location = f"{target.name}_data"
    for tensor in _get_all_tensors(model):  # initializers and tensor attributes: onnxruntime moves both
        if uses_external_data(tensor):
            entry = next(e for e in tensor.external_data if e.key == "location")
            entry.value = location
    data.replace(target.with_name(location))
    onnx.save_model(model, str(target))


@contextmanager
def _shape_inference_in_place():
    """Have quantize_dynamic rerun shape inference on the model it holds, not on a reloaded copy.

    Its quantizer reruns shape inference by deep-copying the model, saving the copy and loading it back, while
    the original is still referenced: three copies of the weights at once (the vision encoder's `_quantized`
    peaked at 4x its graph; for the 6.5 GB 2.2B decoder that is over 20 GB). Shape inference reads the shapes
    of the weights, not their values, so here it runs on a copy of the graph without the large weights, and the
    value_info it finds goes into the model itself, which the quantizer then uses as it would the reloaded one.
    """
    from onnxruntime.quantization import onnx_quantizer

    original = getattr(onnx_quantizer, "save_and_reload_model_with_shape_infer", None)
    if original is None:  # another onnxruntime: its own way works, with the memory it takes
        yield
        return
    onnx_quantizer.save_and_reload_model_with_shape_infer = _infer_shapes_in_place
    try:
        yield
    finally:
        onnx_quantizer.save_and_reload_model_with_shape_infer = original


def _infer_shapes_in_place(model):
    import math

    import onnx
    from onnx import helper
    from onnxruntime.quantization.quant_utils import add_infer_metadata

    def without_values(tensor):
        if math.prod(tensor.dims) <= 1024:  # small ones may be read (a Reshape's shape): kept whole
            return tensor
        return onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)

    graph = model.graph
    light = helper.make_model(
        helper.make_graph(graph.node, graph.name, graph.input, graph.output,
                          [without_values(t) for t in graph.initializer]),
        opset_imports=model.opset_import, ir_version=model.ir_version, functions=model.functions)
    inferred = onnx.shape_inference.infer_shapes(light)
    del graph.value_info[:]
    graph.value_info.extend(inferred.graph.value_info)
    add_infer_metadata(model)
    return model
