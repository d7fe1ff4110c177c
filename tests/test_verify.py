"""verify against real files: a deliberately damaged F16 GGUF fails the F16 gate (exit 1).

The other gates failing on real files are in test_gates.py. The passing side (the 256m fixture's F16 under the
gate, KLD of every variant) is checked on the build in test_build.py, where `smolconv build` ends with verify.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from gguf import GGUFReader

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
DAMAGED_TENSOR = "blk.15.ffn_down.weight"


def _scale_tensor(path, name: str, factor: float) -> None:
    """Scale one tensor of a GGUF in place (GGUFReader maps the file; "r+" writes through)."""
    reader = GGUFReader(path, "r+")
    tensor = next(t for t in reader.tensors if t.name == name)
    assert tensor.tensor_type.name == "F16"
    tensor.data[...] = (tensor.data.astype(np.float32) * factor).astype(np.float16)
    reader.data.flush()


def test_a_damaged_f16_gguf_fails_verify(toolchain, build_256m_q4_q8, tmp_path):
    damaged = tmp_path / build_256m_q4_q8.name
    shutil.copytree(build_256m_q4_q8, damaged)
    f16 = next(damaged.glob("*-F16.gguf"))
    _scale_tensor(f16, DAMAGED_TENSOR, 1.5)

    result = run_cli("verify", str(damaged), "--type", "Q8_0", "--no-vision", "--threads", "2")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "F16 logits NMSE" in result.stderr, result.stderr
    report = json.loads((damaged / "verify.json").read_text())
    assert report["passed"] is False and report["text"]["max_nmse"] > report["gates"]["max_nmse"]


def test_a_damaged_video_projector_fails_verify_on_the_video_prompt(toolchain, build_256m_q4_q8, tmp_path):
    """The video projector alone is damaged: the image projector's check passes, the video prompt's fails."""
    from smolconv.verify import VerifyOptions, verify
    from tests.test_gates import DAMAGED_PROJECTOR_TENSOR, linked_build

    video = "mmproj-smolvlm2-256m-f16-video.gguf"
    out = linked_build(build_256m_q4_q8, tmp_path / build_256m_q4_q8.name, damaged=video)
    _scale_tensor(out / video, DAMAGED_PROJECTOR_TENSOR, 1.5)

    report = verify(VerifyOptions(out, types=(), threads=2), toolchain)

    assert report.vision.checked and report.vision.nmse < report.gates.max_vision_nmse
    assert report.video.checked and report.video.nmse > report.gates.max_video_nmse
    assert report.failures == [f"video prompt logits NMSE {report.video.nmse:.2e} is over the gate 1e-03"]
    assert json.loads((out / "verify.json").read_text())["passed"] is False
