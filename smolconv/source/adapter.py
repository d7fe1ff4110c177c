"""PEFT adapters (LoRA, DoRA): what one holds, and whether it fits the checkpoint it is meant for.

Everything here reads `adapter_config.json` and safetensors headers only, so the checks take milliseconds
and run before any long step (download of the base, merge, conversion). Each refusal names the one thing
to fix.

Tensor names, as PEFT saves them for SmolVLM (`base_model.model.` + the module path + a suffix):
    ….q_proj.lora_A.weight [r, in]      ….q_proj.lora_B.weight [out, r]     (Linear; Conv has kernel dims)
    ….embed_tokens.lora_embedding_A [r, vocab]   ….lora_embedding_B [dim, r] (Embedding)
    ….q_proj.lora_magnitude_vector [out]                                      (DoRA)
    ….embed_tokens.token_adapter.trainable_tokens_delta [n, dim]              (trainable token rows)
    lm_head.weight                                                             (modules_to_save: a full copy)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from smolconv.core.choices import AdapterFormat
from smolconv.core.errors import SmolconvError
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.record.manifest import Manifest
from smolconv.record.views import AdapterRecord
from smolconv.source.checkpoint import CheckpointInfo, inspect_checkpoint, read_json_object, safetensors_header
from smolconv.source.pull import PullOptions, Source, pull, pull_adapter, resolve_model
from smolconv.source.spec import SourceSpec

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMATS = tuple(AdapterFormat)
_PREFIX = "base_model.model."

# Which part of SmolVLM a module belongs to, by its path in the checkpoint.
VISION_PREFIX = "model.vision_model."
CONNECTOR_PREFIX = "model.connector."

# suffix → kind; the module path is what comes before the suffix.
_SUFFIXES = (
    (re.compile(r"\.lora_A(?:\.[^.]+)?\.weight$"), "lora_A"),
    (re.compile(r"\.lora_B(?:\.[^.]+)?\.weight$"), "lora_B"),
    (re.compile(r"\.lora_[AB](?:\.[^.]+)?\.bias$"), "lora_bias"),
    (re.compile(r"\.lora_embedding_A(?:\.[^.]+)?$"), "embedding_A"),
    (re.compile(r"\.lora_embedding_B(?:\.[^.]+)?$"), "embedding_B"),
    (re.compile(r"\.lora_magnitude_vector(?:\.[^.]+)?(?:\.weight)?$"), "magnitude"),
    (re.compile(r"\.token_adapter\.trainable_tokens_delta(?:\.[^.]+)?$"), "token_rows"),
)


@dataclass(frozen=True)
class AdapterTensor:
    name: str                  # as stored in the adapter file
    module: str                # the base checkpoint's module path (model.text_model.layers.0.self_attn.q_proj)
    kind: str                  # lora_A, lora_B, magnitude, embedding_A/B, token_rows, lora_bias, full
    shape: tuple[int, ...]

    @property
    def part(self) -> str:
        """vision, connector or text: where in SmolVLM the module sits."""
        if self.module.startswith(VISION_PREFIX):
            return "vision"
        if self.module.startswith(CONNECTOR_PREFIX):
            return "connector"
        return "text"


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    config: dict
    tensors: tuple[AdapterTensor, ...]
    name: str = ""             # the fine-tune's name: the Hub repo's or the directory's

    @property
    def r(self) -> int:
        return int(self.config.get("r") or 0)

    @property
    def alpha(self) -> float:
        return float(self.config.get("lora_alpha") or self.r)

    @property
    def use_dora(self) -> bool:
        return bool(self.config.get("use_dora"))

    @property
    def use_rslora(self) -> bool:
        return bool(self.config.get("use_rslora"))

    @property
    def target_modules(self) -> list[str]:
        targets = self.config.get("target_modules") or []
        return sorted(targets) if isinstance(targets, list) else [str(targets)]

    @property
    def modules_to_save(self) -> list[str]:
        return list(self.config.get("modules_to_save") or [])

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path") or None

    @property
    def parts(self) -> list[str]:
        """The parts of SmolVLM the adapter changes, in model order."""
        found = {t.part for t in self.tensors}
        return [p for p in ("vision", "connector", "text") if p in found]

    def files(self) -> list[Path]:
        return [self.path / CONFIG_FILE, self.path / WEIGHTS_FILE]

    def to_record(self) -> dict:
        return {"name": self.name, "r": self.r, "alpha": self.alpha, "use_dora": self.use_dora,
                "use_rslora": self.use_rslora, "target_modules": self.target_modules,
                "modules_to_save": self.modules_to_save,
                "trainable_token_indices": self.config.get("trainable_token_indices"),
                "base_model_name_or_path": self.base_model, "parts": self.parts,
                "tensors": len(self.tensors)}


def inspect_adapter(path: str | Path, name: str | None = None) -> AdapterInfo:
    """Read an adapter directory: its config (a LoRA, DoRA included) and its tensor names and shapes."""
    directory = Path(path)
    if not directory.is_dir():
        raise SmolconvError(f"adapter {directory} is not a directory",
                            "pass a PEFT adapter directory (adapter_config.json + adapter_model.safetensors) "
                            "or its Hub id")
    config = _read_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        legacy = " (it has adapter_model.bin, a pickle smolconv does not load)" \
            if (directory / "adapter_model.bin").is_file() else ""
        raise SmolconvError(f"{directory} has no {WEIGHTS_FILE}{legacy}",
                            "save the adapter with a current peft (`save_pretrained` writes safetensors)")
    header = safetensors_header(weights)
    tensors = tuple(_classify(key, tuple(int(d) for d in entry["shape"]))
                    for key, entry in sorted(header.items()) if key != "__metadata__")
    if not tensors:
        raise SmolconvError(f"{weights.name} in {directory} holds no tensors", "save the trained adapter again")
    return AdapterInfo(path=directory, config=config, tensors=tensors, name=name or directory.resolve().name)


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise SmolconvError(f"{directory} has no {CONFIG_FILE}",
                            "pass the directory PEFT's save_pretrained wrote (it holds adapter_config.json)")
    config = read_json_object(path, "save or download the adapter again")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise SmolconvError(
            f"the adapter in {directory} is a {peft_type or 'untyped'} PEFT adapter; smolconv takes LoRA adapters "
            "(DoRA included)", "train a LoRA/DoRA adapter, or merge this one into the checkpoint with peft yourself")
    return config


def _classify(key: str, shape: tuple[int, ...]) -> AdapterTensor:
    name = key.removeprefix(_PREFIX)
    for pattern, kind in _SUFFIXES:
        match = pattern.search(name)
        if match:
            return AdapterTensor(key, name[: match.start()], kind, shape)
    # A full tensor: a module PEFT saved whole (modules_to_save), e.g. lm_head.weight.
    module, _, _ = name.rpartition(".")
    return AdapterTensor(key, module, "full", shape)


# --------------------------------------------------------------------------------------------------
# Against the base checkpoint


def base_matches(adapter: AdapterInfo, repo_id: str | None, checkpoint: Path) -> bool:
    """Whether the adapter's recorded base is this checkpoint: the same Hub id, or the same directory.

    A local directory named like the Hub repo (`huggingface-cli download … --local-dir NAME`) and a Hub
    cache snapshot (`models--owner--name/snapshots/…`) count as that repo.
    """
    recorded = adapter.base_model
    if recorded is None:
        return True  # nothing to compare; the shape check still guards
    if repo_id and recorded.lower() == repo_id.lower():
        return True
    local = Path(recorded).expanduser()
    if local.is_dir() and local.resolve() == checkpoint.resolve():
        return True
    if "/" in recorded and not recorded.startswith((".", "/", "~")):
        repo_name = recorded.split("/")[-1].lower()
        resolved = checkpoint.resolve()
        cache_dir = next((p.name for p in resolved.parents if p.name.startswith("models--")), "")
        if cache_dir.lower() == "models--" + recorded.replace("/", "--").lower():
            return True
        return resolved.name.lower() == repo_name
    return False


def check_base(adapter: AdapterInfo, repo_id: str | None, checkpoint: Path, *, force: bool = False) -> None:
    if not force and not base_matches(adapter, repo_id, checkpoint):
        where = repo_id or str(checkpoint)
        raise SmolconvError(
            f"the adapter was trained on {adapter.base_model}, not on {where}",
            "pass that checkpoint, or --force if it is the same model under another name")


def check_shapes(adapter: AdapterInfo, base: CheckpointInfo) -> None:
    """Every adapter tensor must sit on a module of the base, with shapes that fit it."""
    shapes = base.tensor_shapes()
    ranks: dict[str, int] = {}
    for tensor in adapter.tensors:
        weight = shapes.get(f"{tensor.module}.weight")
        if weight is None:
            raise SmolconvError(
                f"adapter tensor {tensor.name} belongs to {tensor.module}, which the base checkpoint does not have",
                "pass the checkpoint the adapter was trained on (its adapter_config.json names it)")
        problem = _shape_problem(tensor, weight, ranks)
        if problem:
            raise SmolconvError(
                f"adapter tensor {tensor.name} has shape {list(tensor.shape)}, which does not fit "
                f"{tensor.module}.weight {list(weight)} of the base ({problem})",
                "pass the checkpoint the adapter was trained on (another model size has other shapes)")
    pairs = {(t.module, t.kind) for t in adapter.tensors}
    for module, kind in pairs:
        other = {"lora_A": "lora_B", "lora_B": "lora_A", "embedding_A": "embedding_B",
                 "embedding_B": "embedding_A"}.get(kind)
        if other and (module, other) not in pairs:
            raise SmolconvError(f"the adapter has {kind} but no {other} for {module}",
                                "the adapter file is incomplete: save or download it again")


def _shape_problem(tensor: AdapterTensor, weight: tuple[int, ...], ranks: dict[str, int]) -> str | None:
    shape, kind = tensor.shape, tensor.kind
    if kind == "lora_A":
        if shape[1:] != weight[1:]:
            return f"lora_A must be [r, {', '.join(map(str, weight[1:]))}]"
        return _same_rank(tensor.module, shape[0], ranks)
    if kind == "lora_B":
        if not shape or shape[0] != weight[0]:
            return f"lora_B must have {weight[0]} rows"
        return _same_rank(tensor.module, shape[1] if len(shape) > 1 else 0, ranks)
    if kind == "embedding_A":
        return None if len(shape) == 2 and shape[1] == weight[0] else f"must be [r, {weight[0]}]"
    if kind == "embedding_B":
        return None if len(shape) == 2 and shape[0] == weight[1] else f"must be [{weight[1]}, r]"
    if kind in ("magnitude", "lora_bias"):
        return None if shape[-1:] == weight[:1] else f"must have {weight[0]} values"
    if kind == "token_rows":
        return None if len(shape) == 2 and shape[1] == weight[1] else f"rows must have {weight[1]} values"
    return None if shape == weight else "a saved module must have the base's shape"


def _same_rank(module: str, rank: int, ranks: dict[str, int]) -> str | None:
    seen = ranks.setdefault(module, rank)
    return None if seen == rank else f"lora_A and lora_B disagree on the rank ({seen} vs {rank})"


# --------------------------------------------------------------------------------------------------
# What a GGUF LoRA can hold


def vision_modules(adapter: AdapterInfo) -> str:
    """`vision tower self_attn.q_proj, self_attn.k_proj in 12 layers; connector modality_projection.proj`."""
    groups: dict[str, tuple[set[str], set[str]]] = {}
    for tensor in adapter.tensors:
        if tensor.part == "text":
            continue
        label = "vision tower" if tensor.part == "vision" else "connector"
        rest = tensor.module.removeprefix(VISION_PREFIX if tensor.part == "vision" else CONNECTOR_PREFIX)
        match = re.match(r"(?:encoder\.)?layers\.(\d+)\.(.+)", rest)
        leaves, layers = groups.setdefault(label, (set(), set()))
        if match:
            layers.add(match.group(1))
            leaves.add(match.group(2))
        else:
            leaves.add(rest)
    parts = []
    for label, (leaves, layers) in groups.items():
        text = f"{label} {', '.join(sorted(leaves))}"
        if layers:
            text += f" in {len(layers)} layers"
        parts.append(text)
    return "; ".join(parts)


def check_gguf_format(adapter: AdapterInfo, base: CheckpointInfo) -> None:
    """Refuse what llama.cpp's convert_lora_to_gguf.py would drop silently or fail on late."""
    fix = "use --adapter-format merge (the default), which merges it into the checkpoint"
    if adapter.parts != ["text"]:
        raise SmolconvError(f"a GGUF LoRA holds only the text model, and this adapter also changes the "
                            f"{vision_modules(adapter)} (llama.cpp would drop them)", fix)
    full = sorted({t.module for t in adapter.tensors if t.kind == "full"})
    if full:
        raise SmolconvError(f"the adapter holds full trained weights of {', '.join(full)} (modules_to_save), which "
                            "a GGUF LoRA cannot hold", fix)
    if any(t.kind == "token_rows" for t in adapter.tensors):
        raise SmolconvError("the adapter trains token rows of the embeddings (trainable_token_indices), which a "
                            "GGUF LoRA cannot hold", fix)
    if adapter.use_dora:
        raise SmolconvError("llama.cpp's GGUF LoRA has no DoRA magnitude vectors (use_dora)", fix)
    if adapter.use_rslora:
        raise SmolconvError("llama.cpp's GGUF LoRA scales by alpha/r, and this adapter uses rsLoRA's "
                            "alpha/sqrt(r) (use_rslora)", fix)
    if adapter.config.get("rank_pattern") or adapter.config.get("alpha_pattern"):
        raise SmolconvError("the adapter gives some modules their own rank or alpha (rank_pattern/alpha_pattern), "
                            "and a GGUF LoRA has one alpha", fix)
    if any(t.kind == "lora_bias" for t in adapter.tensors):
        raise SmolconvError("the adapter trains LoRA biases (lora_bias), which a GGUF LoRA cannot hold", fix)
    if base.config.get("tie_word_embeddings", base.text_config.get("tie_word_embeddings")) and any(
            t.module == "lm_head" for t in adapter.tensors):
        raise SmolconvError("the adapter changes lm_head, which this checkpoint ties to the embeddings (llama.cpp "
                            "keeps one tensor for both)", fix)


def check_adapter(adapter: AdapterInfo, base: CheckpointInfo, repo_id: str | None, adapter_format: str,
                  *, force: bool = False) -> None:
    """Everything that can be known before a long step: base, shapes, and what the chosen format can hold."""
    if adapter_format not in FORMATS:
        raise SmolconvError(f"unknown --adapter-format {adapter_format!r}", "use merge or gguf")
    check_base(adapter, repo_id, base.path, force=force)
    check_shapes(adapter, base)
    if adapter_format == "gguf":
        check_gguf_format(adapter, base)


# --------------------------------------------------------------------------------------------------
# Pulling and checking, for the stages that take --adapter


@dataclass
class AdapterSetup:
    """An adapter that passed every check against its base, and what became of it."""

    source: Source
    info: AdapterInfo
    format: str
    merged: Path | None = None        # merge: the merged checkpoint directory
    gguf: Path | None = None          # gguf: the adapter GGUF
    skipped: bool = False
    seconds: float = 0.0

    def to_record(self, manifest: Manifest) -> AdapterRecord:
        """build.json's "adapter": where it came from, what it is, and what smolconv made of it."""
        files = {p.name: manifest.sha256(p) for p in self.info.files()}
        origin = self.source.to_record()
        return AdapterRecord(model=origin.model, repo_id=origin.repo_id, revision=origin.revision,
                             requested_revision=origin.requested_revision, path=origin.path, files=files,
                             format=self.format, details=self.info.to_record(),
                             merged=manifest.output_name(self.merged) if self.merged is not None else None,
                             gguf=self.gguf.name if self.gguf is not None else None)


def load_adapter(adapter: str, revision: str | None, adapter_format: str, model: str, *,
                 local_files_only: bool = False, force: bool = False) -> AdapterSetup:
    """Pull the adapter and check it against the model asked for, before the base is downloaded."""
    if adapter_format not in FORMATS:
        raise SmolconvError(f"unknown --adapter-format {adapter_format!r}", "use merge or gguf")
    adapter_source = pull_adapter(PullOptions(adapter, revision=revision, local_files_only=local_files_only))
    info = inspect_adapter(adapter_source.path, name=adapter_source.name)
    repo_id, local = resolve_model(model)
    check_base(info, repo_id, local or Path(model), force=force)
    return AdapterSetup(adapter_source, info, adapter_format)


def check_adapter_against(setup: AdapterSetup, source: Source, *, force: bool = False) -> None:
    """With the base at hand: tensor shapes, and what the chosen format can hold."""
    check_adapter(setup.info, inspect_checkpoint(source.path), source.repo_id, setup.format, force=force)


def pull_model_and_adapter(spec: SourceSpec, *, force: bool = False,
                           progress: ProgressFn = no_progress) -> tuple[Source, AdapterSetup | None]:
    """The model (and its adapter, when given), every check passed: what each command that takes --adapter
    does first. The adapter comes first: a small download, and checks that need only the model's name, so a
    mismatch is refused before the base's gigabytes are fetched."""
    setup = None
    if spec.adapter:
        progress(f"pulling the adapter {spec.adapter}", None)
        setup = load_adapter(spec.adapter, spec.adapter_revision, spec.adapter_format, spec.model,
                             local_files_only=spec.local_files_only, force=force)
    progress(f"pulling {spec.model}", None)
    source = pull(spec.pull_options)
    if setup is not None:
        check_adapter_against(setup, source, force=force)
    return source, setup
