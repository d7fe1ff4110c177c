"""Options that several commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smolconv.core.choices import AdapterFormat, KvType, Outtype, VerifyCheck, VerifyPart, Via
from smolconv.core.errors import SmolconvError
from smolconv.llamacpp.toolchain import find_toolchain as find
from smolconv.plan import PlanSettings, parse_size
from smolconv.plan.memory import DEFAULT_RESERVE, DEFAULT_VRAM, size_text
from smolconv.reference.gates import DEFAULT_MAX_KLD_BY_SIZE as _KLD
from smolconv.reference.gates import DEFAULT_MAX_VIDEO_NMSE, Gates

LlamaCppOption = Annotated[
    str | None,
    typer.Option("--llama-cpp", envvar="SMOLCONV_LLAMA_CPP", metavar="DIR",
                 help="Use your own llama.cpp checkout and build instead of the one `smolconv setup` builds."),
]
ModelArgument = Annotated[str, typer.Argument(help="Alias (256m, 500m, 2.2b), Hub id, or a local directory.")]
BuildDirArgument = Annotated[Path, typer.Argument(help="A build directory (it holds build.json and the GGUF files).")]
OutOption = Annotated[Path | None, typer.Option("--out", help="Output directory (default: out/<model name>).")]
ForceOption = Annotated[bool, typer.Option("--force", help="Redo steps and replace files that exist.")]
RevisionOption = Annotated[str | None, typer.Option("--revision", help="Branch, tag or commit to pin.")]
OfflineOption = Annotated[bool, typer.Option("--offline", help="Use the local Hub cache only.")]
OuttypeOption = Annotated[Outtype, typer.Option("--outtype", help="The unquantized GGUF's type.")]
TypesOption = Annotated[list[str] | None, typer.Option(
    "--type", "-t", help="Quantization type, repeatable (default: Q4_K_M, Q5_K_M, Q8_0); any llama-quantize type.")]
ImatrixOption = Annotated[Path | None, typer.Option("--imatrix", help="An importance matrix file to quantize with.")]
ImatrixTextOption = Annotated[Path | None, typer.Option(
    "--imatrix-text", help="A text file to compute an importance matrix from (llama-imatrix).")]
MmprojTypeOption = Annotated[str | None, typer.Option(
    "--mmproj-type", help="Also quantize the vision projector (e.g. Q8_0); the f16 projector stays the default.")]
ThreadsOption = Annotated[int | None, typer.Option("--threads", help="CPU threads for llama.cpp's tools.")]
DEFAULT_VRAM_TEXT = size_text(DEFAULT_VRAM)
DEFAULT_RESERVE_TEXT = size_text(DEFAULT_RESERVE)
ApiKeyFileOption = Annotated[Path | None, typer.Option(
    "--api-key-file", help="A file holding the llama-server API key on its first line (default: $SMOLCONV_API_KEY). "
    "Never the key itself on the command line.")]
WaitOption = Annotated[bool, typer.Option(
    "--wait", help="If another smolconv is writing the output folder, wait for it to finish (default: refuse).")]
VramOption = Annotated[str, typer.Option("--vram", help="The GPU's memory: 8GiB for an RTX 4070.")]
ReserveOption = Annotated[str, typer.Option("--reserve", help="VRAM left free for the desktop and other programs.")]
KvTypeOption = Annotated[KvType, typer.Option("--kv-type", help="KV cache type (OLLAMA_KV_CACHE_TYPE).")]
NumCtxOption = Annotated[int | None, typer.Option(
    "--num-ctx", help="Plan this context only, offloading layers if needed (default: the largest that fits).")]
MaxKldOption = Annotated[list[str] | None, typer.Option(
    "--max-kld", help="KLD gate TYPE=VALUE, repeatable. Defaults for real checkpoints, per size (a gate catches a "
    "broken quantization, it does not grade the quant type): "
    f"{'; '.join(size + ' ' + ' '.join(f'{n}={g}' for n, g in gates.items()) for size, gates in _KLD.items())}"
    "; a smolconv fixture is measured but not gated unless you give one.")]
AllowUncheckedOption = Annotated[list[VerifyCheck] | None, typer.Option(
    "--allow-unchecked", metavar="NAME", help="Let verify pass when this check cannot run (repeatable): vision "
    "(a llama.cpp without the MTMD_DEBUG_EMBEDDINGS hook); the report names it.")]
SkipCheckOption = Annotated[list[VerifyPart] | None, typer.Option(
    "--skip-check", metavar="NAME", help="Leave this verify check out (repeatable): vision, video or kld; the "
    "report says so. F16 against transformers always runs.")]
MinAccuracyOption = Annotated[float | None, typer.Option(
    "--min-accuracy", metavar="PERCENT", help="eval gate: every variant answers at least this share of the labelled "
    "cases right (0-100).")]
MaxDropOption = Annotated[float | None, typer.Option(
    "--max-drop", metavar="POINTS", help="eval gate: no variant's accuracy more than this many percentage points "
    "under the transformers reference's.")]
NameOption = Annotated[str | None, typer.Option(
    "--name", help="Ollama model name before ':' (default: from the checkpoint, e.g. smolvlm2).")]
PresetOption = Annotated[list[str] | None, typer.Option(
    "--preset", "-p", help="general, caption, ocr, vqa or all (repeatable; default: all).")]
CreateOption = Annotated[bool, typer.Option("--create", help="Also create the models in Ollama.")]
ViaOption = Annotated[Via, typer.Option(
    "--via", help="How --create reaches Ollama: auto (the ollama CLI if on PATH, else the HTTP API), cli or api.")]
AdapterOption = Annotated[str | None, typer.Option(
    "--adapter", help="A PEFT LoRA/DoRA adapter (directory or Hub id) to apply to the checkpoint.")]
AdapterRevisionOption = Annotated[str | None, typer.Option(
    "--adapter-revision", help="Branch, tag or commit of a Hub adapter to pin.")]
AdapterFormatOption = Annotated[AdapterFormat, typer.Option(
    "--adapter-format", help="merge: merge it in float32, then convert (any adapter); gguf: convert the base once "
    "and the adapter to a GGUF LoRA (text-only adapters).")]
MaxCtxOption = Annotated[int | None, typer.Option(
    "--max-ctx", help="Never plan a context above this (a smaller KV cache; a shorter smoke on a CPU).")]


def plan_settings(vram: str, reserve: str, overhead: str | None, kv_type: str, num_ctx: int | None,
                  max_ctx: int | None = None):

    return PlanSettings(vram=parse_size(vram), reserve=parse_size(reserve),
                        overhead=None if overhead is None else parse_size(overhead),
                        kv_type=str(kv_type).lower(), num_ctx=num_ctx, max_ctx=max_ctx)


def verify_gates(max_nmse: float, max_kld: list[str] | None, allow_unchecked: list[VerifyCheck] | None = None,
                 max_video_nmse: float | None = None):
    """verify's gates from --max-nmse, --max-video-nmse, the repeatable --max-kld TYPE=VALUE and --allow-unchecked
    NAME."""

    gates = {}
    for item in max_kld or ():
        name, _, value = item.partition("=")
        try:
            gates[name.strip().upper()] = float(value)
        except ValueError:
            raise SmolconvError(f"--max-kld {item!r} is not TYPE=NUMBER", "write e.g. --max-kld Q4_K_M=0.1") from None
    return Gates(max_nmse=max_nmse, max_vision_nmse=max_nmse, max_kld=gates,
                 max_video_nmse=DEFAULT_MAX_VIDEO_NMSE if max_video_nmse is None else max_video_nmse,
                 allow_unchecked=tuple(sorted({str(c) for c in allow_unchecked or ()})))


def find_toolchain(llama_cpp: str | None):
    return find(llama_cpp)
