"""Check a Hugging Face checkpoint directory before converting it, and read it in either transformers layout.

The converter fails late and verbosely on a bad checkpoint (sometimes after writing part of a GGUF). These
checks read only configs and safetensors headers, so they take milliseconds and name the one thing to fix.

Checkpoints come saved by transformers 4.x (the Hub originals) or 5.x (fine-tunes made today), which differ in
where they keep things: `torch_dtype` or `dtype`; `text_config.rope_theta` or `text_config.rope_parameters`;
the chat template in `tokenizer_config.json`, `chat_template.json` or `chat_template.jinja`; the image
processor's settings in `preprocessor_config.json` or nested in `processor_config.json`. Every reader of a
checkpoint goes through this module, so both layouts are read the same way everywhere.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from smolconv.core.errors import SmolconvError

SUPPORTED_ARCHITECTURES = ("SmolVLMForConditionalGeneration", "Idefics3ForConditionalGeneration")
TEXT_ARCHITECTURE = "VLlama3ForCausalLM"
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


# Where a chat template can live, in the order transformers itself prefers them.
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")


@dataclass(frozen=True)
class ChatTemplate:
    text: str
    file: str  # the file it was read from (one of CHAT_TEMPLATE_FILES)


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    config: dict
    weight_files: tuple[str, ...]
    chat_template: ChatTemplate | None = None

    @property
    def text_config(self) -> dict:
        return self.config["text_config"]

    @property
    def vision_config(self) -> dict:
        return self.config["vision_config"]

    @property
    def num_hidden_layers(self) -> int:
        return int(self.text_config["num_hidden_layers"])

    @property
    def vocab_size(self) -> int:
        return int(self.text_config.get("vocab_size", self.config.get("vocab_size")))

    @property
    def scale_factor(self) -> int:
        return int(self.config.get("scale_factor", 2))  # the converter's default too

    @property
    def image_size(self) -> int:
        return int(self.vision_config["image_size"])

    @property
    def rope_theta(self) -> float:
        return rope_theta(self.text_config, self.path / "config.json")

    @property
    def dtype(self) -> str | None:
        return config_dtype(self.config)

    @property
    def notices(self) -> list[str]:
        """What a user should know before building from this checkpoint, one line each."""
        if self.chat_template is None:
            return [f"{self.path} has no chat template (none of {', '.join(CHAT_TEMPLATE_FILES)} holds one): "
                    "the models get SmolVLM2's; if this is a fine-tune with its own format, copy its "
                    "chat_template.jinja into the checkpoint"]
        return []

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight's shape, from the safetensors headers (no tensor data is read)."""
        return weight_shapes(self.path, self.weight_files)

    def input_files(self) -> list[Path]:
        """Every file the converter reads (what a build's manifest hashes)."""
        return checkpoint_files(self.path)


def checkpoint_files(directory: Path) -> list[Path]:
    """The files of a checkpoint directory, hidden ones (partial downloads, editors' files) left out."""
    return sorted(p for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith("."))


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    directory = Path(path)
    if not directory.is_dir():
        raise SmolconvError(f"checkpoint {directory} is not a directory",
                            "pass a Hub id, an alias (256m, 500m, 2.2b) or a directory holding config.json")
    config = _read_config(directory)
    _check_architecture(config, directory)
    _check_processor_files(directory)
    rope_theta(config["text_config"], directory / "config.json")
    weight_files = _weight_files(directory)
    _check_shapes(config, weight_shapes(directory, weight_files), directory)  # also checks every file's length
    return CheckpointInfo(path=directory, config=config, weight_files=tuple(weight_files),
                          chat_template=find_chat_template(directory))


def _read_config(directory: Path) -> dict:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise SmolconvError(f"{directory} has no config.json", "point at a Hugging Face checkpoint directory")
    return read_json_object(config_path, "download the checkpoint again")


def read_json_object(path: Path, fix: str) -> dict:
    """A JSON file that must hold an object (a config); anything else is a one-line error with `fix`."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SmolconvError(f"{path} is not valid JSON ({exc})", fix) from None
    if not isinstance(data, dict):
        raise SmolconvError(f"{path} is not a JSON object", fix)
    return data


def _check_architecture(config: dict, directory: Path) -> None:
    architectures = config.get("architectures") or []
    arch = architectures[0] if architectures else config.get("model_type", "unknown")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise SmolconvError(
            f"unsupported architecture {arch} in {directory / 'config.json'}",
            f"smolconv converts SmolVLM2 and SmolVLM checkpoints ({', '.join(SUPPORTED_ARCHITECTURES)})",
        )
    text = config.get("text_config")
    if not isinstance(text, dict) or not text.get("architectures"):
        raise SmolconvError(
            f"{directory / 'config.json'} has no text_config.architectures (llama.cpp routes the text model by it)",
            f'add "architectures": ["{TEXT_ARCHITECTURE}"] to text_config, as the published SmolVLM2 configs have',
        )
    if not isinstance(config.get("vision_config"), dict):
        raise SmolconvError(f"{directory / 'config.json'} has no vision_config",
                            "download the complete checkpoint (config.json from the same revision)")
    for key, section in (("num_hidden_layers", text), ("image_size", config["vision_config"])):
        if key not in section:
            raise SmolconvError(f"{directory / 'config.json'} lacks {key}",
                                "download the complete checkpoint (config.json from the same revision)")


def _check_processor_files(directory: Path) -> None:
    fetch = "download it with the checkpoint (`smolconv pull` fetches it)"
    if not ((directory / "tokenizer.json").is_file() or (directory / "tokenizer.model").is_file()):
        raise SmolconvError(f"{directory} has no tokenizer.json", fetch)
    if not (directory / "tokenizer_config.json").is_file():
        raise SmolconvError(f"{directory} has no tokenizer_config.json", fetch)
    damaged = "the file is damaged: download it again, or save the tokenizer again with save_pretrained"
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.json", "processor_config.json",
                 "preprocessor_config.json"):
        if (directory / name).is_file():
            read_json_object(directory / name, damaged)
    image_processor_config(directory)


def image_processor_config(directory: Path) -> dict:
    """The image processor's settings: `preprocessor_config.json` (transformers 4.x, and an image processor
    saved alone), else the `image_processor` entry of the single `processor_config.json` transformers 5 writes."""
    directory = Path(directory)
    fix = "download it again, or save the processor again with save_pretrained"
    if (directory / "preprocessor_config.json").is_file():
        return read_json_object(directory / "preprocessor_config.json", fix)
    if (directory / "processor_config.json").is_file():
        nested = read_json_object(directory / "processor_config.json", fix).get("image_processor")
        if isinstance(nested, dict):
            return nested
    raise SmolconvError(f"{directory} has no preprocessor_config.json (nor an image_processor entry in "
                        "processor_config.json)", "download it with the checkpoint (`smolconv pull` fetches it)")


def find_chat_template(directory: Path) -> ChatTemplate | None:
    """The checkpoint's chat template from whichever of its three places holds one, or None."""
    directory = Path(directory)
    jinja = directory / "chat_template.jinja"
    text = jinja.read_text() if jinja.is_file() else ""
    if text.strip():
        return ChatTemplate(text, jinja.name)
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = directory / name
        if path.is_file():
            text = read_json_object(path, "download it again").get("chat_template")
            if isinstance(text, list):  # named templates: transformers uses the one called "default"
                text = next((t.get("template") for t in text if isinstance(t, dict) and t.get("name") == "default"),
                            None)
            if isinstance(text, str) and text.strip():
                return ChatTemplate(text, name)
    return None


def config_dtype(config: dict) -> str | None:
    """The weights' dtype as the config records it: `dtype` (transformers 5) or `torch_dtype` (4.x)."""
    value = config.get("dtype") or config.get("torch_dtype")
    return str(value) if value else None


def rope_theta(text_config: dict, where: Path) -> float:
    """The text model's RoPE base: `rope_theta` (transformers 4.x) or `rope_parameters.rope_theta` (5.x).

    Never a default: a model run with another base than it was trained with still answers, wrongly."""
    value = text_config.get("rope_theta")
    parameters = text_config.get("rope_parameters")
    if value is None and isinstance(parameters, dict):
        value = parameters.get("rope_theta")
    try:
        theta = float(value)
    except (TypeError, ValueError):
        theta = 0.0
    if theta <= 0:
        raise SmolconvError(f"{where} has no usable text_config.rope_theta (nor rope_parameters.rope_theta)",
                            "copy the value from the base model's config.json (100000.0 for SmolVLM2-256M/500M)")
    return theta


def _find(shapes: dict[str, tuple[int, ...]], suffix: str) -> tuple[str, tuple[int, ...]] | None:
    """The tensor whose name ends with `suffix` (names differ in prefix between checkpoint layouts)."""
    for name, shape in shapes.items():
        if name == suffix or name.endswith("." + suffix):
            return name, shape
    return None


def _layer_count(shapes: dict[str, tuple[int, ...]], marker: str) -> int:
    pattern = re.compile(re.escape(marker) + r"\.(\d+)\.")
    return len({m.group(1) for name in shapes if (m := pattern.search(name))})


def _check_shapes(config: dict, shapes: dict[str, tuple[int, ...]], directory: Path) -> None:
    """config.json's dimensions against the safetensors headers: a config edited or copied from another size
    otherwise converts to a GGUF that fails only when llama-server loads it."""
    text, vision = config["text_config"], config["vision_config"]
    try:
        hidden = int(text["hidden_size"])
        heads = int(text.get("num_attention_heads") or 32)  # transformers' and the converter's default
        kv_heads = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or hidden // heads)
        v_hidden = int(vision["hidden_size"])
        patch = int(vision.get("patch_size", 16))
        scale = int(config.get("scale_factor", 2))
        expected = {
            "text_model.embed_tokens.weight": ("text_config.vocab_size, hidden_size",
                                               (int(text.get("vocab_size", config.get("vocab_size"))), hidden)),
            "text_model.layers.0.self_attn.q_proj.weight": ("text_config.num_attention_heads × head_dim",
                                                            (heads * head_dim, hidden)),
            "text_model.layers.0.self_attn.k_proj.weight": ("text_config.num_key_value_heads × head_dim",
                                                            (kv_heads * head_dim, hidden)),
            "text_model.layers.0.mlp.gate_proj.weight": ("text_config.intermediate_size",
                                                         (int(text["intermediate_size"]), hidden)),
            "vision_model.embeddings.patch_embedding.weight": ("vision_config.hidden_size, patch_size",
                                                               (v_hidden, 3, patch, patch)),
            "vision_model.embeddings.position_embedding.weight": (
                "vision_config.image_size / patch_size", ((int(vision["image_size"]) // patch) ** 2, v_hidden)),
            "connector.modality_projection.proj.weight": ("scale_factor", (hidden, v_hidden * scale * scale)),
        }
        if "intermediate_size" in vision:
            expected["vision_model.encoder.layers.0.mlp.fc1.weight"] = ("vision_config.intermediate_size",
                                                                        (int(vision["intermediate_size"]), v_hidden))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise SmolconvError(f"{directory / 'config.json'} has an unusable dimension ({exc})",
                            "download config.json again from the checkpoint's revision") from None
    fix = "config.json and the weights come from different models: use the config.json saved with these weights"
    for suffix, (fields, want) in expected.items():
        found = _find(shapes, suffix)
        if found is not None and found[1] != want:
            raise SmolconvError(f"{directory / 'config.json'} does not match the weights: {fields} give "
                                f"{list(want)} for {found[0]}, the safetensors hold {list(found[1])}", fix)
    counts = (("text_config.num_hidden_layers", int(text["num_hidden_layers"]), "text_model.layers"),
              ("vision_config.num_hidden_layers", vision.get("num_hidden_layers"), "vision_model.encoder.layers"))
    for fields, want, marker in counts:
        have = _layer_count(shapes, marker)
        if want is not None and have and have != int(want):
            raise SmolconvError(f"{directory / 'config.json'} does not match the weights: {fields} is {want}, "
                                f"the safetensors hold {have} layers", fix)


def _weight_files(directory: Path) -> list[str]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise SmolconvError(f"{index} is not a valid safetensors index", "download it again") from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (directory / f).is_file()]
        if missing:
            raise SmolconvError(f"{directory} lacks {', '.join(missing)} (listed in {index.name})",
                                "finish the download (`smolconv pull` resumes it)")
        return files
    files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise SmolconvError(f"{directory} has no .safetensors weights",
                            "download the checkpoint's model.safetensors (`smolconv pull` fetches it)")
    return files


def weight_shapes(directory: Path, weight_files) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name in weight_files:
        header = safetensors_header(directory / name)
        shapes.update({key: tuple(int(d) for d in entry["shape"]) for key, entry in header.items()
                       if key != "__metadata__"})
    return shapes


def safetensors_header(path: Path) -> dict:
    """The parsed header of a safetensors file, after checking that the file holds every byte it promises."""
    size = path.stat().st_size
    fix = "the file is damaged or incomplete: download it again (`smolconv pull` resumes downloads)"
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise SmolconvError(f"{path.name} is too short to be a safetensors file ({size} bytes)", fix)
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
            raise SmolconvError(f"{path.name} has an unreadable safetensors header", fix)
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SmolconvError(f"{path.name} has an unreadable safetensors header", fix) from None
    try:
        data_end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError):
        raise SmolconvError(f"{path.name} has an unreadable safetensors header", fix) from None
    have = size - 8 - header_len
    if have < data_end:
        raise SmolconvError(
            f"{path.name} is truncated: its header describes {data_end:,} bytes of tensors, the file holds {have:,}",
            fix,
        )
    return header


FIXTURE_MARKER = "smolconv-fixture.json"


def fixture_info(checkpoint: Path) -> dict | None:
    """What `synth` wrote about a checkpoint it made, or None for a real one."""
    try:
        return json.loads((Path(checkpoint) / FIXTURE_MARKER).read_text())
    except (OSError, ValueError):
        return None
