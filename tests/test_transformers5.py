"""Checkpoints saved by transformers 5 (fine-tunes made today) beside the 4.x layout of the Hub originals.

The `*_t5` fixtures are smolconv's fixtures loaded and saved again by the installed transformers 5
(`save_pretrained`, bf16): what they hold is transformers' own output, not a hand-written imitation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from smolconv.core.hashing import sha256_file
from smolconv.core.models import CHAT_TEMPLATE, Layout
from smolconv.fixtures.synth import SynthOptions, synth_checkpoint
from smolconv.llamacpp.gguf_header import read_gguf_header
from smolconv.source.checkpoint import find_chat_template, image_processor_config, inspect_checkpoint
from tests.helpers import run_cli


def test_the_transformers5_layout_is_what_transformers5_saves(fixture_tiny_t5):
    config = json.loads((fixture_tiny_t5 / "config.json").read_text())
    assert config["transformers_version"].startswith("5.")
    assert config["dtype"] == "bfloat16" and "torch_dtype" not in config
    text = config["text_config"]
    assert "rope_theta" not in text and text["rope_parameters"]["rope_theta"] == 100000.0
    tokenizer_config = json.loads((fixture_tiny_t5 / "tokenizer_config.json").read_text())
    assert tokenizer_config["backend"] == "tokenizers"
    assert isinstance(tokenizer_config["extra_special_tokens"], list)
    assert "chat_template" not in tokenizer_config
    assert (fixture_tiny_t5 / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    assert not (fixture_tiny_t5 / "preprocessor_config.json").exists()
    assert not (fixture_tiny_t5 / "chat_template.json").exists()
    processor = json.loads((fixture_tiny_t5 / "processor_config.json").read_text())
    assert processor["processor_class"] == "SmolVLMProcessor"
    assert processor["image_processor"]["size"] == {"longest_edge": 256}


def test_the_transformers5_layout_is_byte_identical_when_written_twice(fixture_tiny_t5, tmp_path):
    again = synth_checkpoint(SynthOptions(shape="tiny", out=tmp_path / "again", layout=Layout.TRANSFORMERS5)).path
    digests = [{p.name: sha256_file(p) for p in sorted(d.iterdir())} for d in (fixture_tiny_t5, again)]
    assert digests[0] == digests[1]


def test_both_layouts_read_the_same(fixture_tiny, fixture_tiny_t5):
    old, new = inspect_checkpoint(fixture_tiny), inspect_checkpoint(fixture_tiny_t5)
    assert old.rope_theta == new.rope_theta == 100000.0
    assert old.dtype == new.dtype == "bfloat16"
    assert old.chat_template.text == new.chat_template.text == CHAT_TEMPLATE
    assert (old.chat_template.file, new.chat_template.file) == ("chat_template.json", "chat_template.jinja")
    # 4.x's preprocessor_config.json names the processor class too; 5.x keeps that beside the nested settings.
    assert image_processor_config(fixture_tiny) == image_processor_config(fixture_tiny_t5) | {
        "processor_class": "SmolVLMProcessor"}
    assert old.tensor_shapes() == new.tensor_shapes()


def test_the_tied_fixture_stores_the_output_layer_once(fixture_256m_t5):
    config = json.loads((fixture_256m_t5 / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    assert not any("lm_head" in name for name in inspect_checkpoint(fixture_256m_t5).tensor_shapes())


def test_a_chat_template_is_found_in_each_of_its_three_places(fixture_tiny, tmp_path):
    for place in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
        folder = tmp_path / place
        folder.mkdir()
        if place == "chat_template.jinja":
            (folder / place).write_text("{{ 'jinja' }}")
        else:
            (folder / place).write_text(json.dumps({"chat_template": "{{ 'json' }}"}))
        found = find_chat_template(folder)
        assert found is not None and found.file == place
    assert find_chat_template(tmp_path) is None


def _built(out: Path) -> dict:
    return json.loads((out / "build.json").read_text())


@pytest.fixture(scope="module")
def built_256m_t5(toolchain, fixture_256m_t5, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build-t5") / "smolvlm2-256m-t5"
    # Every check that reads the checkpoint (text, projector, video); the quantized variant's KL divergence reads
    # GGUFs alike from either layout, and is measured on the shared default build (test_build.py).
    result = run_cli("build", str(fixture_256m_t5), "--out", str(out), "--type", "Q8_0", "--preset", "general",
                     "--no-smoke", "--skip-check", "kld")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "notice:" not in result.stderr  # it has a chat template (chat_template.jinja)
    return out


def test_a_transformers5_checkpoint_builds_and_verifies_within_the_gate(built_256m_t5):
    report = json.loads((built_256m_t5 / "verify.json").read_text())
    assert report["passed"], report.get("failures")
    prompts = report["text"]["prompts"]
    assert len(prompts) == 5 and max(p["nmse"] for p in prompts) < 1e-4
    assert all(p["top1_same"] and p["tokenizer_same"] for p in prompts)
    assert _built(built_256m_t5)["source"]["chat_template"] == "chat_template.jinja"


def test_the_ggufs_rope_base_is_the_checkpoints(built_256m_t5, fixture_256m_t5):
    config = json.loads((fixture_256m_t5 / "config.json").read_text())
    theta = config["text_config"]["rope_parameters"]["rope_theta"]
    (text_model,) = [p for p in built_256m_t5.glob("*-F16.gguf") if not p.name.startswith("mmproj")]
    assert float(read_gguf_header(text_model).get("llama.rope.freq_base")) == np.float32(theta)


def test_an_adapter_merged_onto_a_transformers5_base_builds_and_exports(toolchain, fixture_tiny_t5, tmp_path):
    from smolconv.formats.onnx.export import ExportOptions, export_onnx
    from smolconv.formats.onnx.verify import verify_onnx
    from tests.adapters import make_adapter

    adapter = make_adapter(fixture_tiny_t5, tmp_path / "t5-lora")
    out = tmp_path / "gguf"
    result = run_cli("build", str(fixture_tiny_t5), "--adapter", str(adapter), "--out", str(out), "--type", "Q8_0",
                     "--preset", "general", "--no-smoke", "--skip-check", "kld")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "verify.json").read_text())
    assert report["passed"], report.get("failures")
    assert report["text"]["max_nmse"] < 1e-4 and report["text"]["top1_agree"] == 5
    merged = json.loads((out / "merged" / "config.json").read_text())
    assert merged["dtype"] == "float32" and "torch_dtype" not in merged

    onnx_out = tmp_path / "onnx"
    export_onnx(ExportOptions(str(fixture_tiny_t5), onnx_out, variants=("fp32",), adapter=str(adapter)))
    onnx_report = verify_onnx(onnx_out, variants=())
    assert onnx_report.passed, onnx_report.failures
    assert onnx_report.max_nmse < 1e-5
