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


class SmokeBackend(StrEnum):
    LLAMA_SERVER = "llama-server"
    OLLAMA = "ollama"
    ONNX = "onnx"
    MLX = "mlx"


class AskBackend(StrEnum):
    """What `ask` talks to: llama-server on a build's files, an Ollama model, or an ONNX or MLX export in process."""

    SERVER = "server"
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
