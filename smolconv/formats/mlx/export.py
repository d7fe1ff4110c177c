"""`smolconv export-mlx`: a SmolVLM2 checkpoint → the MLX folder mlx-vlm loads, in mlx-community's layout.

    DIR/model.safetensors (+ model.safetensors.index.json; shards for a large model)
    DIR/config.json           (with `quantization` / `quantization_config` when quantized)
    DIR/tokenizer.json, tokenizer_config.json, processor_config.json, chat_template.jinja, ... (from the processor)
    DIR/README.md             (mlx-vlm's card)
    DIR/build.json, DIR/verify.json (smolconv's)

mlx-vlm's own converter (the pinned version) does the work, in a process of its own: it loads, casts and
quantizes the whole model in memory, and that memory goes back when it exits, before verify loads the reference;
its output goes through runner.run_tool's one-line errors and Ctrl-C handling. It reads a checkpoint with three
traps, which smolconv fixes in a staged copy (links to the user's files and a rewritten config; the user's files
are never edited):

1. A transformers-5 config keeps the RoPE base in text_config.rope_parameters; mlx-vlm reads only
   text_config.rope_theta and otherwise uses 1e6, which runs and answers wrongly. The copy's config has
   text_config.rope_theta.
2. Tied embeddings (no lm_head.weight in the checkpoint): mlx-vlm's SmolVLM always has its own lm_head and fails
   on the missing weight. The copy holds lm_head.weight, the embedding matrix, in a file of its own (the export
   then stores the head separately, and its config says the embeddings are not tied).
3. The default dtype comes from config `torch_dtype`, which transformers 5 no longer writes: --dtype is always
   passed.

What mlx-vlm's SmolVLM model cannot run (RoPE scaling, biases, other activations, a head size other than
hidden / heads) is refused in one line before it starts. The converter writes into a hidden staging folder in
DIR; the result is read back and checked (RoPE base, dtype, quantization, every part's weights, tokenizer,
processor, chat template) before its files are renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from smolconv.core.choices import AdapterFormat, MlxBits, MlxDtype
from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import ensure_writable_dir, remove_stale_partials
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.formats.mlx import MLX_VLM_VERSION, require_mlx
from smolconv.formats.mlx.staging import fixed_checkpoint
from smolconv.formats.mlx.verify import verify_mlx
from smolconv.process.runner import run_tool
from smolconv.record.lock import hold_folder
from smolconv.record.manifest import Manifest
from smolconv.record.views import Section
from smolconv.source.adapter import pull_model_and_adapter
from smolconv.source.checkpoint import CheckpointInfo, inspect_checkpoint, rope_theta, safetensors_header
from smolconv.source.merge import open_export
from smolconv.source.spec import SourceSpec

STEP = "mlx:convert"
# The names the converter writes whatever the checkpoint holds (checked against the user's files before it runs).
CONVERTER_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "README.md",
                   "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json",
                   "preprocessor_config.json", "special_tokens_map.json", "generation_config.json")
# What mlx-vlm's SmolVLM model computes: SwiGLU (silu) in the decoder, tanh-approximated GELU in the vision tower.
TEXT_ACTIVATIONS = ("silu",)
VISION_ACTIVATIONS = ("gelu_pytorch_tanh",)
# The vision configs mlx-vlm's Idefics3 vision model accepts.
VISION_MODEL_TYPES = ("siglip_vision_model", "idefics3", "idefics3_vision", "smolvlm_vision")
GROUP_SIZES = (32, 64, 128)
# Bumped when the staged copy's fixes change, so that exports made with the old ones are redone.
FIXES_REVISION = 1
# mlx-vlm's mixed recipes quantize in groups of 64 whatever --q-group-size says.
MIXED_GROUP_SIZE = 64


# The default --bits per decoder size (docs/mlx.md has the measurements): small decoders
# (SmolVLM2-256M's and -500M's, SmolLM2-135M/360M) lose answers at every 4-bit recipe; the 2.2B one gets 4 bits
# with its sensitive layers at 6.
SMALL_DECODER_PARAMETERS = 1_000_000_000
DEFAULT_BITS_SMALL = MlxBits.EIGHT
DEFAULT_BITS_LARGE = MlxBits.MIXED_4_6


@dataclass
class ExportMlxOptions:
    model: str                               # alias, Hub id or checkpoint directory
    out_dir: Path | None = None              # default out/<model name>-mlx[-<bits>]
    bits: MlxBits | None = None                 # None: the default for the model's size (default_bits)
    group_size: int = 64
    dtype: MlxDtype = MlxDtype.BF16
    force: bool = False
    revision: str | None = None
    local_files_only: bool = False
    # A PEFT adapter (directory or Hub id): merged into the checkpoint in float32 (DIR/merged/), then exported.
    adapter: str | None = None
    adapter_revision: str | None = None
    wait: bool = False                # another smolconv writing the folder: wait for it (else refuse)

    @property
    def source(self) -> SourceSpec:
        return SourceSpec(self.model, self.revision, self.adapter, self.adapter_revision, AdapterFormat.MERGE,
                          local_files_only=self.local_files_only)


@dataclass
class ExportMlxResult:
    out_dir: Path
    bits: MlxBits
    bits_reason: str                 # why these bits: asked for, or the default for this size and why
    dtype: MlxDtype
    group_size: int | None           # None when not quantized
    files: list[Path] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)  # what the staged copy changed for mlx-vlm
    quantized_layers: int = 0        # linear layers stored quantized
    float_layers: int = 0            # linear layers of the decoder and connector left in --dtype
    skipped: bool = False            # the folder was current: nothing ran
    seconds: float = 0.0

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files if p.exists())


def default_out_dir(name: str, bits: MlxBits) -> Path:
    """mlx-community's names: `<model>-mlx` unquantized, `<model>-mlx-4bit`, `<model>-mlx-mixed_4_6`."""
    suffix = "" if bits is MlxBits.NONE else f"-{bits.value}bit" if bits.value.isdigit() else f"-{bits.value}"
    return Path("out") / f"{name}-mlx{suffix}"


def decoder_parameters(info: CheckpointInfo) -> int:
    """How many parameters the language model has (embeddings included), from the safetensors headers."""
    return sum(math.prod(shape) for name, shape in info.tensor_shapes().items()
               if "text_model." in name or name.startswith("lm_head."))


def default_bits(info: CheckpointInfo) -> tuple[MlxBits, str]:
    """The --bits a checkpoint gets when none is asked for, and the reason, for the report."""
    n = decoder_parameters(info)
    if n < SMALL_DECODER_PARAMETERS:
        return DEFAULT_BITS_SMALL, (f"default for a {n / 1e6:.0f}M-parameter decoder: every 4-bit recipe loses "
                                    f"answers of a decoder this small, {DEFAULT_BITS_SMALL.value}-bit keeps them "
                                    "(KL divergence against the unquantized export in docs/mlx.md)")
    return DEFAULT_BITS_LARGE, (f"default for a {n / 1e9:.1f}B-parameter decoder: 4-bit with the sensitive layers "
                                "at 6 bits, llama.cpp's Q4_K_M recipe; not measured on a real 2.2B (docs/mlx.md)")


def check_request(options: ExportMlxOptions) -> None:
    """Refuse a combination before anything is downloaded or converted."""
    if options.group_size not in GROUP_SIZES:
        raise SmolconvError(f"--group-size {options.group_size} is not one MLX quantizes with",
                            f"use one of {', '.join(map(str, GROUP_SIZES))}")
    if options.bits is not None and options.bits.mixed and options.group_size != MIXED_GROUP_SIZE:
        raise SmolconvError(f"--bits {options.bits.value} quantizes in groups of {MIXED_GROUP_SIZE} (mlx-vlm's "
                            f"recipe), not {options.group_size}",
                            f"drop --group-size, or use --bits 4 or 8 with --group-size {options.group_size}")


def export_mlx(options: ExportMlxOptions, progress: ProgressFn = no_progress) -> ExportMlxResult:
    require_mlx()
    check_request(options)

    source, adapter = pull_model_and_adapter(options.source, force=options.force, progress=progress)
    info = inspect_checkpoint(source.path)
    check_convertible(info)
    bits, reason = (options.bits, "asked for") if options.bits is not None else default_bits(info)
    name = adapter.info.name if adapter else source.name
    out_dir = Path(options.out_dir or default_out_dir(name, bits))
    with hold_folder(out_dir, wait=options.wait, on_wait=lambda text: progress(text, None)):
        started = time.monotonic()

        ensure_writable_dir(out_dir)
        remove_stale_partials(out_dir)  # what a killed export was writing: this one writes it again
        info, manifest = open_export(info, source, adapter, out_dir, force=options.force, progress=progress)

        group_size = (MIXED_GROUP_SIZE if bits.mixed else options.group_size) if bits.quantized else None
        inputs = {p.name: manifest.sha256(p) for p in info.input_files()}
        params = convert_params(bits, group_size, options.dtype)
        key = manifest.step_key(inputs, params)
        result = ExportMlxResult(out_dir, bits, reason, options.dtype, group_size)
        if not options.force and manifest.is_current(STEP, key):
            recorded = manifest.step(STEP)
            result.files = [out_dir / n for n in recorded.outputs]
            result.fixes = list(recorded.extra.get("fixes", []))
            result.quantized_layers, result.float_layers = _layer_counts(result.files)
            result.skipped = True
            manifest.save()
            return result
        # The names the converter will write: refuse a file of the user's there before spending the time.
        manifest.refuse_foreign([out_dir / n for n in {*CONVERTER_FILES, *(p.name for p in info.path.glob("*.json"))}],
                                force=options.force)

        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".mlx-convert.", suffix=".partial", dir=out_dir) as scratch:
            scratch = Path(scratch)
            with fixed_checkpoint(info, scratch / "checkpoint") as (checkpoint, fixes):
                staged = scratch / "export"
                run_converter(checkpoint, staged, bits, group_size, options.dtype, progress)
            check_export(staged, info, bits, group_size, options.dtype)
            produced = sorted(p for p in staged.iterdir() if p.is_file())
            targets = [out_dir / p.name for p in produced]
            manifest.refuse_foreign(targets, force=options.force)
            for target in targets:
                manifest.claim(target)  # before the rename: a kill right after leaves files the next run may replace
            _remove_stale_outputs(manifest, out_dir, {t.name for t in targets})
            for path, target in zip(produced, targets, strict=True):
                os.replace(path, target)
        result.files, result.fixes = targets, fixes
        result.quantized_layers, result.float_layers = _layer_counts(targets)
        record = {"fixes": fixes, "bits_reason": reason, "quantized_layers": result.quantized_layers,
                  "float_layers": result.float_layers}
        manifest.record_step(STEP, key, params, inputs, targets, time.monotonic() - t0, record)
        manifest.set_section(Section.MLX, {"bits": bits.value, "bits_reason": reason, "dtype": options.dtype.value,
                                           "group_size": group_size, "checkpoint": str(info.path.resolve())})
        manifest.save()
        result.seconds = time.monotonic() - started
        return result


def convert_params(bits: MlxBits, group_size: int | None, dtype: MlxDtype) -> dict:
    """The step's parameters: what was asked for, and the versions that decide what the converter writes."""
    from importlib.metadata import version

    return {"bits": bits.value, "group_size": group_size, "dtype": dtype.mlx_name, "q_mode": "affine",
            "mlx_vlm": version("mlx-vlm"), "mlx": version("mlx"), "fixes": FIXES_REVISION}


def _remove_stale_outputs(manifest: Manifest, out_dir: Path, keep: set[str]) -> None:
    """Files the previous export wrote that this one does not (a sharded model exported again unsharded)."""
    previous = manifest.step(STEP)
    stale = [name for name in (previous.outputs or []) if name not in keep] if previous else []
    for name in stale:
        (out_dir / name).unlink(missing_ok=True)
    manifest.forget_outputs(stale)


# --------------------------------------------------------------------------------------------------
# What mlx-vlm cannot run, and the staged copy that fixes what it reads wrongly


def check_convertible(info: CheckpointInfo) -> None:
    """Refuse, in one line, a checkpoint whose config mlx-vlm's SmolVLM model would run wrongly and smolconv
    cannot fix by rewriting the config."""
    text, vision = info.text_config, info.vision_config
    where = info.path / "config.json"
    fix = "export it to GGUF (smolconv convert) or ONNX (smolconv export-onnx) instead"
    scaling = text.get("rope_scaling") or {}
    parameters = text.get("rope_parameters") or {}
    rope_type = (parameters.get("rope_type") if isinstance(parameters, dict) else None) or \
        (scaling.get("rope_type") or scaling.get("type") if isinstance(scaling, dict) else None) or "default"
    if rope_type != "default":
        raise SmolconvError(f"{where} scales RoPE ({rope_type!r}), which mlx-vlm's SmolVLM model does not", fix)
    for key in ("attention_bias", "mlp_bias"):
        if text.get(key):
            raise SmolconvError(f"{where} has text_config.{key}, which mlx-vlm's SmolVLM model does not", fix)
    if text.get("hidden_act", "silu") not in TEXT_ACTIVATIONS:
        raise SmolconvError(f"{where} has text_config.hidden_act {text['hidden_act']!r}; mlx-vlm's SmolVLM model "
                            "runs silu", fix)
    if vision.get("hidden_act", "gelu_pytorch_tanh") not in VISION_ACTIVATIONS:
        raise SmolconvError(f"{where} has vision_config.hidden_act {vision['hidden_act']!r}; mlx-vlm's SmolVLM "
                            "model runs gelu_pytorch_tanh", fix)
    if vision.get("model_type", "smolvlm_vision") not in VISION_MODEL_TYPES:
        raise SmolconvError(f"{where} has vision_config.model_type {vision['model_type']!r}, which mlx-vlm does "
                            "not load", fix)
    hidden, heads = int(text["hidden_size"]), int(text.get("num_attention_heads") or 32)
    head_dim = text.get("head_dim")
    if head_dim and int(head_dim) * heads != hidden:
        raise SmolconvError(f"{where} has text_config.head_dim {head_dim} with {heads} heads of a {hidden}-wide "
                            "model; mlx-vlm's SmolVLM model takes hidden_size / heads", fix)










# --------------------------------------------------------------------------------------------------
# mlx-vlm's converter, and what it wrote


def converter_args(checkpoint: Path, out: Path, bits: MlxBits, group_size: int | None, dtype: MlxDtype) -> list[str]:
    args = [sys.executable, "-m", "mlx_vlm", "convert", "--hf-path", str(checkpoint), "--mlx-path", str(out),
            "--dtype", dtype.mlx_name]
    if bits.mixed:
        args += ["-q", "--quant-predicate", bits.value]
    elif bits.quantized:
        args += ["-q", "--q-bits", bits.value, "--q-group-size", str(group_size), "--q-mode", "affine"]
    return args


def run_converter(checkpoint: Path, out: Path, bits: MlxBits, group_size: int | None, dtype: MlxDtype,
                  progress: ProgressFn) -> None:

    progress(f"converting with mlx-vlm ({dtype.value}, {'not quantized' if not bits.quantized else bits.value})",
             None)

    def on_line(line: str) -> None:
        if line.startswith("[INFO]"):
            progress(f"mlx-vlm: {line[6:].strip()}", None)

    # Offline: the checkpoint is local, and mlx-vlm's card writer must not look for it on the Hub.
    run_tool(converter_args(checkpoint, out, bits, group_size, dtype), what="converting with mlx-vlm",
             fix="check the checkpoint with `smolconv convert`; if it converts there, report the mlx-vlm error",
             env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
             on_line=on_line, writes_to=Path(out).parent)


def weight_names(folder: Path) -> dict[str, dict]:
    """Every tensor of the export's safetensors files: name → its header entry (dtype, shape)."""
    names = {}
    for path in sorted(folder.glob("*.safetensors")):
        names.update({k: v for k, v in safetensors_header(path).items() if k != "__metadata__"})
    return names


def _layer_counts(files: list[Path]) -> tuple[int, int]:
    """(quantized, float) linear layers of the decoder and connector in the export."""
    folders = {p.parent for p in files if p.suffix == ".safetensors"}
    tensors = {}
    for folder in folders:
        tensors.update(weight_names(folder))
    return _count_layers(tensors)


def _count_layers(tensors: dict[str, dict]) -> tuple[int, int]:
    quantized = sum(1 for n in tensors if n.endswith(".scales") and not n.startswith("vision_model."))
    linear = [n for n, entry in tensors.items() if n.endswith(".weight") and len(entry["shape"]) == 2
              and n.startswith(("language_model.", "connector.")) and "embed_tokens" not in n]
    unquantized = sum(1 for n in linear if n[: -len("weight")] + "scales" not in tensors)
    return quantized, unquantized


def check_export(folder: Path, info: CheckpointInfo, bits: MlxBits, group_size: int | None, dtype: MlxDtype) -> None:
    """Read back what the converter wrote: the traps fixed, the dtype and quantization asked for, every part."""
    fix = f"report it: smolconv's fixes are for mlx-vlm {_mlx_vlm_version()}"
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise SmolconvError("mlx-vlm wrote no config.json", fix)
    config = json.loads(config_path.read_text())
    expected = rope_theta(info.text_config, info.path / "config.json")
    written = config.get("text_config", {}).get("rope_theta")
    if written is None or not math.isclose(float(written), expected):
        raise SmolconvError(f"mlx-vlm wrote text_config.rope_theta {written}, not the checkpoint's {expected:g}", fix)
    tensors = weight_names(folder)
    for name in ("language_model.embed_tokens.weight", "language_model.lm_head.weight",
                 "vision_model.embeddings.patch_embedding.weight", "connector.modality_projection.proj.weight"):
        if name not in tensors:
            raise SmolconvError(f"mlx-vlm's export has no {name}", fix)
    norm = tensors.get("language_model.norm.weight", {}).get("dtype")
    if norm != dtype.safetensors_name:
        raise SmolconvError(f"mlx-vlm stored the weights as {norm}, not {dtype.safetensors_name}", fix)
    quantization = config.get("quantization")
    quantized, _ = _count_layers(tensors)
    if not bits.quantized and (quantization or quantized):
        raise SmolconvError("mlx-vlm quantized an export asked for unquantized", fix)
    if bits.quantized:
        if not isinstance(quantization, dict) or quantization.get("group_size") != group_size or not quantized:
            raise SmolconvError(f"mlx-vlm's config.json says quantization {quantization}, not {bits.value}-bit in "
                                f"groups of {group_size}", fix)
        if not bits.mixed and quantization.get("bits") != int(bits.value):
            raise SmolconvError(f"mlx-vlm quantized to {quantization.get('bits')} bits, not {bits.value}", fix)
    if any(n.startswith("vision_model.") and n.endswith(".scales") for n in tensors):
        raise SmolconvError("mlx-vlm quantized the vision tower", fix)
    for names, what in ((("tokenizer.json",), "tokenizer.json"),
                        (("processor_config.json", "preprocessor_config.json"), "the image processor's config"),
                        (("chat_template.jinja", "chat_template.json"), "the chat template")):
        if not any((folder / n).is_file() for n in names):
            raise SmolconvError(f"mlx-vlm's export has no {what}", fix)


def _mlx_vlm_version() -> str:
    return MLX_VLM_VERSION


def export_and_verify(options: ExportMlxOptions, *, verify: bool = True, progress: ProgressFn = no_progress):
    """`smolconv export-mlx`: the export, then (unless told not to) its check against transformers."""
    result = export_mlx(options, progress)
    report = None
    if verify:
        report = verify_mlx(result.out_dir, force=options.force, progress=progress)
    return result, report
