"""Bad input: one line naming the problem and the fix, exit 2, and no file left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli


@pytest.fixture
def checkpoint(fixture_tiny, tmp_path) -> Path:
    copy = tmp_path / "checkpoint"
    shutil.copytree(fixture_tiny, copy)
    return copy


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []


def _build(checkpoint: Path, out: Path):
    return run_cli("build", str(checkpoint), "--out", str(out))


def test_truncated_safetensors(toolchain, checkpoint, tmp_path):
    weights = checkpoint / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size - 1000)
    before = _files(checkpoint)
    result = _build(checkpoint, tmp_path / "out")
    assert_one_line_error(result, "model.safetensors is truncated", "download it again")
    assert not (tmp_path / "out").exists()
    assert _files(checkpoint) == before


def test_unreadable_safetensors_header(toolchain, checkpoint, tmp_path):
    (checkpoint / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    result = _build(checkpoint, tmp_path / "out")
    assert_one_line_error(result, "unreadable safetensors header")
    assert not (tmp_path / "out").exists()


def test_bert_config(toolchain, checkpoint, tmp_path):
    (checkpoint / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    result = _build(checkpoint, tmp_path / "out")
    assert_one_line_error(result, "unsupported architecture BertModel", "SmolVLMForConditionalGeneration")
    assert not (tmp_path / "out").exists()


def test_missing_text_architectures(toolchain, checkpoint, tmp_path):
    config = json.loads((checkpoint / "config.json").read_text())
    del config["text_config"]["architectures"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    result = _build(checkpoint, tmp_path / "out")
    assert_one_line_error(result, "no text_config.architectures", "VLlama3ForCausalLM")


def test_missing_tokenizer_json(toolchain, checkpoint, tmp_path):
    (checkpoint / "tokenizer.json").unlink()
    result = _build(checkpoint, tmp_path / "out")
    assert_one_line_error(result, "has no tokenizer.json")
    assert not (tmp_path / "out").exists()


def test_missing_preprocessor_config(toolchain, checkpoint, tmp_path):
    (checkpoint / "preprocessor_config.json").unlink()
    result = _build(checkpoint, tmp_path / "out")
    assert_one_line_error(result, "has no preprocessor_config.json")


def test_unwritable_output_directory(toolchain, checkpoint, tmp_path):
    # Tests run as root in CI, where permission bits do not stop writes; a path through a file does.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _build(checkpoint, blocker / "out")
    assert_one_line_error(result, "cannot create output directory", "--out")
    assert _files(tmp_path) == sorted(["a-file", "checkpoint", *(f"checkpoint/{f}" for f in _files(checkpoint))])


def test_users_file_is_not_overwritten_without_force(toolchain, checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "checkpoint-F16.gguf"
    mine.write_text("my own file")
    result = _build(checkpoint, out)
    assert_one_line_error(result, "already exists and was not written by this build", "--force")
    assert mine.read_text() == "my own file"
    assert _files(out) == ["checkpoint-F16.gguf"]


def test_unknown_quant_type(toolchain, checkpoint, tmp_path):
    result = run_cli("build", str(checkpoint), "--out", str(tmp_path / "out"), "--type", "Q4_K_X")
    assert_one_line_error(result, "llama-quantize has no type Q4_K_X", "Q4_K_M")


def test_iq_type_without_imatrix(toolchain, checkpoint, tmp_path):
    result = run_cli("build", str(checkpoint), "--out", str(tmp_path / "out"), "--type", "iq2_xxs")
    assert_one_line_error(result, "IQ2_XXS need an importance matrix", "--imatrix")
