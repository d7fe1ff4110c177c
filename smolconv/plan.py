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
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

from smolconv.errors import SmolconvError
from smolconv.gguf_file import open_gguf
from smolconv.models import SHAPES, ModelShape, get_shape

MiB = 2**20
GiB = 2**30

# Ollama's constants (llm/llama_server.go, server/prompt.go at v0.33).
OLLAMA_MMPROJ_HEADROOM = 1 * GiB
OLLAMA_IMAGE_TOKENS_BUDGET = 768  # tokens Ollama assumes per image when it truncates a chat history
OLLAMA_MIN_VISION_CTX = 2048

KV_TYPES = {"f16": 2.0, "q8_0": 34 / 32}  # bytes per element
VIDEO_MAX_FRAMES = 64  # SmolVLM2 samples video at 1 fps, at most 64 frames


# --------------------------------------------------------------------------------------------------
# What the planner knows about a variant


@dataclass(frozen=True)
class TextModel:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_ctx_train: int
    layer_bytes: tuple[int, ...]  # tensor bytes of each repeating block
    input_bytes: int              # token_embd: stays in host memory
    output_bytes: int             # output + output_norm: on the GPU only with every layer

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_bytes) + self.input_bytes + self.output_bytes


@dataclass(frozen=True)
class Projector:
    weight_bytes: int
    image_size: int          # the tile the vision tower sees
    patch_size: int
    scale_factor: int        # pixel shuffle: tokens per tile shrink by its square
    preproc_image_size: int  # an image's long side is resized to this before tiling
    n_embd: int
    n_ff: int

    @property
    def tokens_per_tile(self) -> int:
        patches = self.image_size // self.patch_size
        return (patches * patches) // (self.scale_factor * self.scale_factor)

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """Columns and rows of tiles for an image of `size` (w, h): llama.cpp and transformers resize its long
        side to the preprocessor's longest edge (up or down), then cut image_size tiles."""
        w, h = size
        scale = self.preproc_image_size / max(w, h)
        return (math.ceil(max(1, round(w * scale)) / self.image_size),
                math.ceil(max(1, round(h * scale)) / self.image_size))

    def tiles(self, size: tuple[int, int]) -> int:
        """The grid's tiles plus one overview of the whole image (a single tile has no overview)."""
        cols, rows = self.grid(size)
        return cols * rows + (1 if cols * rows > 1 else 0)

    def image_tokens(self, size: tuple[int, int]) -> int:
        """Prompt tokens of one image, as SmolVLM's processor lays it out (llama.cpp's mtmd does the same):
        each tile is <fake_token_around_image><row_r_col_c> and its tokens, each row of tiles ends in a
        newline, then a newline, <fake_token_around_image><global-img> and the overview, and a closing
        <fake_token_around_image>. A single tile is just <fake…><global-img>, its tokens, <fake…>."""
        cols, rows = self.grid(size)
        tile = self.tokens_per_tile + 2
        if cols * rows == 1:
            return tile + 1
        return cols * rows * tile + rows + 1 + tile + 1

    @property
    def max_tiles(self) -> int:
        """Tiles of the largest (square) image."""
        return self.tiles((self.image_size, self.image_size))

    @property
    def max_image_tokens(self) -> int:
        return self.image_tokens((self.image_size, self.image_size))

    @property
    def video_frame_tokens(self) -> int:
        """A 16:9 frame. transformers gives a video frame one tile, but llama.cpp (and so Ollama) has no
        video input: frames go in as images and are tiled like any image (13 tiles at 16:9)."""
        return self.image_tokens((16, 9))


@dataclass(frozen=True)
class Variant:
    name: str                  # the quant type: Q4_K_M, F16, ...
    text: TextModel
    projector: Projector
    text_path: Path | None = None
    projector_path: Path | None = None
    estimated: bool = False    # weights computed from config dimensions, not read from files
    model: str = ""            # the model these files are (shape name or build directory)
    adapter_path: Path | None = None  # a GGUF LoRA that llama-server loads beside the text model (--lora)
    adapter_bytes: int = 0


# --------------------------------------------------------------------------------------------------
# Reading variants from GGUF files


def _field(reader: GGUFReader, key: str, default=None):
    f = reader.get_field(key)
    return f.contents() if f is not None else default


def read_text_model(path: Path) -> TextModel:
    reader = open_gguf(path)
    arch = _field(reader, "general.architecture")
    if _field(reader, "general.type") == "mmproj" or arch == "clip":
        raise SmolconvError(f"{path} is a vision projector, not a text model", "pass the text GGUF")
    n_layer = int(_field(reader, f"{arch}.block_count"))
    layers = [0] * n_layer
    input_bytes = output_bytes = 0
    for tensor in reader.tensors:
        name, size = tensor.name, int(tensor.n_bytes)
        if name.startswith("blk."):
            layers[int(name.split(".")[1])] += size
        elif name.startswith("token_embd"):
            input_bytes += size
        else:  # output, output_norm, rope factors
            output_bytes += size
    n_embd = int(_field(reader, f"{arch}.embedding_length"))
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    tokens = reader.get_field("tokenizer.ggml.tokens")
    return TextModel(
        n_layer=n_layer, n_embd=n_embd, n_ff=int(_field(reader, f"{arch}.feed_forward_length")),
        n_head=n_head, n_head_kv=int(_field(reader, f"{arch}.attention.head_count_kv", n_head)),
        head_dim=int(_field(reader, f"{arch}.attention.key_length", n_embd // n_head)),
        n_vocab=int(_field(reader, f"{arch}.vocab_size", len(tokens.data) if tokens else 0)),
        n_ctx_train=int(_field(reader, f"{arch}.context_length")),
        layer_bytes=tuple(layers), input_bytes=input_bytes, output_bytes=output_bytes,
    )


def read_projector(path: Path) -> Projector:
    reader = open_gguf(path)
    if _field(reader, "general.architecture") != "clip":
        raise SmolconvError(f"{path} is not a vision projector (architecture is not clip)",
                            "pass the mmproj-*.gguf that `smolconv convert` wrote")
    image_size = int(_field(reader, "clip.vision.image_size"))
    return Projector(
        weight_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        image_size=image_size,
        patch_size=int(_field(reader, "clip.vision.patch_size")),
        scale_factor=int(_field(reader, "clip.vision.projector.scale_factor", 1)),
        preproc_image_size=int(_field(reader, "clip.vision.preproc_image_size", image_size)),
        n_embd=int(_field(reader, "clip.vision.embedding_length")),
        n_ff=int(_field(reader, "clip.vision.feed_forward_length")),
    )


def read_variant(name: str, text_path: Path, projector_path: Path, model: str = "") -> Variant:
    return Variant(name=name, text=read_text_model(text_path), projector=read_projector(projector_path),
                   text_path=text_path, projector_path=projector_path, model=model)


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


# --------------------------------------------------------------------------------------------------
# The memory model


# The CUDA runtime outside llama.cpp's buffers, measured with `nvidia-smi --query-compute-apps` on an H100 (CUDA 13.0,
# driver 580) serving 2.2b at num_ctx 8192 (issue 15). A smaller card's context is smaller (fewer SMs to reserve
# local memory and printf/heap space for), so on the cards smolconv plans for these err on the safe side.
CUDA_CONTEXT = 600 * MiB      # idle after load minus every buffer: 589 MiB measured, rounded up
CUBLAS_WORKSPACE = 32 * MiB   # cuBLAS's recommended workspace on Hopper (4 MiB before it)
CUBLAS_LIBRARY = 76 * MiB     # cuBLAS's handle and kernels, loaded on the first GEMM (the first image): fitted


@dataclass(frozen=True)
class PlanSettings:
    vram: int = 8 * GiB             # the card: an RTX 4070 has 8 GiB
    reserve: int = 512 * MiB        # left free for the desktop and other programs
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
# Planning


@dataclass
class VariantPlan:
    variant: Variant
    settings: PlanSettings
    memory: MemoryEstimate
    fits: bool                 # every layer and the projector on the GPU
    notes: list[str] = field(default_factory=list)

    @property
    def num_ctx(self) -> int:
        return self.memory.n_ctx

    @property
    def num_gpu(self) -> int:
        return self.memory.n_gpu_layers

    @property
    def budget(self) -> int:
        return self.settings.vram - self.settings.reserve

    @property
    def free(self) -> int:
        return self.budget - self.memory.total

    @property
    def images_per_context(self) -> int:
        return max(0, (self.num_ctx - 256) // self.variant.projector.max_image_tokens)

    @property
    def video_frames(self) -> int:
        return min(VIDEO_MAX_FRAMES, max(0, (self.num_ctx - 256) // self.variant.projector.video_frame_tokens))

    def to_dict(self) -> dict:
        v = self.variant
        return {
            "variant": v.name, "model": v.model, "estimated_from_config": v.estimated,
            "text_file": str(v.text_path) if v.text_path else None,
            "projector_file": str(v.projector_path) if v.projector_path else None,
            "vram": self.settings.vram, "reserve": self.settings.reserve, "kv_type": self.settings.kv_type,
            "fits": self.fits, "num_ctx": self.num_ctx, "num_gpu": self.num_gpu,
            "layers": v.text.n_layer + 1, "projector_on_gpu": self.memory.projector_on_device,
            "memory": {**asdict(self.memory), "overhead": self.memory.overhead, "total": self.memory.total},
            "free_after_load": self.free,
            "file_weights": {"text": v.text.weight_bytes, "projector": v.projector.weight_bytes},
            "image": {
                "tokens_per_tile": v.projector.tokens_per_tile, "max_tiles": v.projector.max_tiles,
                "max_image_tokens": v.projector.max_image_tokens,
                "full_size_images_per_context": self.images_per_context,
                "video_frames_per_context": self.video_frames,
            },
            "notes": self.notes,
        }


def _projector_allowed(variant: Variant, settings: PlanSettings) -> bool:
    # Ollama keeps the projector on the CPU when free VRAM is under its weights + 1 GiB.
    return settings.vram - settings.reserve >= variant.projector.weight_bytes + OLLAMA_MMPROJ_HEADROOM


def _contexts(variant: Variant, settings: PlanSettings) -> list[int]:
    if settings.num_ctx:
        return [settings.num_ctx]
    top = min(settings.max_ctx or variant.text.n_ctx_train, variant.text.n_ctx_train)
    step = settings.ctx_step
    candidates = list(range(top - top % step, settings.min_ctx - 1, -step))
    if top not in candidates:
        candidates.insert(0, top)
    return candidates or [settings.min_ctx]


def plan_variant(variant: Variant, settings: PlanSettings) -> VariantPlan:
    budget = settings.vram - settings.reserve
    contexts = _contexts(variant, settings)
    projector_ok = _projector_allowed(variant, settings)
    notes: list[str] = []
    if not projector_ok:
        notes.append(f"the projector ({format_bytes(variant.projector.weight_bytes)}) runs on the CPU: Ollama "
                     "needs its weights + 1 GiB free to put it on the GPU")
    for n_ctx in contexts:
        memory = estimate(variant, n_ctx, settings, projector_on_device=projector_ok)
        if memory.total <= budget:
            plan = VariantPlan(variant, settings, memory, fits=projector_ok, notes=notes)
            break
    else:
        # Not every layer fits even at the smallest context: offload as many layers as fit; Ollama then keeps
        # the projector on the CPU.
        n_ctx = contexts[-1]
        n_gpu = 0
        for layers in range(variant.text.n_layer, -1, -1):
            if estimate(variant, n_ctx, settings, layers, projector_on_device=False).total <= budget:
                n_gpu = layers
                break
        memory = estimate(variant, n_ctx, settings, n_gpu, projector_on_device=False)
        plan = VariantPlan(variant, settings, memory, fits=False, notes=notes)
        if n_gpu == 0:
            plan.notes.append("nothing fits on the GPU: this runs on the CPU")
        else:
            plan.notes.append(f"{variant.text.n_layer - n_gpu} of {variant.text.n_layer} layers and the output "
                              "layer run on the CPU; the projector too")
    image_tokens = variant.projector.max_image_tokens
    if image_tokens > OLLAMA_IMAGE_TOKENS_BUDGET:
        plan.notes.append(f"a full-size image is about {image_tokens} tokens; Ollama budgets "
                          f"{OLLAMA_IMAGE_TOKENS_BUDGET} per image when it trims a long chat")
    if plan.num_ctx < image_tokens + 256:
        plan.notes.append(f"num_ctx {plan.num_ctx} leaves little room beside a full-size image ({image_tokens} tokens)")
    return plan


# --------------------------------------------------------------------------------------------------
# Targets: a build directory, or a known model before anything is downloaded


@dataclass
class PlanOptions:
    target: str                      # a build directory, or 256m / 500m / 2.2b / a Hub id smolconv knows
    types: tuple[str, ...] = ()      # default: every variant in the build, or Q4_K_M Q5_K_M Q8_0
    settings: PlanSettings = field(default_factory=PlanSettings)


def known_shape(target: str) -> ModelShape | None:
    key = target.strip().lower()
    for shape in SHAPES.values():
        if shape.repo_id and key in (shape.name, shape.repo_id.lower(), shape.repo_id.split("/")[-1].lower()):
            return shape
    return None


def build_variants(out_dir: Path, types: tuple[str, ...] = ()) -> list[Variant]:
    """The variants a build directory holds, read from the files its build.json lists."""
    from smolconv.manifest import Manifest  # here: plan on a known shape needs no build

    manifest = Manifest.load(out_dir)
    convert_step = manifest.data["steps"].get("convert")
    if not convert_step:
        raise SmolconvError(f"{out_dir} has no build.json with a converted model",
                            "run `smolconv build` first, or plan a known model such as 2.2b")
    text_name, projector_name = convert_step["outputs"]
    projector_path = out_dir / projector_name
    files: dict[str, Path] = {convert_step["params"]["outtype"].upper(): out_dir / text_name}
    for step_name, step in manifest.data["steps"].items():
        if step_name.startswith("quantize:"):
            files[step["params"]["type"].upper()] = out_dir / step["outputs"][0]
        elif step_name.startswith("quantize-mmproj:"):
            projector_path = out_dir / step["outputs"][0]  # the quantized projector is the one to ship
    # Without a choice: every variant still on disk (a user may have deleted one).
    wanted = [t.upper() for t in types] or [t for t, path in files.items() if path.is_file()]
    missing = [t for t in wanted if t not in files]
    if missing:
        raise SmolconvError(f"{out_dir} has no {', '.join(missing)} variant",
                            f"plan one of {', '.join(files)}, or run `smolconv quantize --type {missing[0]}`")
    projector = read_projector(projector_path)
    adapter_path = None
    adapter_step = manifest.data["steps"].get("convert-adapter")
    if adapter_step and manifest.data.get("adapter", {}).get("format") == "gguf":
        adapter_path = out_dir / adapter_step["outputs"][0]
        if not adapter_path.is_file():
            raise SmolconvError(f"{adapter_path} is missing", "run `smolconv build` again")
    adapter_bytes = adapter_path.stat().st_size if adapter_path else 0
    variants = []
    for qtype in wanted:
        path = files[qtype]
        if not path.is_file():
            raise SmolconvError(f"{path} is missing", "run `smolconv build` again")
        variants.append(Variant(qtype, read_text_model(path), projector, path, projector_path, model=out_dir.name,
                                adapter_path=adapter_path, adapter_bytes=adapter_bytes))
    return variants


def plan(options: PlanOptions) -> list[VariantPlan]:
    target = Path(options.target)
    if target.is_dir():
        variants = build_variants(target, options.types)
    else:
        shape = known_shape(options.target)
        if shape is None:
            raise SmolconvError(f"{options.target} is neither a build directory nor a model smolconv knows",
                                "pass a directory `smolconv build` wrote, or one of 256m, 500m, 2.2b")
        types = options.types or ("Q4_K_M", "Q5_K_M", "Q8_0")
        variants = [estimated_variant(shape, t) for t in types]
    return [plan_variant(v, options.settings) for v in variants]


def plan_for_shape(name: str, qtype: str, settings: PlanSettings | None = None) -> VariantPlan:
    return plan_variant(estimated_variant(get_shape(name), qtype), settings or PlanSettings())


# --------------------------------------------------------------------------------------------------
# Checking the model against llama.cpp's own numbers


@dataclass(frozen=True)
class MeasuredMemory:
    """What llama-server reports at start-up (log verbosity 4), in bytes, summed over devices."""

    weights: int            # text model buffers, without CPU_REPACK (a CPU-only re-layout copy)
    projector_weights: int  # clip "model size"
    kv_cache: int
    compute: int            # text compute buffers (device and host)
    projector_compute: int
    output: int
    repack: int = 0
    buffers: dict[str, float] = field(default_factory=dict)  # every reported line, MiB

    @property
    def total(self) -> int:
        return (self.weights + self.projector_weights + self.kv_cache + self.compute + self.projector_compute
                + self.output)

    @property
    def on_cuda(self) -> bool:
        """llama-server put buffers on a CUDA device (CUDA0 ...): a CUDA build with a GPU."""
        return any(key.split(":")[1].startswith("CUDA") and not key.split(":")[1].startswith("CUDA_Host")
                   for key in self.buffers if key.count(":") == 2)

    @property
    def device_total(self) -> int:
        """What the CUDA devices hold of the buffers (host-side buffers left out), in bytes."""
        return int(round(sum(mib for key, mib in self.buffers.items()
                             if key.count(":") == 2 and key.split(":")[1].startswith("CUDA")
                             and not key.split(":")[1].startswith("CUDA_Host")) * MiB)
                   + (self.projector_weights if self.on_cuda else 0))


_BUFFER = re.compile(r"(?P<where>\w+):\s+(?P<dev>[\w.]+)\s+(?P<kind>model|KV|compute|output) buffer size\s*=\s*"
                     r"(?P<mib>[0-9.]+) MiB")
_CLIP_MODEL = re.compile(r"load_hparams: model size:\s*(?P<mib>[0-9.]+) MiB")


def parse_llama_server_memory(log: str) -> MeasuredMemory:
    sums = {"weights": 0.0, "repack": 0.0, "kv": 0.0, "compute": 0.0, "clip_compute": 0.0, "output": 0.0,
            "clip_model": 0.0}
    buffers: dict[str, float] = {}
    for line in log.splitlines():
        if m := _BUFFER.search(line):
            mib, kind, dev = float(m["mib"]), m["kind"], m["dev"]
            buffers[f"{m['where']}:{dev}:{kind}"] = buffers.get(f"{m['where']}:{dev}:{kind}", 0.0) + mib
            if kind == "model":
                sums["repack" if dev.endswith("REPACK") else "weights"] += mib
            elif kind == "KV":
                sums["kv"] += mib
            elif kind == "output":
                sums["output"] += mib
            elif m["where"] == "reserve_compute_meta":  # clip (the projector) reserves its graph here
                sums["clip_compute"] += mib
            else:
                sums["compute"] += mib
        elif m := _CLIP_MODEL.search(line):
            sums["clip_model"] += float(m["mib"])
            buffers["clip:model"] = float(m["mib"])
    if not sums["weights"]:
        raise SmolconvError("llama-server reported no model buffer sizes",
                            "this llama.cpp build logs differently; run it with -lv 4 and read the sizes by hand")

    def b(key: str) -> int:
        return int(round(sums[key] * MiB))

    return MeasuredMemory(weights=b("weights"), projector_weights=b("clip_model"), kv_cache=b("kv"),
                          compute=b("compute"), projector_compute=b("clip_compute"), output=b("output"),
                          repack=b("repack"), buffers=buffers)


def measure_llama_server(toolchain, variant: Variant, n_ctx: int, settings: PlanSettings,
                         n_gpu_layers: int | None = None, port: int = 0) -> MeasuredMemory:
    """Start llama-server on the variant's files, read the buffer sizes it reports, stop it."""
    from smolconv.runner import run_until

    if variant.text_path is None or variant.projector_path is None:
        raise SmolconvError("a variant estimated from config dimensions has no files to measure",
                            "build it first, then plan the build directory with --measure")
    args = [toolchain.tool("llama-server"), "-m", variant.text_path, "--mmproj", variant.projector_path,
            "-c", str(n_ctx), "-np", str(settings.n_parallel), "-ub", str(settings.n_ubatch),
            "-ctk", settings.kv_type, "-ctv", settings.kv_type, "--host", "127.0.0.1", "--port", str(port),
            "-lv", "4", "--no-webui"]
    if n_gpu_layers is not None:
        args += ["-ngl", str(n_gpu_layers)]
    if variant.adapter_path is not None:
        args += ["--lora", variant.adapter_path]
    result = run_until(args, ready=lambda line: "listening on" in line or "server is listening" in line,
                       what=f"measuring {variant.name} with llama-server", timeout=600,
                       fix="check that the GGUF files load with llama-server by hand")
    return parse_llama_server_memory(result.output)


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


def format_bytes(n: float) -> str:
    if abs(n) >= GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / MiB:.0f} MiB"
