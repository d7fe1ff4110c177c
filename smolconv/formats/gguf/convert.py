"""`smolconv convert`: a SmolVLM2 checkpoint → text GGUF + vision projector (mmproj) GGUF.

Both halves come from llama.cpp's own convert_hf_to_gguf.py (the second run with `--mmproj`). Each is
written under a hidden temporary name, read back with `gguf` and checked against the checkpoint's config,
and only then renamed to the name ggml-org uses for its published files.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from smolconv.core.choices import Outtype
from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import ensure_writable_dir
from smolconv.core.names import output_names
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.llamacpp.gguf_header import read_gguf_header
from smolconv.llamacpp.toolchain import Toolchain
from smolconv.process.runner import Beside
from smolconv.record.builddir import BuildDir
from smolconv.record.lock import hold_folder
from smolconv.source.adapter import AdapterInfo
from smolconv.source.checkpoint import CheckpointInfo, checkpoint_files, inspect_checkpoint
from smolconv.source.pull import Source

OUTTYPES = tuple(Outtype)


@dataclass
class ConvertOptions:
    checkpoint: Path
    out_dir: Path
    outtype: str = "f16"
    name: str | None = None  # output file stem; default: the checkpoint directory's name
    force: bool = False
    wait: bool = False                # another smolconv writing the folder: wait for it (else refuse)


@dataclass
class ConvertResult:
    model: Path
    mmproj: Path
    skipped: bool
    seconds: float
    notices: list[str] = field(default_factory=list)  # what the user should know about the checkpoint




def convert(options: ConvertOptions, toolchain: Toolchain, progress: ProgressFn = no_progress,
            source: Source | None = None, build: BuildDir | None = None) -> ConvertResult:
    outtype = options.outtype.lower()
    if outtype not in OUTTYPES:
        raise SmolconvError(f"unknown --outtype {options.outtype}", f"choose one of {', '.join(OUTTYPES)}")
    info = inspect_checkpoint(options.checkpoint)
    out_dir = Path(options.out_dir)
    with hold_folder(out_dir, wait=options.wait, on_wait=lambda text: progress(text, None)):
        ensure_writable_dir(out_dir)
        name = options.name or Path(options.checkpoint).resolve().name
        text_name, mmproj_name = output_names(name, outtype)
        text_path, mmproj_path = out_dir / text_name, out_dir / mmproj_name

        manifest = (build or BuildDir.open(out_dir)).manifest
        params = {"outtype": outtype, "name": name, "llama_cpp": toolchain.identity()}
        targets = [text_path, mmproj_path]
        input_files = info.input_files()
        if not options.force and manifest.step("convert") is not None:
            # A conversion is on record: the inputs' hashes (cached against size and mtime) say if it still holds.
            inputs = {p.name: manifest.sha256(p) for p in input_files}
            if manifest.up_to_date("convert", manifest.step_key(inputs, params), targets, force=False):
                manifest.save()  # keeps the refreshed hash cache
                return ConvertResult(text_path, mmproj_path, skipped=True, seconds=0.0, notices=info.notices)
        else:
            manifest.refuse_foreign(targets, force=options.force)

        started = time.monotonic()
        # The converter reads the checkpoint anyway: its files are hashed beside it, and the GGUFs beside each other
        # (seconds per GB on 2 cores).
        manifest.sha256_soon(input_files)

        def convert_part(tmp: Path, mmproj: bool, on_line=None, on_start=None) -> None:
            toolchain.run_converter(info.path, tmp, outtype=outtype, mmproj=mmproj, on_line=on_line, on_start=on_start)
            (verify_mmproj if mmproj else verify_text_model)(tmp, info)

        # The projector's converter runs beside the text model's: each spends much of its time on one core (Python's
        # imports, reading and writing), so together they take about as long as the text model alone. Both files
        # take their names only once both are written and read back: a failed conversion leaves neither.
        label = "converting the text model and the vision projector"
        with (manifest.staged_output(text_path) as text_tmp, manifest.staged_output(mmproj_path) as mmproj_tmp,
              Beside(lambda on_start: convert_part(mmproj_tmp, True, on_start=on_start))):
            convert_part(text_tmp, False, _converter_progress(label, progress))
        manifest.sha256_soon([text_path, mmproj_path])
        inputs = {p.name: manifest.sha256(p) for p in input_files}
        key = manifest.step_key(inputs, params)
        seconds = time.monotonic() - started
        source = source or Source(path=Path(options.checkpoint), repo_id=None, revision=None,
                                  model=str(options.checkpoint))
        # A merged checkpoint is converted for a source that is the base: its record keeps the base's files.
        converted_source = source.path.resolve() == info.path.resolve()
        files = inputs if converted_source else {p.name: manifest.sha256(p) for p in checkpoint_files(source.path)}
        # Where the chat template came from (None: the checkpoint has none, and the models get SmolVLM2's).
        template = info.chat_template.file if info.chat_template else None
        manifest.set_source(replace(source.to_record(), files=files, chat_template=template))
        manifest.set_llama_cpp(toolchain.describe())
        manifest.record_step("convert", key, params, inputs, targets, seconds)
        manifest.save()
        return ConvertResult(text_path, mmproj_path, skipped=False, seconds=seconds, notices=info.notices)


ADAPTER_STEP = "convert-adapter"
ADAPTER_OUTTYPE = "f32"  # the converter's default: LoRA tensors are small, and llama.cpp applies them in f32


def adapter_output_name(adapter_name: str, outtype: str = ADAPTER_OUTTYPE) -> str:
    """`my-finetune-LoRA-F32.gguf`: one file that every quantized variant of the base loads beside it."""
    return f"{adapter_name}-LoRA-{outtype.upper()}.gguf"


def convert_adapter(adapter: AdapterInfo, base: CheckpointInfo, out_dir: Path, toolchain: Toolchain,
                    progress: ProgressFn = no_progress, *, force: bool = False,
                    build: BuildDir | None = None) -> ConvertResult:
    """`--adapter-format gguf`: the adapter alone, with llama.cpp's convert_lora_to_gguf.py.

    The key holds the adapter's files and the base's config only, so a new adapter on an unchanged base
    converts nothing but the adapter, and the base's conversion and quantizations are kept.
    """
    out_dir = Path(out_dir)
    ensure_writable_dir(out_dir)
    target = out_dir / adapter_output_name(adapter.name)
    manifest = (build or BuildDir.open(out_dir)).manifest
    inputs = {f"adapter/{p.name}": manifest.sha256(p) for p in adapter.files()}
    inputs["base/config.json"] = manifest.sha256(base.path / "config.json")
    params = {"outtype": ADAPTER_OUTTYPE, "name": adapter.name, "llama_cpp": toolchain.identity()}
    key = manifest.step_key(inputs, params)
    if manifest.up_to_date(ADAPTER_STEP, key, [target], force=force):
        manifest.save()
        return ConvertResult(target, target, skipped=True, seconds=0.0)
    started = time.monotonic()
    with manifest.staged_output(target) as tmp:
        toolchain.run_lora_converter(adapter.path, base.path, tmp, outtype=ADAPTER_OUTTYPE,
                                     on_line=_converter_progress("converting the adapter", progress))
        verify_adapter(tmp, adapter)
    # An adapter this build converted before, under another name, is replaced, not left beside the new one.
    previous = manifest.step(ADAPTER_STEP)
    stale = [name for name in (previous.outputs or []) if name != target.name] if previous else []
    for name in stale:
        (out_dir / name).unlink(missing_ok=True)
    manifest.forget_outputs(stale)
    seconds = time.monotonic() - started
    manifest.record_step(ADAPTER_STEP, key, params, inputs, [target], seconds)
    manifest.save()
    return ConvertResult(target, target, skipped=False, seconds=seconds)


_WRITING = re.compile(r"Writing:\s+(\d+)%")


def _converter_progress(stage: str, progress: ProgressFn) -> Callable[[str], None]:
    progress(stage, None)

    def on_line(line: str) -> None:
        match = _WRITING.search(line)
        if match:
            progress(stage, int(match.group(1)) / 100)

    return on_line


# --------------------------------------------------------------------------------------------------
# Reading the results back


def _expect(path: Path, what: str, found, expected) -> None:
    if found != expected:
        raise SmolconvError(
            f"{path.name}: {what} is {found!r}, the checkpoint says {expected!r}",
            "the converter produced a GGUF that does not match the checkpoint; check the llama.cpp version",
        )


def verify_text_model(path: Path, info: CheckpointInfo) -> None:
    header = read_gguf_header(path)
    _expect(path, "general.architecture", header.get("general.architecture"), "llama")
    _expect(path, "llama.block_count", header.get("llama.block_count"), info.num_hidden_layers)
    _expect(path, "the vocabulary size", header.array_length("tokenizer.ggml.tokens"), info.vocab_size)
    freq_base = header.get("llama.rope.freq_base")
    # GGUF keeps it as float32: compare with the checkpoint's value rounded the same way.
    _expect(path, "llama.rope.freq_base", None if freq_base is None else float(freq_base),
            float(np.float32(info.rope_theta)))


def verify_mmproj(path: Path, info: CheckpointInfo) -> None:
    header = read_gguf_header(path)
    _expect(path, "general.type", header.get("general.type"), "mmproj")
    _expect(path, "clip.projector_type", header.get("clip.projector_type"), "idefics3")
    _expect(path, "clip.vision.projector.scale_factor",
            header.get("clip.vision.projector.scale_factor"), info.scale_factor)
    _expect(path, "clip.vision.image_size", header.get("clip.vision.image_size"), info.image_size)


def verify_adapter(path: Path, adapter: AdapterInfo) -> None:
    header = read_gguf_header(path)
    _expect(path, "general.type", header.get("general.type"), "adapter")
    _expect(path, "adapter.type", header.get("adapter.type"), "lora")
    alpha = header.get("adapter.lora.alpha")
    _expect(path, "adapter.lora.alpha", None if alpha is None else float(alpha), adapter.alpha)
    # Two GGUF tensors (lora_a, lora_b) for each adapted module.
    modules = {t.module for t in adapter.tensors if t.kind in ("lora_A", "embedding_A")}
    _expect(path, "the number of LoRA tensors", len(header.tensors), 2 * len(modules))
