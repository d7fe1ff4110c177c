"""The 256m fixture through the real converter and the real llama-server."""

from __future__ import annotations

import pytest
from gguf import GGUFReader

from tests.conftest import chat_with_llama_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted_256m(toolchain, fixture_256m, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    text = out / "SmolVLM2-256M-fixture-F16.gguf"
    mmproj = out / "mmproj-SmolVLM2-256M-fixture-f16.gguf"
    toolchain.run_converter(fixture_256m, text, outtype="f16")
    toolchain.run_converter(fixture_256m, mmproj, outtype="f16", mmproj=True)
    return text, mmproj


def _field(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


def test_converted_files_read_back(converted_256m):
    text, mmproj = converted_256m
    model = GGUFReader(text)
    assert _field(model, "general.architecture") == "llama"
    assert _field(model, "llama.block_count") == 30
    assert _field(model, "tokenizer.ggml.pre") == "smollm"  # the rebuilt tokenizer is SmolLM's
    assert len(_field(model, "tokenizer.ggml.tokens")) == 49280
    assert _field(model, "tokenizer.ggml.eos_token_id") == 49279
    projector = GGUFReader(mmproj)
    assert _field(projector, "general.type") == "mmproj"
    assert _field(projector, "clip.projector_type") == "idefics3"
    assert _field(projector, "clip.vision.projector.scale_factor") == 4
    assert _field(projector, "clip.vision.image_size") == 512


def test_llama_server_answers_paris(toolchain, converted_256m):
    text, mmproj = converted_256m
    answer = chat_with_llama_server(toolchain, text, mmproj, "What is the capital of France?")
    assert "Paris" in answer["choices"][0]["message"]["content"]
    # The fixture's <end_of_utterance> is SmolLM2's end-of-turn row, so the answer stops by itself.
    assert answer["choices"][0]["finish_reason"] == "stop"
