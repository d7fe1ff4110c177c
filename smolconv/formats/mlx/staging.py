"""The config fixes mlx-vlm's converter needs, applied to a staged copy of the checkpoint (the user's files are never
changed).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from smolconv.core.errors import SmolconvError
from smolconv.core.models import CHAT_TEMPLATE
from smolconv.source.checkpoint import CheckpointInfo, rope_theta


def is_tied(info: CheckpointInfo) -> bool:
    """The head is the embedding matrix and the checkpoint stores it once (as transformers saves it)."""
    tied = info.config.get("tie_word_embeddings") or info.text_config.get("tie_word_embeddings")
    return bool(tied) and "lm_head.weight" not in info.tensor_shapes()


@contextlib.contextmanager
def fixed_checkpoint(info: CheckpointInfo, directory: Path) -> Iterator[tuple[Path, list[str]]]:
    """`directory` as the checkpoint mlx-vlm should read: links to the checkpoint's files, a config with the traps
    fixed, a tied head written out; yields it and what was changed (one line each). Removed afterwards."""
    directory.mkdir(parents=True)
    try:
        yield directory, _write_fixed_checkpoint(info, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _write_fixed_checkpoint(info: CheckpointInfo, directory: Path) -> list[str]:
    config = json.loads(json.dumps(info.config))
    text = config["text_config"]
    fixes = []
    theta = rope_theta(text, info.path / "config.json")
    if text.get("rope_theta") != theta:
        text["rope_theta"] = theta
        fixes.append(f"text_config.rope_theta {theta:g} written (the config keeps it in rope_parameters, which "
                     "mlx-vlm does not read)")
    index = None
    if is_tied(info):
        _write_tied_head(info, directory / TIED_HEAD_FILE)
        config["tie_word_embeddings"] = text["tie_word_embeddings"] = False
        if (info.path / "model.safetensors.index.json").is_file():
            index = json.loads((info.path / "model.safetensors.index.json").read_text())
            index["weight_map"]["lm_head.weight"] = TIED_HEAD_FILE
        fixes.append("lm_head.weight written from the tied embeddings (mlx-vlm's SmolVLM has no tied head)")
    skip = {"config.json", "README.md", "model.safetensors.index.json"}
    for path in info.input_files():
        if path.name not in skip:
            (directory / path.name).symlink_to(path.resolve())
    if index is not None:
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    elif (info.path / "model.safetensors.index.json").is_file():
        (directory / "model.safetensors.index.json").symlink_to((info.path / "model.safetensors.index.json").resolve())
    if info.chat_template is None:
        (directory / "chat_template.jinja").write_text(CHAT_TEMPLATE)
        fixes.append("chat_template.jinja written (the checkpoint has none): SmolVLM2's")
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return fixes


def _write_tied_head(info: CheckpointInfo, path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    for name in info.weight_files:
        with safe_open(info.path / name, "pt") as handle:
            names = handle.keys()  # a safetensors handle is not iterable
            embedding = next((k for k in names if k.endswith("text_model.embed_tokens.weight")), None)
            if embedding is not None:
                save_file({"lm_head.weight": handle.get_tensor(embedding).contiguous()}, str(path))
                return
    raise SmolconvError(f"{info.path} ties lm_head to the embeddings but holds no text_model.embed_tokens.weight",
                        "download the checkpoint again")


# Where a tied head goes in the staged copy (a name no checkpoint uses).
TIED_HEAD_FILE = "smolconv-lm_head.safetensors"
