"""Fine-tunes: PEFT adapters made with peft on the fixtures, through the real merge, converters and llama-server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gguf import GGUFReader

from smolconv.core.hashing import sha256_file
from smolconv.pipeline import BuildOptions, build
from tests.adapters import TEXT_ONLY_TARGETS, make_adapter
from tests.fake_ollama import MEDIA_ADAPTER, MEDIA_MODEL, MEDIA_PROJECTOR, FakeOllama
from tests.helpers import assert_one_line_error, invoke

# --------------------------------------------------------------------------------------------------
# Refused before any long step: one line, exit 2, nothing written


@pytest.fixture(scope="module")
def tiny_adapter(fixture_tiny, tmp_path_factory) -> Path:
    return make_adapter(fixture_tiny, tmp_path_factory.mktemp("adapters") / "tiny-recipe-lora")


def _build_refused(model: Path, adapter: Path, out: Path, *extra: str):
    result = invoke("build", str(model), "--adapter", str(adapter), "--out", str(out), "--no-verify", "--no-smoke",
                    *extra)
    assert not out.exists(), f"{out} was written: {list(out.rglob('*'))}"
    return result


def test_an_adapter_for_another_base_is_refused_unless_forced(fixture_tiny, tiny_adapter, tmp_path):
    other = shutil.copytree(fixture_tiny, tmp_path / "some-other-model")
    line = assert_one_line_error(_build_refused(other, tiny_adapter, tmp_path / "out"), "trained on", "--force")
    assert str(fixture_tiny) in line


def test_an_adapter_whose_shapes_do_not_fit_is_refused_even_forced(fixture_256m, tiny_adapter, tmp_path):
    assert_one_line_error(_build_refused(fixture_256m, tiny_adapter, tmp_path / "out", "--force"),
                             "does not fit", "lora_")


def test_a_truncated_adapter_file_is_refused(fixture_tiny, tiny_adapter, tmp_path):
    broken = shutil.copytree(tiny_adapter, tmp_path / "broken")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_one_line_error(_build_refused(fixture_tiny, broken, tmp_path / "out"), "truncated", "adapter_model")


def test_a_peft_adapter_that_is_not_lora_is_refused_by_name(fixture_tiny, tmp_path):
    import torch
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(fixture_tiny, dtype=torch.float32)
    get_peft_model(model, IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                    feedforward_modules=["down_proj"])).save_pretrained(tmp_path / "ia3")
    assert_one_line_error(_build_refused(fixture_tiny, tmp_path / "ia3", tmp_path / "out"), "IA3", "LoRA")


def test_the_recipe_adapter_cannot_be_a_gguf_lora_and_the_vision_modules_are_named(fixture_tiny, tiny_adapter,
                                                                                  tmp_path):
    refused = _build_refused(fixture_tiny, tiny_adapter, tmp_path / "out", "--adapter-format", "gguf")
    line = assert_one_line_error(refused, "vision tower", "q_proj", "--adapter-format merge")
    assert "layers" in line


@pytest.mark.parametrize("config, words", [
    ({"use_dora": True}, ("DoRA",)),
    ({"modules_to_save": ["lm_head"]}, ("lm_head", "modules_to_save")),
])
def test_what_a_gguf_lora_cannot_hold_is_refused_by_name(fixture_tiny, tmp_path, config, words):
    adapter = make_adapter(fixture_tiny, tmp_path / "adapter", targets=TEXT_ONLY_TARGETS, **config)
    assert_one_line_error(_build_refused(fixture_tiny, adapter, tmp_path / "out", "--adapter-format", "gguf"), *words)


def test_inspect_reads_the_recipe_adapter(fixture_tiny, tiny_adapter):
    from smolconv.source.adapter import check_adapter, inspect_adapter
    from smolconv.source.checkpoint import inspect_checkpoint

    info = inspect_adapter(tiny_adapter)
    check_adapter(info, inspect_checkpoint(fixture_tiny), None, "merge")
    assert info.parts == ["vision", "text"] and info.r == 8 and info.alpha == 16
    assert {t.kind for t in info.tensors} == {"lora_A", "lora_B"}
    assert info.base_model == str(fixture_tiny)


# --------------------------------------------------------------------------------------------------
# merge: the recipe adapter (vision tower included) merged in float32, converted, checked against peft


# The merged fine-tune is a checkpoint like any other once merged: its quantization's KL divergence is measured on
# the shared default build (test_build.py), and left out here.
MERGED_VERIFY_SKIP = frozenset({"kld"})


@pytest.fixture(scope="module")
def merged_build(toolchain, fixture_256m, tmp_path_factory):
    adapter = make_adapter(fixture_256m, tmp_path_factory.mktemp("adapters") / "recipe-lora", seed=1)
    out = tmp_path_factory.mktemp("merged") / "out"
    result = build(BuildOptions(model=str(fixture_256m), out_dir=out, types=("Q8_0",), adapter=str(adapter),
                                verify_skip=MERGED_VERIFY_SKIP, smoke=False), toolchain)
    return result, adapter


def test_merged_f16_matches_base_plus_adapter_and_is_not_the_base(merged_build):
    result, _ = merged_build
    report = result.verified
    assert report is not None and report.passed, report.failures
    assert report.max_nmse <= 1e-4 and all(r.top1_same for r in report.text)
    # The fine-tune moved the model: on the very prompts that match, base + adapter is far from the base (F16's
    # own rounding is about 1e-6 nats; this random adapter moves each prompt by 5e-3 to 0.3).
    assert all(r.adapter_kl > 1e-3 for r in report.text), [r.adapter_kl for r in report.text]
    # The recipe adapter changes SigLIP: the projector matches the adapted vision tower, not the base's.
    assert report.vision.checked and report.vision.nmse < 1e-4


def test_merged_checkpoint_is_complete_float32_and_recorded(merged_build, fixture_256m):
    from smolconv.source.checkpoint import inspect_checkpoint

    result, adapter = merged_build
    out = result.out_dir
    merged = out / "merged"
    info = inspect_checkpoint(merged)  # the same checks a checkpoint from the Hub gets
    assert json.loads((merged / "config.json").read_text())["torch_dtype"] == "float32"
    for name in ("tokenizer.json", "preprocessor_config.json", "chat_template.json", "README.md"):
        assert (merged / name).is_file()
    from safetensors import safe_open

    with safe_open(merged / info.weight_files[0], "np") as f:
        assert str(f.get_tensor("model.text_model.norm.weight").dtype) == "float32"
    manifest = json.loads((out / "build.json").read_text())
    record = manifest["adapter"]
    assert record["format"] == "merge" and record["merged"] == "merged"
    assert record["r"] == 8 and record["alpha"] == 16 and record["use_dora"] is False
    assert record["parts"] == ["vision", "text"] and "q_proj" in record["target_modules"]
    assert record["files"]["adapter_model.safetensors"] == sha256_file(adapter / "adapter_model.safetensors")
    assert record["path"] == str(adapter.resolve())
    # The source is still the base, and the GGUF files carry the fine-tune's name.
    assert manifest["source"]["files"]["model.safetensors"] == sha256_file(fixture_256m / "model.safetensors")
    assert (out / "recipe-lora-F16.gguf").is_file() and (out / "mmproj-recipe-lora-f16.gguf").is_file()
    modelfile = (out / "recipe-lora-256m-q8_0.Modelfile").read_text()
    assert "+ adapter" in modelfile.splitlines()[1] and "ADAPTER" not in modelfile


def test_publishing_a_merged_fine_tune_names_it_and_calls_it_a_finetune(merged_build, tmp_path):
    from huggingface_hub import ModelCard

    from smolconv.hub.publish import PublishOptions, publish

    result, _ = merged_build
    base = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
    published = publish(PublishOptions(result.out_dir, "you/recipe-lora-GGUF", base_model=base,
                                       dry_run=tmp_path / "repo"))
    names = {p.name for p in published.folder.iterdir()}
    assert {"recipe-lora-Q8_0.gguf", "mmproj-recipe-lora-f16.gguf", "template", "params", "README.md"} <= names
    card = ModelCard.load(published.folder / "README.md")
    assert card.data.base_model == base and card.data.base_model_relation == "finetune"
    assert "recipe-lora" in card.text and str(result.out_dir) not in card.text


def test_a_rebuild_with_the_same_adapter_redoes_nothing(merged_build, toolchain):
    result, adapter = merged_build
    again = build(BuildOptions(model=str(result.source.path), out_dir=result.out_dir, types=("Q8_0",),
                               adapter=str(adapter), verify_skip=MERGED_VERIFY_SKIP, smoke=False), toolchain)
    assert again.adapter.skipped and again.converted.skipped and all(r.skipped for r in again.quantized.reports)
    assert again.verify_reused


# --------------------------------------------------------------------------------------------------
# gguf: a text-only adapter as a GGUF LoRA beside the base, served with --lora


@pytest.fixture(scope="module")
def gguf_build(toolchain, fixture_256m, tmp_path_factory):
    # The text model alone carries the whole change: drawn a little stronger than the recipe adapter's.
    adapter = make_adapter(fixture_256m, tmp_path_factory.mktemp("adapters") / "text-lora",
                           targets=TEXT_ONLY_TARGETS, seed=2, std=0.1)
    out = tmp_path_factory.mktemp("gguf") / "out"
    result = build(BuildOptions(model=str(fixture_256m), out_dir=out, types=("Q8_0",), adapter=str(adapter),
                                adapter_format="gguf", smoke=False), toolchain)
    return result


def test_gguf_lora_is_an_adapter_gguf_named_in_every_modelfile(gguf_build):
    out = gguf_build.out_dir
    lora = out / "text-lora-LoRA-F32.gguf"
    reader = GGUFReader(lora)
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("adapter.lora.alpha").contents() == 16
    assert not any("v." in t.name[:2] or "mm." in t.name[:3] for t in reader.tensors)
    modelfiles = sorted(out.glob("*.Modelfile"))
    assert len(modelfiles) == 5  # one variant, four presets and the video model
    for path in modelfiles:
        assert f"ADAPTER ./{lora.name}" in path.read_text().splitlines()
        assert path.name.startswith("text-lora-256m-q8_0")
    # The base is converted under its own name: other adapters can share it.
    assert (out / "smolvlm2-256m-F16.gguf").is_file()


def test_llama_server_with_lora_matches_base_plus_adapter(gguf_build):
    report = gguf_build.verified
    assert report is not None and report.passed, report.failures
    assert report.max_nmse <= 1e-4 and all(r.top1_same for r in report.text)
    assert all(r.adapter_kl > 0.01 for r in report.text), [r.adapter_kl for r in report.text]


def test_package_create_sends_the_adapter_as_an_adapter_layer(gguf_build, tmp_path):
    import os

    out = gguf_build.out_dir
    with FakeOllama(version="0.34.0") as fake:  # the last Ollama that creates a model with an ADAPTER
        env = {**os.environ, "OLLAMA_HOST": fake.host, "PATH": str(tmp_path), "HOME": str(tmp_path)}
        done = invoke("package", str(out), "--preset", "general", "--create", "--via", "api", env=env)
        assert done.returncode == 0, done.stderr
        # The variant's model and its video model, each with the adapter as an adapter layer.
        assert set(fake.state.manifests) == {"text-lora:256m-q8_0", "text-lora:256m-q8_0-video"}
        for layers in fake.state.manifests.values():
            kinds = sorted(layer["mediaType"] for layer in layers)
            assert kinds == sorted([MEDIA_MODEL, MEDIA_PROJECTOR, MEDIA_ADAPTER])
            adapter_layer = next(layer for layer in layers if layer["mediaType"] == MEDIA_ADAPTER)
            assert adapter_layer["digest"] == "sha256:" + sha256_file(out / "text-lora-LoRA-F32.gguf")


def test_package_create_of_a_gguf_lora_on_ollama_0_34_1_is_refused_before_any_upload(gguf_build, tmp_path):
    import os

    with FakeOllama(version="0.34.1") as fake:  # it refuses such a create too: this must be smolconv's line
        env = {**os.environ, "OLLAMA_HOST": fake.host, "PATH": str(tmp_path), "HOME": str(tmp_path)}
        refused = invoke("package", str(gguf_build.out_dir), "--preset", "general", "--create", "--via", "api",
                         env=env)
        assert_one_line_error(refused, "Ollama 0.34.1 (the server at", "ADAPTER", "--adapter-format merge", "--lora")
        assert fake.state.uploads == [] and fake.state.creates == []
        assert fake.state.requests == [("GET", "/api/version")]


def test_publishing_a_gguf_lora_build_ships_the_adapter_file(gguf_build, tmp_path):
    from huggingface_hub import ModelCard

    from smolconv.hub.publish import PublishOptions, publish

    published = publish(PublishOptions(gguf_build.out_dir, "you/text-lora-GGUF",
                                       base_model="HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
                                       dry_run=tmp_path / "repo"))
    lora = published.folder / "text-lora-LoRA-F32.gguf"
    assert lora.is_file() and sha256_file(lora) == sha256_file(gguf_build.out_dir / lora.name)
    assert ModelCard.load(published.folder / "README.md").data.base_model_relation == "adapter"


def test_a_new_adapter_on_the_same_base_converts_only_the_adapter(gguf_build, fixture_256m, toolchain, tmp_path):
    out = gguf_build.out_dir
    before = json.loads((out / "build.json").read_text())["steps"]
    second = make_adapter(fixture_256m, tmp_path / "second-lora", targets=TEXT_ONLY_TARGETS, seed=3)
    result = build(BuildOptions(model=str(fixture_256m), out_dir=out, types=("Q8_0",), adapter=str(second),
                                adapter_format="gguf", verify=False, smoke=False), toolchain)
    assert result.converted.skipped and all(r.skipped for r in result.quantized.reports)
    assert not result.adapter.skipped
    after = json.loads((out / "build.json").read_text())
    assert after["steps"]["convert"] == before["convert"]
    assert after["steps"]["quantize:Q8_0"] == before["quantize:Q8_0"]
    assert after["steps"]["convert-adapter"]["outputs"] == ["second-lora-LoRA-F32.gguf"]
    assert not (out / "text-lora-LoRA-F32.gguf").exists()
    assert after["adapter"]["name"] == "second-lora"
    assert any("ADAPTER ./second-lora-LoRA-F32.gguf" in p.read_text() for p in out.glob("second-lora-*.Modelfile"))


def test_modules_to_save_and_trainable_token_rows_are_carried_through_the_merge(fixture_tiny, tmp_path):
    """A fully trained head and trained embedding rows end up in the merged checkpoint as the adapter has them."""
    import numpy as np
    from safetensors import safe_open

    from smolconv.source.adapter import check_adapter, inspect_adapter
    from smolconv.source.checkpoint import inspect_checkpoint
    from smolconv.source.merge import MergeOptions, merge

    rows = [49190, 49279]  # <image> and <end_of_utterance>
    adapter_dir = make_adapter(fixture_tiny, tmp_path / "heads", targets=TEXT_ONLY_TARGETS,
                               modules_to_save=["lm_head"], trainable_token_indices={"embed_tokens": rows})
    with safe_open(adapter_dir / "adapter_model.safetensors", "np") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    head_key = next(k for k in saved if k.endswith("lm_head.weight"))
    delta_key = next(k for k in saved if "trainable_tokens_delta" in k)
    # Train them a little: a head and rows unlike the base's.
    rng = np.random.default_rng(0)
    saved[head_key] = saved[head_key] + rng.normal(0, 0.05, saved[head_key].shape).astype(np.float32)
    saved[delta_key] = rng.normal(0, 0.05, saved[delta_key].shape).astype(np.float32)
    from safetensors.numpy import save_file

    save_file(saved, adapter_dir / "adapter_model.safetensors", metadata={"format": "pt"})

    base = inspect_checkpoint(fixture_tiny)
    adapter = inspect_adapter(adapter_dir)
    check_adapter(adapter, base, None, "merge")
    assert {t.kind for t in adapter.tensors} >= {"full", "token_rows"}
    result = merge(MergeOptions(base, adapter, tmp_path / "out"))
    merged = inspect_checkpoint(result.path)
    with safe_open(result.path / merged.weight_files[0], "np") as f:
        head = f.get_tensor("lm_head.weight")
        embed = f.get_tensor("model.text_model.embed_tokens.weight")
    np.testing.assert_allclose(head, saved[head_key], atol=1e-6)
    with safe_open(fixture_tiny / base.weight_files[0], "pt") as f:
        base_embed = f.get_tensor("model.text_model.embed_tokens.weight").float().numpy()
    np.testing.assert_allclose(embed[rows], saved[delta_key], atol=1e-6)  # trainable tokens replace the rows
    untouched = np.setdiff1d(np.arange(embed.shape[0]), rows)[:1000]
    np.testing.assert_array_equal(embed[untouched], base_embed[untouched])
