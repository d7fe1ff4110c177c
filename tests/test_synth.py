from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors import safe_open

from smolconv.core.errors import SmolconvError
from smolconv.core.hashing import sha256_file
from smolconv.core.models import SHAPES, added_tokens
from smolconv.fixtures.synth import SynthOptions, checkpoint_config, parameter_shapes, synth_checkpoint
from tests.helpers import FIXTURE_VISION_LAYERS, run_cli

HUB_FILES = {
    "config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
    "chat_template.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "model.safetensors", "README.md",
    "smolconv-fixture.json",  # smolconv's own marker (smoke reads it), not a Hub file
}


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(directory.iterdir())}


def test_tiny_is_complete_and_byte_identical_when_written_twice(tmp_path):
    first = run_cli("synth", "--shape", "tiny", "--out", str(tmp_path / "a"))
    second = run_cli("synth", "--shape", "tiny", "--out", str(tmp_path / "b"))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert set(_digests(tmp_path / "a")) == HUB_FILES
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


def test_256m_is_byte_identical_when_written_twice(fixture_256m, tmp_path):
    again = synth_checkpoint(SynthOptions(shape="256m", out=tmp_path / "again",
                                          vision_layers=FIXTURE_VISION_LAYERS)).path
    assert _digests(fixture_256m) == _digests(again)


def test_a_different_seed_changes_the_random_weights_only(fixture_tiny, tmp_path):
    other = synth_checkpoint(SynthOptions(shape="tiny", out=tmp_path / "seed1", seed=1)).path
    before, after = _digests(fixture_tiny), _digests(other)
    assert before["model.safetensors"] != after["model.safetensors"]
    assert before["tokenizer.json"] == after["tokenizer.json"]


def test_config_has_what_the_converter_routes_on(fixture_256m):
    config = json.loads((fixture_256m / "config.json").read_text())
    assert config["architectures"] == ["SmolVLMForConditionalGeneration"]
    assert config["text_config"]["architectures"] == ["VLlama3ForCausalLM"]
    assert config["scale_factor"] == 4
    assert config["image_token_id"] == 49190
    assert config["text_config"]["hidden_size"] == 576 and config["text_config"]["num_hidden_layers"] == 30
    assert config["vision_config"]["image_size"] == 512 and config["vision_config"]["patch_size"] == 16
    # The tests' shallower random tower; the shape itself keeps SigLIP's 12 layers for `synth` without the option.
    assert config["vision_config"]["num_hidden_layers"] == FIXTURE_VISION_LAYERS
    assert checkpoint_config(SHAPES["256m"])["vision_config"]["num_hidden_layers"] == 12
    processor = json.loads((fixture_256m / "processor_config.json").read_text())
    assert processor == {"image_seq_len": 64, "processor_class": "SmolVLMProcessor"}
    preprocessor = json.loads((fixture_256m / "preprocessor_config.json").read_text())
    assert preprocessor["size"] == {"longest_edge": 2048}
    assert preprocessor["max_image_size"] == {"longest_edge": 512}


def test_weights_match_transformers_model_layout(fixture_256m):
    shape = SHAPES["256m"]
    expected = parameter_shapes(checkpoint_config(
        replace(shape, vision=replace(shape.vision, num_hidden_layers=FIXTURE_VISION_LAYERS))))
    with safe_open(fixture_256m / "model.safetensors", "pt") as f:
        found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        dtypes = {f.get_slice(name).get_dtype() for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    assert found == expected
    assert dtypes == {"BF16"}


def test_tokenizer_has_smolvlm2_tokens_and_chat_template(fixture_256m):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fixture_256m)
    assert len(tokenizer) == 49280
    for token_id, token in added_tokens().items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    assert tokenizer.convert_tokens_to_ids("<row_6_col_6>") == 49188
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": [{"type": "text", "text": "Sure?"}]},
    ]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == ("<|im_start|>User:<image>What is this?<end_of_utterance>\n"
                        "Assistant: A cat.<end_of_utterance>\nUser: Sure?<end_of_utterance>\nAssistant:")
    # SmolLM2's digit splitting survives the rebuild: every digit is its own token.
    assert len(tokenizer("12345", add_special_tokens=False).input_ids) == 5


def test_existing_directory_is_not_overwritten_without_force(tmp_path, fixture_tiny):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SmolconvError, match="pass --force"):
        synth_checkpoint(SynthOptions(shape="tiny", out=out))
    assert (out / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no staging directory left behind
    synth_checkpoint(SynthOptions(shape="tiny", out=out, force=True))
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").is_file()


@pytest.mark.parametrize(("shape", "low", "high"), [("500m", 0.45e9, 0.55e9), ("2.2b", 2.1e9, 2.35e9)])
def test_full_size_shapes_have_the_published_parameter_counts(shape, low, high):
    import math

    shapes = parameter_shapes(checkpoint_config(SHAPES[shape]))
    total = sum(math.prod(s) for s in shapes.values())
    assert low < total < high


def test_smollm2_weights_read_from_the_gguf_answer_like_smollm2():
    # The GGUF's tensors are renamed to transformers' names and q/k are un-permuted by smolconv's own reader
    # (transformers' GGUF loading took 44 s): a wrong name or permutation would not answer this.
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from smolconv.fixtures.synth import _llama_state_dict, smollm2_gguf
    from smolconv.llamacpp.gguf_header import read_gguf_header

    path = smollm2_gguf()
    header = read_gguf_header(path)
    state = _llama_state_dict(path)
    config = LlamaConfig(
        vocab_size=header.get("llama.vocab_size"), hidden_size=header.get("llama.embedding_length"),
        intermediate_size=header.get("llama.feed_forward_length"), num_hidden_layers=header.get("llama.block_count"),
        num_attention_heads=header.get("llama.attention.head_count"),
        num_key_value_heads=header.get("llama.attention.head_count_kv"),
        rope_theta=header.get("llama.rope.freq_base"),
        rms_norm_eps=header.get("llama.attention.layer_norm_rms_epsilon"),
        tie_word_embeddings="lm_head.weight" not in state)
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected
    model.tie_weights()
    ids = {tok: i for i, tok in enumerate(read_gguf_header(path, arrays=("tokenizer.ggml.tokens",))
                                            .fields["tokenizer.ggml.tokens"].values)}
    prompt = [ids[t] for t in ("The", "Ġcapital", "Ġof", "ĠFrance", "Ġis")]
    with torch.no_grad():
        top = int(model(torch.tensor([prompt])).logits[0, -1].argmax())
    assert top == ids["ĠParis"]

    # The answer survives a wrong q/k order, so check that too: llama.cpp's converter stores q and k with each
    # head's rotary halves interleaved; doing that to what smolconv read gives the GGUF's tensor back.
    import numpy as np

    from smolconv.llamacpp.gguf_header import dequantized_tensors

    wanted = {"blk.3.attn_q.weight": ("q_proj", config.num_attention_heads),
              "blk.3.attn_k.weight": ("k_proj", config.num_key_value_heads)}
    stored = {tensor.name: values for tensor, values in dequantized_tensors(path, frozenset(wanted))}
    for gguf_name, (hf_name, heads) in wanted.items():
        ours = state[f"model.layers.3.self_attn.{hf_name}.weight"].numpy()
        interleaved = ours.reshape(heads, 2, -1, ours.shape[1]).swapaxes(1, 2).reshape(ours.shape)
        assert np.array_equal(interleaved, stored[gguf_name])
        assert not np.array_equal(ours, stored[gguf_name])


def test_a_vision_tower_needs_a_layer(tmp_path):
    with pytest.raises(SmolconvError, match="vision_layers is 0"):
        synth_checkpoint(SynthOptions(shape="tiny", out=tmp_path / "x", vision_layers=0))
    assert not (tmp_path / "x").exists()
