"""The closed choices of smolconv's options, as Enums: Typer checks and lists them, stages compare with them.

A StrEnum member equals its string, so stage code and build.json keep the plain values ("f16", "merge", …).
"""

from __future__ import annotations

from enum import StrEnum


class Outtype(StrEnum):
    """The converter's output type for the unquantized GGUF."""

    F16 = "f16"
    BF16 = "bf16"
    F32 = "f32"
    Q8_0 = "q8_0"


class AdapterFormat(StrEnum):
    MERGE = "merge"  # merged into the weights in float32, then converted
    GGUF = "gguf"    # the base converted once, the adapter as a GGUF LoRA beside it


class Via(StrEnum):
    """How `package --create` reaches Ollama."""

    AUTO = "auto"  # the ollama CLI if on PATH, else the HTTP API
    CLI = "cli"
    API = "api"


class BackendKind(StrEnum):
    """What `ask`, `smoke` and the examples talk to: llama-server (on a build's files, or at --url), an Ollama model,
    or an ONNX or MLX export in process."""

    LLAMA_SERVER = "llama-server"
    OLLAMA = "ollama"
    ONNX = "onnx"
    MLX = "mlx"


class BuildBackend(StrEnum):
    """What `build` smokes: llama-server on the build's files, or the models `--create` made in Ollama."""

    LLAMA_SERVER = "llama-server"
    OLLAMA = "ollama"


class KvType(StrEnum):
    """The KV cache's element type (Ollama's OLLAMA_KV_CACHE_TYPE)."""

    F16 = "f16"
    Q8_0 = "q8_0"


class VerifyCheck(StrEnum):
    """A verify check that can fail to run (not the same as failing); `--allow-unchecked NAME` accepts that."""

    VISION = "vision"  # needs llama.cpp's MTMD_DEBUG_EMBEDDINGS hook to read the projector's output


class VerifyPart(StrEnum):
    """A check verify can be told to leave out (`--skip-check NAME`); F16 against transformers always runs."""

    VISION = "vision"  # the projector's output for one tile
    VIDEO = "video"    # a video prompt through the video projector
    KLD = "kld"        # each quantized variant's KL divergence from F16


class MlxBits(StrEnum):
    """How an MLX export stores the decoder's (and connector's) linear layers; the vision tower stays in --dtype."""

    FOUR = "4"
    EIGHT = "8"
    NONE = "none"
    # mlx-vlm's recipes after llama.cpp's Q4_K_M: 4-bit, with v_proj and down_proj of the first and last eighth
    # of the layers (and every third in between), the embeddings and the head at 6 or 8 bits.
    MIXED_4_6 = "mixed_4_6"
    MIXED_4_8 = "mixed_4_8"

    @property
    def quantized(self) -> bool:
        return self is not MlxBits.NONE

    @property
    def mixed(self) -> bool:
        return self.value.startswith("mixed_")


class MlxDtype(StrEnum):
    """The unquantized weights' type of an MLX export."""

    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"

    @property
    def mlx_name(self) -> str:
        """mlx-vlm's --dtype value."""
        return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[self.value]

    @property
    def safetensors_name(self) -> str:
        return {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}[self.value]


class ExpectKind(StrEnum):
    """How an eval case's `expect` judges an answer (smolconv.checks.cases); case-insensitive unless the case says."""

    CONTAINS = "contains"  # the answer holds this text
    REGEX = "regex"        # re.search finds this pattern in the answer
    EQUALS = "equals"      # the whole answer is this text (whitespace normalised, a final full stop ignored)
    ONE_OF = "one_of"      # the answer holds at least one of these texts


class OutputFormat(StrEnum):
    """What a `batch` recipe entry builds: a GGUF build (`build`), an ONNX export or an MLX export."""

    GGUF = "gguf"
    ONNX = "onnx"
    MLX = "mlx"


class BatchTarget(StrEnum):
    """Where `batch --on` runs the entries: here, one after another, or one Hugging Face Job each."""

    LOCAL = "local"
    HF_JOBS = "hf-jobs"


class JobFlavor(StrEnum):
    """The hardware of a Hugging Face Job (huggingface_hub's JobHardware, as of huggingface_hub 2.4; a test checks
    that each one is still there). A GPU flavor builds llama.cpp with CUDA for its card."""

    CPU_BASIC = "cpu-basic"
    CPU_UPGRADE = "cpu-upgrade"
    CPU_PERFORMANCE = "cpu-performance"
    CPU_XL = "cpu-xl"
    T4_SMALL = "t4-small"
    T4_MEDIUM = "t4-medium"
    L4X1 = "l4x1"
    L4X4 = "l4x4"
    L40SX1 = "l40sx1"
    L40SX4 = "l40sx4"
    L40SX8 = "l40sx8"
    A10G_SMALL = "a10g-small"
    A10G_LARGE = "a10g-large"
    A10G_LARGEX2 = "a10g-largex2"
    A10G_LARGEX4 = "a10g-largex4"
    A100_LARGE = "a100-large"
    A100X4 = "a100x4"
    A100X8 = "a100x8"
    H200 = "h200"
    H200X2 = "h200x2"
    H200X4 = "h200x4"
    H200X8 = "h200x8"
    RTX_PRO_6000 = "rtx-pro-6000"
    RTX_PRO_6000X2 = "rtx-pro-6000x2"
    RTX_PRO_6000X4 = "rtx-pro-6000x4"
    RTX_PRO_6000X8 = "rtx-pro-6000x8"

    @property
    def gpu(self) -> bool:
        return not self.value.startswith("cpu-")

    @property
    def cuda_arch(self) -> str | None:
        """The card's CUDA architecture, for `setup --cuda --cuda-arch` (None on a CPU flavor)."""
        if not self.gpu:
            return None
        arches = {"t4": "75", "a10g": "86", "a100": "80", "l4": "89", "l40s": "89", "h200": "90", "rtx-pro": "120"}
        family = next(f for f in sorted(arches, key=len, reverse=True) if self.value.startswith(f))
        return arches[family]
