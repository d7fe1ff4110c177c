"""`--adapter-format merge`: a PEFT adapter merged into its checkpoint, written as a Hub-complete checkpoint.

peft merges in float32 and the result is saved in float32, so the converter reads the merged weights without
a bfloat16 round trip (which moves log-probabilities further than the GGUF conversion itself; docs/fine-tune.md
has the figures). The directory (`merged/` in the build directory) is a complete checkpoint: configs,
tokenizer, processor files and chat template from the base, and the merged safetensors. It is also what
transformers, MLX and candle users load.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import recover_replaced, staged_dir
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.record.builddir import BuildDir
from smolconv.record.manifest import Manifest
from smolconv.source.adapter import AdapterInfo
from smolconv.source.checkpoint import CheckpointInfo, inspect_checkpoint

MERGED_DIR = "merged"
MERGE_DTYPE = "float32"
# Files the merged checkpoint takes from the base as they are: everything but the weights and the card.
_NOT_COPIED = ("README.md", "model.safetensors.index.json")


@dataclass
class MergeOptions:
    base: CheckpointInfo
    adapter: AdapterInfo
    out_dir: Path
    force: bool = False


@dataclass
class MergeResult:
    path: Path          # the merged checkpoint directory
    skipped: bool
    seconds: float


def merge_inputs(manifest: Manifest, base: CheckpointInfo, adapter: AdapterInfo) -> dict[str, str]:
    """What the merge depends on, by sha256: the base's files and the adapter's."""
    inputs = {f"base/{p.name}": manifest.sha256(p) for p in base.input_files()}
    inputs |= {f"adapter/{p.name}": manifest.sha256(p) for p in adapter.files()}
    return inputs


def merge(options: MergeOptions, progress: ProgressFn = no_progress, build: BuildDir | None = None) -> MergeResult:
    import peft
    import transformers

    out_dir = Path(options.out_dir)
    target = out_dir / MERGED_DIR
    recover_replaced(target)  # a merge killed mid-replace: before asking whether the merged folder is current
    manifest = (build or BuildDir.open(out_dir)).manifest
    inputs = merge_inputs(manifest, options.base, options.adapter)
    params = {"dtype": MERGE_DTYPE, "peft": peft.__version__, "transformers": transformers.__version__}
    key = manifest.step_key(inputs, params)
    if not options.force and manifest.is_current("merge", key):
        manifest.save()
        return MergeResult(target, skipped=True, seconds=0.0)
    if target.exists() and manifest.step("merge") is None and not options.force:
        raise SmolconvError(f"{target} already exists and was not written by this build",
                            "pass --force to replace it, or choose another --out")

    started = time.monotonic()
    progress("merging the adapter into the checkpoint (float32)", None)
    with staged_dir(target, force=True) as staging:
        _merge_into(options.base, options.adapter, staging)
    outputs = sorted(p for p in target.iterdir() if p.is_file())
    seconds = time.monotonic() - started
    manifest.record_step("merge", key, params, inputs, outputs, seconds)
    manifest.save()
    return MergeResult(target, skipped=False, seconds=seconds)


def _merge_into(base: CheckpointInfo, adapter: AdapterInfo, staging: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = AutoModelForImageTextToText.from_pretrained(base.path, dtype=torch.float32)
    try:
        merged = PeftModel.from_pretrained(model, adapter.path).merge_and_unload()
    except (ValueError, RuntimeError, KeyError) as exc:
        raise SmolconvError(f"peft could not apply the adapter to {base.path} ({str(exc).splitlines()[0][:200]})",
                            "check that the adapter was trained on this checkpoint") from None
    merged.save_pretrained(staging, safe_serialization=True)
    for path in base.path.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name not in _NOT_COPIED:
            shutil.copy2(path, staging / path.name)
    # The base's config exactly (the converter routes by text_config.architectures), with the dtype written.
    (staging / "config.json").write_text(json.dumps(_with_dtype(base.config, MERGE_DTYPE), indent=2) + "\n")
    (staging / "README.md").write_text(_card(base, adapter))


def open_export(info: CheckpointInfo, source, adapter, out_dir: Path, *, force: bool = False,
                progress: ProgressFn = no_progress) -> tuple[CheckpointInfo, Manifest]:
    """What an export (ONNX, MLX) reads and records: the checkpoint `info` (of `source`), merged with its adapter
    when one is given, and the export folder's manifest with the source and the adapter written in (saved by the
    export when it ends)."""

    if adapter is not None:
        merged = merge(MergeOptions(info, adapter.info, out_dir, force=force), progress)
        adapter.merged, adapter.skipped, adapter.seconds = merged.path, merged.skipped, merged.seconds
        info = inspect_checkpoint(merged.path)  # the export is the fine-tune's
    manifest = Manifest.load(out_dir)
    manifest.set_source(source.to_record())
    manifest.set_adapter(adapter.to_record(manifest) if adapter is not None else None)
    return info, manifest


def _with_dtype(config: dict, dtype: str) -> dict:
    """`config` with every dtype entry set to `dtype`, under the key its layout uses (`dtype` in transformers 5,
    `torch_dtype` in 4.x; 5 also writes one into text_config and vision_config)."""
    config = json.loads(json.dumps(config))
    config["dtype" if "dtype" in config or "torch_dtype" not in config else "torch_dtype"] = dtype
    for section in (config.get("text_config"), config.get("vision_config")):
        for key in ("dtype", "torch_dtype"):
            if isinstance(section, dict) and key in section:
                section[key] = dtype
    return config


def _card(base: CheckpointInfo, adapter: AdapterInfo) -> str:
    source = adapter.base_model or str(base.path)
    return (f"---\nbase_model: {source}\nbase_model_relation: merge\nlibrary_name: transformers\n"
            f"pipeline_tag: image-text-to-text\ntags:\n- smolvlm2\n- smolconv\n---\n\n"
            f"# {adapter.name} (merged)\n\n"
            f"The LoRA adapter `{adapter.name}` (r {adapter.r}, alpha {adapter.alpha:g}"
            f"{', DoRA' if adapter.use_dora else ''}) merged into `{source}` by smolconv with peft in float32, "
            "saved in float32.\n")
