"""llama-quantize's choice of tensor types, re-stated: a variant's size from config dimensions, no download."""

from __future__ import annotations

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from smolconv.core.errors import SmolconvError
from smolconv.core.models import ModelShape
from smolconv.record.variants import Projector, TextModel, Variant

# --------------------------------------------------------------------------------------------------
# Estimating variants from config dimensions (no download): llama-quantize's type choice, re-stated


_BASE_TYPE = {"Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K", "Q8_0": "Q8_0", "F16": "F16", "BF16": "BF16", "F32": "F32"}
# Where llama-quantize puts a tensor whose rows are not a multiple of the type's block (llama-quant.cpp).
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
ESTIMATED_TYPES = tuple(_BASE_TYPE)


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _block(type_name: str) -> tuple[int, int]:
    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]


def _tensor_type(kind: str, layer: int, n_layer: int, ncols: int, qtype: str) -> str:
    """The type llama-quantize gives a 2-D tensor of a llama model for the mixes smolconv plans."""
    base = _BASE_TYPE[qtype]
    if base in ("F16", "BF16", "F32"):
        return base
    chosen = base
    if kind == "output":
        # The output matrix gets Q6_K, or Q8_0 when its rows do not fit Q6_K's 256-blocks.
        if ncols % _block(base)[0] != 0:
            return "Q8_0"
        chosen = base if base == "Q8_0" else "Q6_K"
    elif kind in ("attn_v", "ffn_down") and qtype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(layer, n_layer):
        chosen = "Q6_K"
    if ncols % _block(chosen)[0] != 0:
        chosen = _FALLBACK.get(chosen, "F16")
    return chosen


def _nbytes(type_name: str, rows: int, cols: int) -> int:
    block, size = _block(type_name)
    return rows * (cols // block) * size


def estimated_tensor_types(shape: ModelShape, qtype: str) -> dict[str, tuple[str, int]]:
    """Tensor name → (type, bytes) of the text GGUF llama-quantize would write for this shape."""
    t = shape.text
    kv = t.num_key_value_heads * t.head_dim
    tensors: dict[str, tuple[str, int]] = {}

    def add(name: str, kind: str, layer: int, cols: int, rows: int) -> None:
        type_name = _tensor_type(kind, layer, t.num_hidden_layers, cols, qtype)
        tensors[name] = (type_name, _nbytes(type_name, rows, cols))

    add("token_embd.weight", "token_embd", 0, t.hidden_size, t.vocab_size)
    for i in range(t.num_hidden_layers):
        add(f"blk.{i}.attn_q.weight", "attn_q", i, t.hidden_size, t.num_attention_heads * t.head_dim)
        add(f"blk.{i}.attn_k.weight", "attn_k", i, t.hidden_size, kv)
        add(f"blk.{i}.attn_v.weight", "attn_v", i, t.hidden_size, kv)
        add(f"blk.{i}.attn_output.weight", "attn_output", i, t.num_attention_heads * t.head_dim, t.hidden_size)
        add(f"blk.{i}.ffn_gate.weight", "ffn_gate", i, t.hidden_size, t.intermediate_size)
        add(f"blk.{i}.ffn_up.weight", "ffn_up", i, t.hidden_size, t.intermediate_size)
        add(f"blk.{i}.ffn_down.weight", "ffn_down", i, t.intermediate_size, t.hidden_size)
        for norm in ("attn_norm", "ffn_norm"):
            tensors[f"blk.{i}.{norm}.weight"] = ("F32", 4 * t.hidden_size)
    tensors["output_norm.weight"] = ("F32", 4 * t.hidden_size)
    if not shape.tie_word_embeddings:
        add("output.weight", "output", 0, t.hidden_size, t.vocab_size)
    return tensors


def estimated_projector_bytes(shape: ModelShape) -> int:
    """The f16 mmproj the converter writes: 2-D weights f16; biases, norms and embeddings f32."""
    v = shape.vision
    h, ff = v.hidden_size, v.intermediate_size
    n_patches = (v.image_size // v.patch_size) ** 2
    f16, f32 = 2, 4
    per_layer = 4 * h * h * f16 + 4 * h * f32 + 2 * h * ff * f16 + (ff + h) * f32 + 4 * h * f32
    embeddings = (v.patch_size * v.patch_size * 3 * h + h + n_patches * h) * f32
    connector = h * shape.scale_factor**2 * shape.text.hidden_size * f16
    return v.num_hidden_layers * per_layer + embeddings + 2 * h * f32 + connector


def estimated_variant(shape: ModelShape, qtype: str) -> Variant:
    qtype = qtype.upper()
    if qtype not in _BASE_TYPE:
        raise SmolconvError(f"cannot estimate {qtype} without the file",
                            f"plan one of {', '.join(ESTIMATED_TYPES)}, or plan a build directory")
    t = shape.text
    tensors = estimated_tensor_types(shape, qtype)
    layers = [sum(size for name, (_, size) in tensors.items() if name.startswith(f"blk.{i}."))
              for i in range(t.num_hidden_layers)]
    text = TextModel(
        n_layer=t.num_hidden_layers, n_embd=t.hidden_size, n_ff=t.intermediate_size,
        n_head=t.num_attention_heads, n_head_kv=t.num_key_value_heads, head_dim=t.head_dim,
        n_vocab=t.vocab_size, n_ctx_train=t.max_position_embeddings, layer_bytes=tuple(layers),
        input_bytes=tensors["token_embd.weight"][1],
        output_bytes=sum(size for name, (_, size) in tensors.items() if name.startswith("output")),
    )
    v = shape.vision
    projector = Projector(
        weight_bytes=estimated_projector_bytes(shape), image_size=v.image_size, patch_size=v.patch_size,
        scale_factor=shape.scale_factor, preproc_image_size=shape.longest_edge, n_embd=v.hidden_size,
        n_ff=v.intermediate_size,
    )
    return Variant(name=qtype, text=text, projector=projector, estimated=True, model=shape.name)
