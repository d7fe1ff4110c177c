"""`smolconv export-onnx`: a SmolVLM2 checkpoint → the ONNX folder onnxruntime and transformers.js load.

    DIR/onnx/vision_encoder{,_fp16,_quantized,_q4,_q4f16}.onnx
    DIR/onnx/embed_tokens{...}.onnx
    DIR/onnx/decoder_model_merged{...}.onnx   (+ .onnx_data beside a graph over 2 GB)
    DIR/config.json, tokenizer and processor files (copied from the checkpoint), DIR/build.json

Two side files get a field transformers.js needs where the checkpoint lacks it (a checkpoint saved by transformers
5 has neither): `processor_class` in preprocessor_config.json and `chat_template` in tokenizer_config.json (see
completed_side_files).

Exporter: torch.onnx's TorchScript exporter (`dynamo=False`), opset 17. torch 2.13 also has the
torch.export-based exporter (onnxscript); on these graphs it gives the same outputs (checked on the tiny
shape, NMSE 5e-13 both) but takes about 7x longer and specialises the batch axis to the example's size,
while the TorchScript exporter keeps every named axis dynamic, including an empty past. Both are recorded
in build.json so that a change shows as a new step key.

Each graph is written into a hidden staging directory beside its final place and renamed when complete;
build.json records inputs, parameters and sha256 of every output, and a rerun skips what is current.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from smolconv.core.choices import AdapterFormat
from smolconv.core.fsutil import ensure_writable_dir, staged_file
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.formats.onnx import require_onnx
from smolconv.formats.onnx.quantize import DEFAULT_VARIANTS, check_variants, make_variant, suffix, variant_params
from smolconv.formats.onnx.verify import verify_onnx
from smolconv.record.lock import hold_folder
from smolconv.record.views import Section
from smolconv.source.adapter import pull_model_and_adapter
from smolconv.source.checkpoint import find_chat_template, inspect_checkpoint, read_json_object
from smolconv.source.merge import open_export
from smolconv.source.spec import SourceSpec

GRAPHS = ("vision_encoder", "embed_tokens", "decoder_model_merged")
OPSET = 17
EXPORTER = "torch.onnx TorchScript exporter (dynamo=False)"
# What transformers.js and AutoProcessor read beside the graphs.
SIDE_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
              "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
              "vocab.json", "merges.txt", "chat_template.json", "chat_template.jinja")
# transformers.js's AutoProcessor picks the processor by preprocessor_config.json's `processor_class` (without it:
# a bare Processor with no tokenizer), and its tokenizer reads the chat template from tokenizer_config.json only.
DEFAULT_PROCESSOR_CLASS = "SmolVLMProcessor"


@dataclass
class ExportOptions:
    model: str                               # alias, Hub id or checkpoint directory
    out_dir: Path | None = None              # default out/<model name>-onnx
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    force: bool = False
    revision: str | None = None
    local_files_only: bool = False
    # A PEFT adapter (directory or Hub id): merged into the checkpoint in float32 (BUILD/merged/), which is
    # then exported. ONNX graphs have no run-time LoRA, so merging is the one way in.
    adapter: str | None = None
    adapter_revision: str | None = None
    wait: bool = False                # another smolconv writing the folder: wait for it (else refuse)

    @property
    def source(self) -> SourceSpec:
        return SourceSpec(self.model, self.revision, self.adapter, self.adapter_revision, AdapterFormat.MERGE,
                          local_files_only=self.local_files_only)


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)  # "graph" or "graph_variant" → path
    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    seconds: float = 0.0


def graph_file(out_dir: Path, graph: str, variant: str = "fp32") -> Path:
    return Path(out_dir) / "onnx" / f"{graph}{suffix(variant)}.onnx"


def export_onnx(options: ExportOptions, progress: ProgressFn = no_progress) -> ExportResult:
    require_onnx()
    variants = check_variants(tuple(options.variants) or DEFAULT_VARIANTS)

    source, adapter = pull_model_and_adapter(options.source, force=options.force, progress=progress)
    info = inspect_checkpoint(source.path)
    name = adapter.info.name if adapter else source.name
    out_dir = Path(options.out_dir or Path("out") / f"{name}-onnx")
    with hold_folder(out_dir, wait=options.wait, on_wait=lambda text: progress(text, None)):
        started = time.monotonic()
        ensure_writable_dir(out_dir / "onnx")
        info, manifest = open_export(info, source, adapter, out_dir, force=options.force, progress=progress)
        result = ExportResult(out_dir)
        inputs = {p.name: manifest.sha256(p) for p in info.input_files()}

        _copy_side_files(info.path, out_dir, manifest, inputs, options.force, result, progress)
        _export_graphs(info.path, out_dir, manifest, inputs, options.force, result, progress)
        todo = [(g, v) for v in variants if v != "fp32" for g in GRAPHS]
        for n, (graph, variant) in enumerate(todo):
            progress(f"{graph}{suffix(variant)}: quantizing", n / len(todo))
            _make_variant(out_dir, graph, variant, manifest, options.force, result)
        manifest.set_section(Section.ONNX, {"exporter": EXPORTER, "opset": OPSET, "variants": list(variants),
                                            "graphs": list(GRAPHS)})
        manifest.save()
        result.seconds = time.monotonic() - started
        return result


def _copy_side_files(checkpoint: Path, out_dir: Path, manifest, inputs: dict, force: bool, result, progress) -> None:
    names = [n for n in SIDE_FILES if (checkpoint / n).is_file()]
    completed, added = completed_side_files(checkpoint)
    written = [n for n in SIDE_FILES if n in names or n in completed]
    targets = [out_dir / n for n in written]
    params = {"files": names, "added": added}
    key = manifest.step_key({n: inputs[n] for n in names}, params)
    if manifest.up_to_date("onnx:files", key, targets, force=force):
        result.reused.append("config and tokenizer files")
        return
    progress("copying config, tokenizer and processor files", None)
    t0 = time.monotonic()

    for name, target in zip(written, targets, strict=True):
        with staged_file(target) as tmp:
            if name in completed:
                tmp.write_text(json.dumps(completed[name], indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            else:
                shutil.copyfile(checkpoint / name, tmp)
    manifest.record_step("onnx:files", key, params, {n: inputs[n] for n in names}, targets, time.monotonic() - t0)
    manifest.save()
    result.written.append("config and tokenizer files")


def completed_side_files(checkpoint: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """The side files that lack what transformers.js reads, completed: ({file: its JSON}, {file: {field: origin}}).

    The second says what was added and from where, for build.json. Fields already there are kept as they are.
    - preprocessor_config.json gets `processor_class`: processor_config.json's or tokenizer_config.json's, else
      SmolVLMProcessor. A checkpoint saved by transformers 5 has no preprocessor_config.json: the image processor
      is nested in processor_config.json, and the file is written from that entry.
    - tokenizer_config.json gets `chat_template`: the checkpoint's template from chat_template.jinja (all
      transformers 5 writes), else chat_template.json, the order transformers reads them in. A checkpoint with
      no template anywhere gets none here.
    """

    def read(name: str) -> dict:
        path = checkpoint / name
        return read_json_object(path, "fix or replace the checkpoint's file") if path.is_file() else {}

    completed: dict[str, dict] = {}
    added: dict[str, dict] = {}
    preprocessor, origin = read("preprocessor_config.json"), "preprocessor_config.json"
    nested = read("processor_config.json").get("image_processor")
    if not preprocessor and isinstance(nested, dict) and nested:
        preprocessor, origin = dict(nested), "processor_config.json's image_processor"
    if preprocessor and not preprocessor.get("processor_class"):
        value, source = DEFAULT_PROCESSOR_CLASS, "default"
        for name in ("processor_config.json", "tokenizer_config.json"):
            found = read(name).get("processor_class")
            if found and isinstance(found, str):
                value, source = found, name
                break
        completed["preprocessor_config.json"] = {**preprocessor, "processor_class": value}
        added["preprocessor_config.json"] = {"processor_class": {"value": value, "from": source}}
        if origin != "preprocessor_config.json":
            added["preprocessor_config.json"]["created_from"] = origin
    tokenizer = read("tokenizer_config.json")
    template = find_chat_template(checkpoint)
    if tokenizer and not tokenizer.get("chat_template") and template is not None:
        completed["tokenizer_config.json"] = {**tokenizer, "chat_template": template.text}
        added["tokenizer_config.json"] = {"chat_template": {"from": template.file}}
    return completed, added


def _export_params(graph: str) -> dict:
    import torch
    import transformers

    return {"graph": graph, "exporter": EXPORTER, "opset": OPSET, "torch": torch.__version__,
            "transformers": transformers.__version__, "adapter": None}


def _export_graphs(checkpoint: Path, out_dir: Path, manifest, inputs: dict, force: bool, result, progress) -> None:
    for n, graph in enumerate(GRAPHS):
        target = graph_file(out_dir, graph)
        targets = [target, *([_data_file(target)] if _data_file(target).exists() else [])]
        params = _export_params(graph)
        key = manifest.step_key(inputs, params)
        result.files[graph] = target
        if manifest.up_to_date(f"onnx:export:{graph}", key, targets, force=force):
            result.reused.append(graph)
            continue
        progress(f"exporting {graph}", n / len(GRAPHS))
        t0 = time.monotonic()
        # One graph's weights at a time: a fresh model per graph, holding only what that graph uses.
        model = load_model(checkpoint, (graph,))
        written = _staged(target, lambda tmp, graph=graph, model=model: export_graph(model, graph, tmp))
        del model
        manifest.record_step(f"onnx:export:{graph}", key, params, inputs, written, time.monotonic() - t0)
        manifest.save()
        result.written.append(graph)


def _make_variant(out_dir: Path, graph: str, variant: str, manifest, force: bool, result) -> None:
    source = graph_file(out_dir, graph)
    target = graph_file(out_dir, graph, variant)
    name = f"{graph}{suffix(variant)}"
    result.files[name] = target
    params = {"graph": graph, "variant": variant, **variant_params(variant)}
    source_inputs = {p.name: manifest.sha256(p) for p in (source, _data_file(source)) if p.exists()}
    key = manifest.step_key(source_inputs, params)
    targets = [target, *([_data_file(target)] if _data_file(target).exists() else [])]
    if manifest.up_to_date(f"onnx:{variant}:{graph}", key, targets, force=force):
        result.reused.append(name)
        return
    t0 = time.monotonic()
    written = _staged(target, lambda tmp: make_variant(variant, source, tmp))
    manifest.record_step(f"onnx:{variant}:{graph}", key, params, source_inputs, written, time.monotonic() - t0)
    manifest.save()
    result.written.append(name)


def _data_file(graph: Path) -> Path:
    return graph.with_name(graph.name + "_data")


def _staged(target: Path, write) -> list[Path]:
    """Run `write(path)` in a hidden directory beside `target`; move the graph (and its data) into place.

    The external data file keeps its name (the graph refers to it by name), so the pair is written under the
    final names in the staging directory and moved data first: a graph never appears without its weights."""
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", suffix=".partial", dir=target.parent) as tmp:
        staged = Path(tmp) / target.name
        write(staged)
        data = _data_file(staged)
        _data_file(target).unlink(missing_ok=True)
        if data.exists():
            os.replace(data, _data_file(target))
        os.replace(staged, target)
    return [target, *([_data_file(target)] if _data_file(target).exists() else [])]


# --------------------------------------------------------------------------------------------------
# torch → ONNX


def load_model(checkpoint: Path, graphs: tuple[str, ...]):
    """The checkpoint as a float32 transformers model, with weights only in the parts that `graphs` use.

    The model is built on the meta device and each needed tensor is read from the safetensors files and
    converted on its own, so memory holds the needed float32 weights once (from_pretrained would hold the whole
    model, vision tower included, for every graph). A checkpoint whose tensor names differ from the model's
    (an older layout that transformers renames on load) goes through from_pretrained instead."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # Eager attention: plain MatMul/Softmax in the graph, which every ONNX runtime runs.
    config = AutoConfig.from_pretrained(checkpoint)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32, attn_implementation="eager")
    release_unneeded(model, graphs)
    wanted = set(model.state_dict())
    files = {}
    for path in sorted(Path(checkpoint).glob("*.safetensors")):
        with safe_open(path, "pt") as handle:
            files.update(dict.fromkeys(handle.keys(), path))
    stored = {k: k for k in wanted}
    if "lm_head.weight" not in files and config.get_text_config().tie_word_embeddings:
        stored["lm_head.weight"] = "model.text_model.embed_tokens.weight"  # a tied head is stored once
    if not set(stored.values()) <= files.keys():
        model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32,
                                                            attn_implementation="eager")
        release_unneeded(model, graphs)
        return model.eval()
    for path in sorted({files[k] for k in stored.values()}):
        with safe_open(path, "pt") as handle:
            read = {k: handle.get_tensor(k).to(torch.float32) for k in set(stored.values()) if files[k] == path}
        model.load_state_dict({k: read[s] for k, s in stored.items() if s in read}, strict=False, assign=True)
        del read
    if model.model.text_model is not None:
        # The rotary frequencies are a buffer computed at construction, not a checkpoint tensor.
        text = model.model.text_model
        text.rotary_emb = type(text.rotary_emb)(config=text.config)
    return model.eval()


def release_unneeded(model, graphs) -> None:
    """Drop the parts of `model` that none of `graphs` uses (the decoder needs no vision tower, and so on)."""
    core = model.model
    if "vision_encoder" not in graphs:
        core.vision_model = core.connector = None
    if core.text_model is not None and "decoder_model_merged" not in graphs:
        core.text_model.layers = core.text_model.norm = model.lm_head = None
    if core.text_model is not None and "embed_tokens" not in graphs:
        core.text_model.embed_tokens = None  # a tied lm_head keeps its own reference to the weight
    if "embed_tokens" not in graphs and "decoder_model_merged" not in graphs:
        core.text_model = None


def kv_layout(config) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of the text model."""
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return text.num_hidden_layers, text.num_key_value_heads, head_dim


def past_names(n_layers: int, prefix: str = "past_key_values") -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]


def export_graph(model, graph: str, path: Path) -> None:
    """Export one graph to `path` (weights beside it as `<name>_data` when over 2 GB).

    The graph's nn.Linear layers are replaced in `model` by TransposedLinear (same results), so that the export
    holds each weight once."""
    import warnings

    import torch

    # graphs.py defines torch modules, so importing it imports torch: here, like torch itself, not at start-up.
    from smolconv.formats.onnx.graphs import Decoder, EmbedTokens, VisionEncoder, transpose_linears

    config = model.config
    if graph == "vision_encoder":
        size = config.vision_config.image_size
        module = VisionEncoder(model)
        args = (torch.randn(1, 2, 3, size, size), torch.ones(1, 2, size, size, dtype=torch.bool))
        names = (["pixel_values", "pixel_attention_mask"], ["image_features"])
        axes = {"pixel_values": {0: "batch_size", 1: "num_images"},
                "pixel_attention_mask": {0: "batch_size", 1: "num_images"},
                "image_features": {0: "num_real_images", 1: "image_seq_len"}}
    elif graph == "embed_tokens":
        module = EmbedTokens(model)
        args = (torch.tensor([[1, 2, 3]]),)
        names = (["input_ids"], ["inputs_embeds"])
        axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
                "inputs_embeds": {0: "batch_size", 1: "sequence_length"}}
    else:
        n_layers, kv_heads, head_dim = kv_layout(config)
        module = Decoder(model)
        seq, past = 3, 2
        args = (torch.randn(1, seq, config.text_config.hidden_size), torch.ones(1, seq + past, dtype=torch.int64),
                torch.arange(past, past + seq)[None], *[torch.randn(1, kv_heads, past, head_dim)
                                                        for _ in range(2 * n_layers)])
        inputs = ["inputs_embeds", "attention_mask", "position_ids", *past_names(n_layers)]
        outputs = ["logits", *past_names(n_layers, "present")]
        names = (inputs, outputs)
        axes = {"inputs_embeds": {0: "batch_size", 1: "sequence_length"},
                "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
                "position_ids": {0: "batch_size", 1: "sequence_length"},
                "logits": {0: "batch_size", 1: "sequence_length"}}
        axes |= {n: {0: "batch_size", 2: "past_sequence_length"} for n in past_names(n_layers)}
        axes |= {n: {0: "batch_size", 2: "total_sequence_length"} for n in past_names(n_layers, "present")}
    transpose_linears(module)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent) as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        raw = Path(scratch) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(module.eval(), args, str(raw), dynamo=False, opset_version=OPSET,
                              input_names=names[0], output_names=names[1], dynamic_axes=axes,
                              do_constant_folding=True)
        if any(p.name != raw.name for p in Path(scratch).iterdir()):
            # Over 2 GB the exporter writes one file per tensor: gather them into `<name>_data`.
            merge_external_data(raw, path)
        else:
            os.replace(raw, path)


def merge_external_data(raw: Path, path: Path) -> None:
    """Write the graph `raw`, whose tensors are in files of their own beside it, as `path` + `<name>_data`.

    The tensors are copied one by one (never all in memory, which for the 2.2B decoder would be 7 GB more),
    each at an offset aligned to 4 KiB as onnx itself aligns them; each source file is deleted once copied."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(raw), load_external_data=False)
    location = f"{path.name}_data"
    tensors = [t for t in model.graph.initializer if uses_external_data(t)]
    uses = Counter(ExternalDataInfo(t).location for t in tensors)
    with open(path.with_name(location), "wb") as data:
        for tensor in tensors:
            info = ExternalDataInfo(tensor)
            offset = -data.tell() % 4096 + data.tell()
            data.seek(offset)
            with open(raw.parent / info.location, "rb") as source:
                source.seek(info.offset or 0)
                length = _copy(source, data, info.length)
            uses[info.location] -= 1
            if not uses[info.location]:  # the exporter's files go as they are copied: no second 7 GB on disk
                (raw.parent / info.location).unlink()
            del tensor.external_data[:]
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    onnx.save_model(model, str(path))


def _copy(source, target, length: int | None, chunk: int = 64 * 1024**2) -> int:
    """Copy `length` bytes (None: to the end) from one open file to another; return how many were copied."""
    copied = 0
    while length is None or copied < length:
        block = source.read(chunk if length is None else min(chunk, length - copied))
        if not block:
            break
        target.write(block)
        copied += len(block)
    return copied


def export_and_verify(options: ExportOptions, *, verify: bool = True, threads: int | None = None,
                      progress: ProgressFn = no_progress):
    """`smolconv export-onnx`: the export, then (unless told not to) its check against transformers."""
    result = export_onnx(options, progress)
    report = None
    if verify:
        report = verify_onnx(result.out_dir, threads=threads, progress=progress)
    return result, report
