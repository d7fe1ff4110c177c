"""The variants transformers.js names, made from the fp32 graphs with onnxruntime's own tools.

- `_fp16`: onnxruntime.transformers.float16 with keep_io_types (float32 inputs and outputs, float16 inside);
- `_quantized`: onnxruntime.quantization.quantize_dynamic, 8-bit (uint8) weights of MatMul and Gather, except
  the MLP down projections (below);
- `_q4`: MatMulNBitsQuantizer, 4-bit symmetric, block 32 (MatMul weights only);
- `_q4f16`: `_q4` then the float16 conversion.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from smolconv.errors import SmolconvError

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
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=target.parent) as tmp:
        # quantize_dynamic names external data after its output; write it aside, then save it our way.
        out = Path(tmp) / target.name
        quantize_dynamic(source, out, weight_type=QuantType.QUInt8, op_types_to_quantize=["MatMul", "Gather"],
                         nodes_to_exclude=keep, use_external_data_format=large,
                         extra_options={"MatMulConstBOnly": True})
        save_model(onnx.load(str(out)), target)
