"""`smolconv plan`: how each variant fits a GPU, and the num_ctx / num_gpu that make it fit.

What is counted is what llama.cpp's llama-server allocates (Ollama ≥ 0.30 runs it for every GGUF model):

- weights: the tensor bytes of the text GGUF, per layer. `token_embd` stays in host memory (llama.cpp keeps
  the input layer on the CPU); the output layer goes to the GPU only when every layer does.
- KV cache: layers × n_ctx × KV heads × head dim × 2 (K and V) × bytes per element of the cache type.
- compute buffers: text = n_ubatch × 4 B × max(4 × n_ff, 12 × n_embd) plus the attention mask
  (n_ctx × n_ubatch × 2 B) and the logits of one output per sequence; projector = the tile's pixels plus
  1.6 × patches × vision n_ff × 4 B. Both are fits to what llama-server reports for the tiny, 256m and 2.2b
  shapes (`scripts/bench_plan.py` prints the comparison).
- the CUDA runtime outside those buffers (`runtime_bytes`): the CUDA context, cuBLAS's handle and workspace,
  and what ggml's CUDA memory pool grows to while a prompt is processed and an image encoded. Fitted to the
  process's own memory on an H100 (issue 15; docs/ARCHITECTURE.md says where each term comes from).
- a reserve for the desktop.

Ollama's own placement (llm/llama_server.go): the projector stays on the CPU when num_gpu is below the layer
count + 1, or when free VRAM is below the projector's weights + 1 GiB. The plan sets num_ctx and num_gpu
explicitly so that Ollama does what the plan promised.

The package follows those concerns: `variants` (what a build's GGUF files hold), `quant_rules` (llama-quantize's
tensor types, to estimate a variant before anything is downloaded), `memory` (the memory model), `planner`
(fitting num_ctx and num_gpu), `measure` (llama-server's own numbers, to check the model).
"""

from __future__ import annotations

from smolconv.plan.variants import (  # in dependency order
    Projector, TextModel, Variant, build_variants, read_projector, read_text_model, read_variant,
)
from smolconv.plan.quant_rules import (
    ESTIMATED_TYPES, estimated_projector_bytes, estimated_tensor_types, estimated_variant,
)
from smolconv.plan.memory import (
    CUBLAS_LIBRARY, CUBLAS_WORKSPACE, CUDA_CONTEXT, KV_TYPES, OLLAMA_IMAGE_TOKENS_BUDGET, OLLAMA_MIN_VISION_CTX,
    OLLAMA_MMPROJ_HEADROOM, VIDEO_MAX_FRAMES, GiB, MemoryEstimate, MiB, PlanSettings, estimate, format_bytes,
    kv_cache_bytes, parse_size, projector_compute_bytes, runtime_bytes, text_compute_bytes,
)
from smolconv.plan.planner import PlanOptions, VariantPlan, known_shape, plan, plan_for_shape, plan_variant
from smolconv.plan.measure import MeasuredMemory, measure_llama_server, parse_llama_server_memory

__all__ = [
    "CUBLAS_LIBRARY", "CUBLAS_WORKSPACE", "CUDA_CONTEXT", "ESTIMATED_TYPES", "KV_TYPES", "OLLAMA_IMAGE_TOKENS_BUDGET",
    "OLLAMA_MIN_VISION_CTX", "OLLAMA_MMPROJ_HEADROOM", "VIDEO_MAX_FRAMES", "GiB", "MeasuredMemory", "MemoryEstimate",
    "MiB", "PlanOptions", "PlanSettings", "Projector", "TextModel", "Variant", "VariantPlan", "build_variants",
    "estimate", "estimated_projector_bytes", "estimated_tensor_types", "estimated_variant", "format_bytes",
    "known_shape", "kv_cache_bytes", "measure_llama_server", "parse_llama_server_memory", "parse_size", "plan",
    "plan_for_shape", "plan_variant", "projector_compute_bytes", "read_projector", "read_text_model", "read_variant",
    "runtime_bytes", "text_compute_bytes",
]
