"""`smolconv plan`: how each variant fits a GPU, and the num_ctx / num_gpu that make it fit.

`quant_rules` (llama-quantize's tensor types, to estimate a variant before anything is downloaded), `memory` (the
memory model), `planner` (fitting num_ctx and num_gpu), `measure` (llama-server's own numbers, to check the model),
`gpu` (the card's memory); docs/ARCHITECTURE.md ("What `plan` counts on a GPU") says what is counted and why.
"""

from __future__ import annotations

from smolconv.plan.measure import MeasuredMemory, measure_llama_server, parse_llama_server_memory
from smolconv.plan.memory import (
    CUBLAS_LIBRARY,
    CUBLAS_WORKSPACE,
    CUDA_CONTEXT,
    KV_TYPES,
    OLLAMA_IMAGE_TOKENS_BUDGET,
    OLLAMA_MIN_VISION_CTX,
    OLLAMA_MMPROJ_HEADROOM,
    VIDEO_MAX_FRAMES,
    GiB,
    MemoryEstimate,
    MiB,
    PlanSettings,
    estimate,
    format_bytes,
    kv_cache_bytes,
    parse_size,
    projector_compute_bytes,
    runtime_bytes,
    text_compute_bytes,
)
from smolconv.plan.planner import PlanOptions, VariantPlan, known_shape, plan, plan_for_shape, plan_variant
from smolconv.plan.quant_rules import (
    ESTIMATED_TYPES,
    estimated_projector_bytes,
    estimated_tensor_types,
    estimated_variant,
)
from smolconv.record.variants import (  # in dependency order
    Projector,
    TextModel,
    Variant,
    build_variants,
    read_projector,
    read_text_model,
    read_variant,
)

__all__ = [
    "CUBLAS_LIBRARY", "CUBLAS_WORKSPACE", "CUDA_CONTEXT", "ESTIMATED_TYPES", "KV_TYPES", "OLLAMA_IMAGE_TOKENS_BUDGET",
    "OLLAMA_MIN_VISION_CTX", "OLLAMA_MMPROJ_HEADROOM", "VIDEO_MAX_FRAMES", "GiB", "MeasuredMemory", "MemoryEstimate",
    "MiB", "PlanOptions", "PlanSettings", "Projector", "TextModel", "Variant", "VariantPlan", "build_variants",
    "estimate", "estimated_projector_bytes", "estimated_tensor_types", "estimated_variant", "format_bytes",
    "known_shape", "kv_cache_bytes", "measure_llama_server", "parse_llama_server_memory", "parse_size", "plan",
    "plan_for_shape", "plan_variant", "projector_compute_bytes", "read_projector", "read_text_model", "read_variant",
    "runtime_bytes", "text_compute_bytes",
]
