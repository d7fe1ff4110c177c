"""verify against real files: a deliberately damaged F16 GGUF fails the F16 gate (exit 1).

The other gates failing on real files are in test_gates.py. The passing side (the 256m fixture's F16 under the
gate, KLD of every variant) is checked on the build in test_build.py, where `smolconv build` ends with verify.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from gguf import GGUFReader

from tests.helpers import DAMAGED_PROJECTOR_TENSOR, linked_build, run_cli, tool_threads

pytestmark = pytest.mark.slow
DAMAGED_TENSOR = "blk.1.ffn_down.weight"  # the tiny fixture has two layers


def _scale_tensor(path, name: str, factor: float) -> None:
    """Scale one tensor of a GGUF in place (GGUFReader maps the file; "r+" writes through)."""
    reader = GGUFReader(path, "r+")
    tensor = next(t for t in reader.tensors if t.name == name)
    assert tensor.tensor_type.name == "F16"
    tensor.data[...] = (tensor.data.astype(np.float32) * factor).astype(np.float16)
    reader.data.flush()


def test_a_damaged_f16_gguf_fails_verify(toolchain, build_tiny_q4, tmp_path):
    f16 = next(build_tiny_q4.glob("*-F16.gguf")).name
    damaged = linked_build(build_tiny_q4, tmp_path / build_tiny_q4.name, damaged=f16)
    _scale_tensor(damaged / f16, DAMAGED_TENSOR, 1.5)

    # The damage is in the text model: the checks of the projectors and the quantized variant are left out.
    result = run_cli("verify", str(damaged), "--type", "Q4_K_M", "--no-vision", "--skip-check", "kld",
                     "--threads", tool_threads())

    assert result.returncode == 1, result.stdout + result.stderr
    assert "F16 logits NMSE" in result.stderr, result.stderr
    report = json.loads((damaged / "verify.json").read_text())
    assert report["passed"] is False and report["text"]["max_nmse"] > report["gates"]["max_nmse"]


def test_a_damaged_video_projector_fails_verify_on_the_video_prompt(toolchain, build_256m_q4_q8, tmp_path):
    """The video projector alone is damaged: the image projector's check passes, the video prompt's fails."""
    from smolconv.formats.gguf.verify import VerifyOptions, verify

    video = "mmproj-smolvlm2-256m-f16-video.gguf"
    out = linked_build(build_256m_q4_q8, tmp_path / build_256m_q4_q8.name, damaged=video)
    _scale_tensor(out / video, DAMAGED_PROJECTOR_TENSOR, 1.5)

    report = verify(VerifyOptions(out, types=(), threads=int(tool_threads())), toolchain)

    assert report.vision.checked and report.vision.nmse < report.gates.max_vision_nmse
    assert report.video.checked and report.video.nmse > report.gates.max_video_nmse
    assert report.failures == [f"video prompt logits NMSE {report.video.nmse:.2e} is over the gate 1e-03"]
    assert json.loads((out / "verify.json").read_text())["passed"] is False


def test_the_probabilities_of_a_token_held_back_as_incomplete_utf8_are_read(toolchain, build_tiny_q4):
    """llama-server sends no probabilities for a greedy token whose text is an incomplete UTF-8 sequence when it
    generates only that token. The tiny fixture's F16 answers these ids with one (" \\xe2..."); verify still gets
    the first position's distribution."""
    import httpx

    from smolconv.formats.gguf.verify import gguf_completion, text_server
    from smolconv.record.builddir import BuildDir

    ids = [504, 3575, 314, 4649, 282]  # "The capital is France of"
    f16 = next(v for v in BuildDir.open(build_tiny_q4).variants() if v.name == "F16")
    with text_server(f16, toolchain, threads=int(tool_threads())) as server:
        held = httpx.post(f"{server.url}/completion", json={"prompt": ids, "n_predict": 1, "n_probs": 5,
                                                             "temperature": 0}, timeout=60).json()
        assert "completion_probabilities" not in held and "\ufffd" in held["content"]  # the case arises
        logprobs, answer = gguf_completion(server.url, ids, f16.text.n_vocab)
    first = answer["completion_probabilities"][0]
    assert int(np.argmax(logprobs)) == first["id"] and np.isfinite(logprobs).all()
    assert abs(np.logaddexp.reduce(logprobs)) < 1e-3  # a whole distribution over the vocabulary
