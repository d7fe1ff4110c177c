"""Bad input: one line naming the problem and the fix, exit 2, and no file left behind."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, invoke, run_cli


@pytest.fixture
def checkpoint(fixture_tiny, tmp_path) -> Path:
    copy = tmp_path / "checkpoint"
    shutil.copytree(fixture_tiny, copy)
    return copy


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []


def _build(checkpoint: Path, out: Path):
    return invoke("build", str(checkpoint), "--out", str(out))


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


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_a_config_whose_shapes_disagree_with_the_weights(toolchain, checkpoint, tmp_path):
    _edit_json(checkpoint / "config.json", lambda c: c["text_config"].update(hidden_size=512))
    result = _build(checkpoint, tmp_path / "out")
    line = assert_one_line_error(result, "does not match the weights", "text_model.embed_tokens.weight")
    assert "[49280, 512]" in line and "[49280, 256]" in line
    assert not (tmp_path / "out").exists()


def test_a_config_whose_layer_count_disagrees_with_the_weights(toolchain, checkpoint, tmp_path):
    _edit_json(checkpoint / "config.json", lambda c: c["text_config"].update(num_hidden_layers=3))
    assert_one_line_error(_build(checkpoint, tmp_path / "out"), "num_hidden_layers is 3", "hold 2 layers")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_a_tokenizer_file_that_is_not_json(toolchain, checkpoint, tmp_path, name):
    (checkpoint / name).write_text((checkpoint / name).read_text()[:-40])
    assert_one_line_error(_build(checkpoint, tmp_path / "out"), f"{name} is not valid JSON", "download it again")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layout", ["rope_theta", "rope_parameters"])
def test_a_config_without_rope_theta_is_refused_not_defaulted(toolchain, checkpoint, tmp_path, layout):
    def drop(config):
        text = config["text_config"]
        text.pop("rope_theta")
        if layout == "rope_parameters":
            text["rope_parameters"] = {"rope_type": "default"}

    _edit_json(checkpoint / "config.json", drop)
    assert_one_line_error(_build(checkpoint, tmp_path / "out"), "no usable text_config.rope_theta", "100000.0")
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_without_a_chat_template_says_so(toolchain, checkpoint, tmp_path):
    (checkpoint / "chat_template.json").unlink()
    _edit_json(checkpoint / "tokenizer_config.json", lambda c: c.pop("chat_template"))
    result = run_cli("convert", str(checkpoint), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "has no chat template" in notices[0] and "SmolVLM2's" in notices[0]
    assert json.loads((tmp_path / "out" / "build.json").read_text())["source"]["chat_template"] is None


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
    result = invoke("build", str(checkpoint), "--out", str(tmp_path / "out"), "--type", "Q4_K_X")
    assert_one_line_error(result, "llama-quantize has no type Q4_K_X", "Q4_K_M")


def test_iq_type_without_imatrix(toolchain, checkpoint, tmp_path):
    result = invoke("build", str(checkpoint), "--out", str(tmp_path / "out"), "--type", "iq2_xxs")
    assert_one_line_error(result, "IQ2_XXS need an importance matrix", "--imatrix")


# --------------------------------------------------------------------------------------------------
# Images, damaged GGUFs, a broken build.json, a full disk, a toolchain with deleted binaries, odd paths


def _refused(call, *needles: str) -> None:
    """A stage function refused with a one-line SmolconvError (exit 2) holding every needle."""
    from smolconv.core.errors import SmolconvError

    with pytest.raises(SmolconvError) as info:
        call()
    line = info.value.one_line()
    assert info.value.exit_code == 2 and "\n" not in line
    for needle in needles:
        assert needle in line, line


def test_decompression_bomb_image(tmp_path):
    from PIL import Image

    from smolconv.media.images import load_image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 megapixels in a few kB: refused before decoding
    assert bomb.stat().st_size < 1_000_000
    _refused(lambda: load_image(bomb), "megapixels, a decompression bomb", "scale it down")


def test_empty_image_file(tmp_path):
    from smolconv.media.images import load_image

    (tmp_path / "empty.png").write_bytes(b"")
    _refused(lambda: load_image(tmp_path / "empty.png"), "is empty", "JPEG, PNG or WebP")


def test_text_file_as_image(tmp_path):
    from smolconv.media.images import load_image

    (tmp_path / "notes.jpg").write_text("not a picture")
    _refused(lambda: load_image(tmp_path / "notes.jpg"), "not an image file", "JPEG, PNG or WebP")


@pytest.fixture
def build_copy(build_tiny_q4, tmp_path) -> Path:
    """The shared build, hard-linked (instant); replace a file by unlinking it first, never write through a link."""
    copy = tmp_path / "build"
    shutil.copytree(build_tiny_q4, copy, copy_function=os.link)
    return copy


def _damage(path: Path, *, magic: bool = False) -> None:
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(b"XXXX" + data[4:] if magic else data[:-1000])


def test_quantize_gguf_with_wrong_magic(toolchain, build_copy):
    f16 = next(build_copy.glob("*-F16.gguf"))
    _damage(f16, magic=True)
    before = _files(build_copy)
    result = invoke("quantize", str(build_copy), "--type", "Q5_K_M")
    assert_one_line_error(result, f16.name, "not a readable GGUF file", "magic", "--force")
    assert _files(build_copy) == before


def test_plan_gguf_with_truncated_tensor_data(build_copy):
    q4 = next(build_copy.glob("*-Q4_K_M.gguf"))
    _damage(q4)
    result = invoke("plan", str(build_copy))
    assert_one_line_error(result, q4.name, "is truncated", "tensor data", "--force")


def test_serve_gguf_with_truncated_tensor_data(toolchain, build_copy):
    q4 = next(build_copy.glob("*-Q4_K_M.gguf"))
    _damage(q4)
    result = run_cli("serve", str(build_copy), "--type", "Q4_K_M", "--port", "1")
    assert_one_line_error(result, q4.name, "is truncated")


def test_build_json_edited_into_invalid_json(toolchain, build_copy):
    record = build_copy / "build.json"
    text = record.read_text()
    record.unlink()
    record.write_text(text.replace('"outputs": {', '"outputs": {,', 1))
    result = invoke("package", str(build_copy))
    assert_one_line_error(result, "build.json is not valid JSON", "line", "undo the hand edit")
    assert record.read_text().count('"outputs": {,') == 1  # left as the user left it


def test_toolchain_binaries_deleted_after_setup(toolchain, build_copy, tmp_path):
    """A copy of the installed toolchain (links to its binaries) in a cache of its own, one binary removed."""
    from smolconv.llamacpp.toolchain import MARKER

    cache = tmp_path / "cache"
    install = cache / "smolconv" / "llama.cpp" / toolchain.bin_dir.parent.name
    (install / "bin").mkdir(parents=True)
    shutil.copy(toolchain.bin_dir.parent / MARKER, install / MARKER)
    (install / "src").symlink_to(toolchain.root)
    for tool in toolchain.bin_dir.iterdir():
        if tool.name != "llama-quantize":
            (install / "bin" / tool.name).symlink_to(tool)
    env = {k: v for k, v in os.environ.items() if k != "SMOLCONV_LLAMA_CPP"} | {"XDG_CACHE_HOME": str(cache)}
    result = invoke("quantize", str(build_copy), "--type", "Q5_K_M", env=env)
    assert_one_line_error(result, "missing llama-quantize", "deleted after setup", "smolconv setup --rebuild")


def test_output_on_a_full_disk(toolchain, checkpoint, tmp_path):
    """A file size limit (RLIMIT_FSIZE, inherited by the converter) stands in for a full disk: writes fail EFBIG."""
    import resource
    import signal
    import subprocess
    import sys

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead of failing it
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))

    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "smolconv", "convert", str(checkpoint), "--out", str(out)],
                            capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size)
    # a full disk is no fault of the input: exit 1, one line naming the folder
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "disk is full or a file size limit was reached" in lines[0] and f"writing to {out}" in lines[0]
    assert "free space" in lines[0]
    assert not list(out.glob("*.gguf")) and not list(out.glob(".*.partial"))


def test_checkpoint_path_with_spaces_and_non_ascii(toolchain, checkpoint, tmp_path):
    odd = tmp_path / "my checkpoints" / "SmolVLM2 ünïcødé 模型"
    odd.parent.mkdir()
    checkpoint.rename(odd)
    out = tmp_path / "out dir ✓"
    result = run_cli("convert", str(odd), "--out", str(out))
    assert result.returncode == 0, result.stderr
    import gguf

    (text,) = [p for p in out.glob("*.gguf") if not p.name.startswith("mmproj")]
    assert gguf.GGUFReader(text).tensors
