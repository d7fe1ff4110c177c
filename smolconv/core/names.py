"""Naming rules in one place: ggml-org's GGUF file names, Ollama model tags, Hub repo and file names."""

from __future__ import annotations

import re

from smolconv.core.errors import SmolconvError

_QUANT_TAG = {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}


_TAG_OK = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?:[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def quant_tag(qtype: str) -> str:
    """Ollama's spelling: q4_K_M, q8_0, fp16."""
    qtype = qtype.upper()
    return _QUANT_TAG.get(qtype, qtype[0].lower() + qtype[1:])


def model_tag(model_name: str, qtype: str, preset: str = "general", name: str | None = None) -> str:
    """smolvlm2:2.2b-instruct-q4_K_M (general) or smolvlm2:2.2b-instruct-q4_K_M-ocr.

    `model_name` is the checkpoint's name (SmolVLM2-2.2B-Instruct); `name` overrides the part before ':'.
    """
    family, _, rest = model_name.lower().partition("-")
    # A name the user gave is checked as given; one derived from the checkpoint is made valid.
    family = name if name else re.sub(r"[^a-z0-9._-]+", "-", family).strip("-") or "smolvlm2"
    parts = [re.sub(r"[^a-z0-9._]+", "-", rest).strip("-"), quant_tag(qtype)]
    if preset != "general":
        parts.append(preset)
    tag = f"{family}:{'-'.join(p for p in parts if p)}"
    if not _TAG_OK.match(tag):
        raise SmolconvError(f"{tag!r} is not a valid Ollama model name", "pass --name with letters, digits, - or _")
    return tag


def output_names(name: str, outtype: str) -> tuple[str, str]:
    """ggml-org's names: `SmolVLM2-2.2B-Instruct-F16.gguf`, `mmproj-SmolVLM2-2.2B-Instruct-f16.gguf`."""
    projector_suffix = outtype if outtype in ("f16", "bf16", "f32") else outtype.upper()
    return f"{name}-{outtype.upper()}.gguf", f"mmproj-{name}-{projector_suffix}.gguf"


def gguf_name(name: str, qtype: str) -> str:
    """ggml-org's name for a variant: SmolVLM2-2.2B-Instruct-Q4_K_M.gguf."""
    return f"{name}-{qtype}.gguf"


def mlx_repo_name(name: str, bits: str) -> str:
    """mlx-community's repo name: `<model>-mlx` unquantized, `<model>-4bit`, `<model>-8bit`, `<model>-mixed_4_6`."""
    return f"{name}-mlx" if bits == "none" else f"{name}-{bits}bit" if bits.isdigit() else f"{name}-{bits}"
