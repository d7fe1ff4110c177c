"""Check a Hugging Face checkpoint directory before converting it.

The converter fails late and verbosely on a bad checkpoint (sometimes after writing part of a GGUF). These
checks read only configs and safetensors headers, so they take milliseconds and name the one thing to fix.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from smolconv.errors import SmolconvError

SUPPORTED_ARCHITECTURES = ("SmolVLMForConditionalGeneration", "Idefics3ForConditionalGeneration")
TEXT_ARCHITECTURE = "VLlama3ForCausalLM"
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    config: dict
    weight_files: tuple[str, ...]

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

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight's shape, from the safetensors headers (no tensor data is read)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for name in self.weight_files:
            header = safetensors_header(self.path / name)
            shapes.update({key: tuple(int(d) for d in entry["shape"]) for key, entry in header.items()
                           if key != "__metadata__"})
        return shapes

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
    weight_files = _weight_files(directory)
    for name in weight_files:
        check_safetensors(directory / name)
    return CheckpointInfo(path=directory, config=config, weight_files=tuple(weight_files))


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
    if not ((directory / "tokenizer.json").is_file() or (directory / "tokenizer.model").is_file()):
        raise SmolconvError(f"{directory} has no tokenizer.json",
                            "download it with the checkpoint (`smolconv pull` fetches it)")
    for name in ("tokenizer_config.json", "preprocessor_config.json"):
        if not (directory / name).is_file():
            raise SmolconvError(f"{directory} has no {name}",
                                "download it with the checkpoint (`smolconv pull` fetches it)")


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


def check_safetensors(path: Path) -> None:
    """The header parses and the file holds every byte the header promises."""
    safetensors_header(path)


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
