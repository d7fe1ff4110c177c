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
