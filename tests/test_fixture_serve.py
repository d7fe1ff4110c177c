"""The 256m fixture through the real converter and the real llama-server."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
from gguf import GGUFReader

from tests.conftest import free_port, wait_for_http

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
    port = free_port()
    server = subprocess.Popen(
        [toolchain.tool("llama-server"), "-m", text, "--mmproj", mmproj, "--host", "127.0.0.1",
         "--port", str(port), "-c", "2048", "--threads", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps({
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 48, "temperature": 0,
            }).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.load(response)
    finally:
        server.terminate()
        server.wait(timeout=30)
    content = answer["choices"][0]["message"]["content"]
    assert "Paris" in content
    # The fixture's <end_of_utterance> is SmolLM2's end-of-turn row, so the answer stops by itself.
    assert answer["choices"][0]["finish_reason"] == "stop"
