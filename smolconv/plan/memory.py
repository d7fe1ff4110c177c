"""The memory model: what llama-server allocates for a variant at a context size, and sizes as text."""

from __future__ import annotations

import re
from dataclasses import dataclass

from smolconv.core.errors import SmolconvError
from smolconv.record.variants import Projector, TextModel, Variant

MiB = 2**20
GiB = 2**30

# Ollama's constants (llm/llama_server.go, server/prompt.go at v0.33).
OLLAMA_MMPROJ_HEADROOM = 1 * GiB
OLLAMA_IMAGE_TOKENS_BUDGET = 768  # tokens Ollama assumes per image when it truncates a chat history
OLLAMA_MIN_VISION_CTX = 2048

KV_TYPES = {"f16": 2.0, "q8_0": 34 / 32}  # bytes per element
VIDEO_MAX_FRAMES = 64  # SmolVLM2 samples video at 1 fps, at most 64 frames


# --------------------------------------------------------------------------------------------------
# The memory model


# The CUDA runtime outside llama.cpp's buffers, measured with `nvidia-smi --query-compute-apps` on an H100 (CUDA 13.0,
# driver 580) serving 2.2b at num_ctx 8192 (issue 15). A smaller card's context is smaller (fewer SMs to reserve
# local memory and printf/heap space for), so on the cards smolconv plans for these err on the safe side.
CUDA_CONTEXT = 600 * MiB      # idle after load minus every buffer: 589 MiB measured, rounded up
CUBLAS_WORKSPACE = 32 * MiB   # cuBLAS's recommended workspace on Hopper (4 MiB before it)
CUBLAS_LIBRARY = 76 * MiB     # cuBLAS's handle and kernels, loaded on the first GEMM (the first image): fitted


DEFAULT_VRAM = 8 * GiB        # the card: an RTX 4070 has 8 GiB
DEFAULT_RESERVE = 512 * MiB   # left free for the desktop and other programs


@dataclass(frozen=True)
class PlanSettings:
    vram: int = DEFAULT_VRAM
    reserve: int = DEFAULT_RESERVE
    overhead: int | None = None     # a flat figure for the CUDA runtime instead of the model (runtime_bytes)
    kv_type: str = "f16"
    n_ubatch: int = 512             # llama-server's default physical batch
    n_parallel: int = 1             # Ollama's default OLLAMA_NUM_PARALLEL
    min_ctx: int = OLLAMA_MIN_VISION_CTX
    max_ctx: int | None = None      # default: the model's training context
    ctx_step: int = 1024
    num_ctx: int | None = None      # plan this context only (offload layers if it does not fit)

    def __post_init__(self):
        if self.kv_type not in KV_TYPES:
            raise SmolconvError(f"unknown KV cache type {self.kv_type!r}", f"use one of {', '.join(KV_TYPES)}")
        if self.vram <= self.reserve + (CUDA_CONTEXT if self.overhead is None else self.overhead):
            raise SmolconvError(f"--vram {format_bytes(self.vram)} leaves nothing after the reserve and overhead",
                                "give the card's memory, e.g. --vram 8GiB")


@dataclass(frozen=True)
class MemoryEstimate:
    n_ctx: int
    n_gpu_layers: int           # Ollama's num_gpu: repeating layers, + 1 for the output layer
    projector_on_device: bool
    weights: int                # text weights on the device
    projector_weights: int      # on the device (0 when the projector runs on the CPU)
    kv_cache: int
    compute: int                # text compute buffer
    projector_compute: int
    output: int                 # logits buffer (host memory with a GPU, counted for the CPU backend)
    cuda_context: int           # the CUDA runtime outside llama.cpp's buffers (runtime_bytes), in three parts
    cublas: int
    cuda_pool: int
    host: int                   # what stays in system RAM: token_embd, layers not offloaded, CPU projector

    @property
    def overhead(self) -> int:
        return self.cuda_context + self.cublas + self.cuda_pool

    @property
    def total(self) -> int:
        return (self.weights + self.projector_weights + self.kv_cache + self.compute + self.projector_compute
                + self.output + self.overhead)


def kv_cache_bytes(text: TextModel, n_ctx: int, n_layers: int, kv_type: str) -> int:
    return int(n_layers * n_ctx * text.n_head_kv * text.head_dim * 2 * KV_TYPES[kv_type])


def text_compute_bytes(text: TextModel, n_ctx: int, n_ubatch: int, n_parallel: int) -> int:
    activations = n_ubatch * 4 * max(4 * text.n_ff, 12 * text.n_embd)
    mask = n_ctx * n_ubatch * 2
    logits = n_parallel * text.n_vocab * 4
    return activations + mask + logits


def projector_compute_bytes(projector: Projector) -> int:
    n_patches = (projector.image_size // projector.patch_size) ** 2
    pixels = projector.image_size**2 * 3 * 4
    return int(pixels + 1.6 * n_patches * projector.n_ff * 4)


def runtime_bytes(variant: Variant, settings: PlanSettings, n_gpu: int, projector_on_device: bool) -> dict[str, int]:
    """The CUDA process's memory outside llama.cpp's buffers, at its worst (largest image, full context).

    - cuda_context: the context llama-server creates at start, with the kernels its warm-up loaded.
    - cublas: on the first matrix product cuBLAS takes (the projector's f16 weights; prompts on cards or types
      without llama.cpp's own quantized kernels) it creates its handle, allocates its workspace and loads its kernels.
    - cuda_pool: ggml's CUDA pool keeps what it handed out: while an image is encoded, converted copies of the
      projector's activations (as large as its compute buffer); while a prompt is processed, one ubatch's
      activations at the feed-forward width in f32.
    With `settings.overhead` the whole is that flat figure instead (a card measured by hand)."""
    if settings.overhead is not None:
        return {"cuda_context": settings.overhead, "cublas": 0, "cuda_pool": 0}
    on_device = n_gpu > 0 or projector_on_device
    pool = (projector_compute_bytes(variant.projector) if projector_on_device else 0) + (
        settings.n_ubatch * variant.text.n_ff * 4 if n_gpu else 0)
    return {"cuda_context": CUDA_CONTEXT, "cublas": CUBLAS_WORKSPACE + CUBLAS_LIBRARY if on_device else 0,
            "cuda_pool": pool}


def estimate(variant: Variant, n_ctx: int, settings: PlanSettings, n_gpu_layers: int | None = None,
             projector_on_device: bool = True, cpu_backend: bool = False) -> MemoryEstimate:
    """Memory on the device for one placement. `cpu_backend` counts everything, as llama-server on a CPU does."""
    text = variant.text
    all_layers = text.n_layer + 1
    n_gpu = all_layers if n_gpu_layers is None else min(n_gpu_layers, all_layers)
    offloaded = min(n_gpu, text.n_layer)
    on_device_layers = sum(text.layer_bytes[text.n_layer - offloaded:])  # llama.cpp offloads the last layers
    weights = on_device_layers + (text.output_bytes if n_gpu == all_layers else 0)
    # A GGUF LoRA's tensors sit with the layers they adapt; counted whole on the device when any layer is.
    adapter = variant.adapter_bytes if offloaded else 0
    output_logits = settings.n_parallel * text.n_vocab * 4
    if cpu_backend:
        weights, offloaded, n_gpu = text.weight_bytes, text.n_layer, all_layers
        adapter = variant.adapter_bytes
    weights += adapter
    projector = projector_on_device and (n_gpu == all_layers or cpu_backend)
    compute = text_compute_bytes(text, n_ctx, settings.n_ubatch, settings.n_parallel) if n_gpu else 0
    host = text.weight_bytes + variant.adapter_bytes - weights + (0 if projector else variant.projector.weight_bytes)
    return MemoryEstimate(
        n_ctx=n_ctx, n_gpu_layers=n_gpu, projector_on_device=projector,
        weights=weights,
        projector_weights=variant.projector.weight_bytes if projector else 0,
        kv_cache=kv_cache_bytes(text, n_ctx, offloaded, settings.kv_type),
        compute=compute,
        projector_compute=projector_compute_bytes(variant.projector) if projector else 0,
        output=output_logits if cpu_backend else 0,
        **({"cuda_context": 0, "cublas": 0, "cuda_pool": 0} if cpu_backend
           else runtime_bytes(variant, settings, n_gpu, projector)),
        host=0 if cpu_backend else host + output_logits,
    )


# --------------------------------------------------------------------------------------------------
# Sizes on the command line


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?)(B?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """8GiB, 8G and 8 (GiB) are binary; 8GB is decimal, as card boxes say; 512MiB, 7.5GiB."""
    match = _SIZE.match(text)
    if not match or (match.group(3) and not match.group(2)):
        raise SmolconvError(f"cannot read {text!r} as a memory size", "write it like 8GiB, 7.5GiB or 512MiB")
    number, prefix = float(match.group(1)), match.group(2).upper()
    if not prefix:
        return int(number * GiB) if not match.group(4) else int(number)
    power = "KMGT".index(prefix) + 1
    decimal = match.group(4) and not match.group(3)
    return int(number * (1000**power if decimal else 1024**power))


def size_text(n: int) -> str:
    """A size as the options take it (parse_size reads it back): 8GiB, 512MiB."""
    return f"{n // GiB}GiB" if n % GiB == 0 else f"{n // MiB}MiB"


def format_bytes(n: float) -> str:
    if abs(n) >= GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / MiB:.0f} MiB"
