"""verify against real files: a deliberately damaged F16 GGUF fails the F16 gate.

The passing side (the 256m fixture's F16 under the gate, KLD of every variant) is checked on the build in
test_build.py, where `smolconv build` ends with verify.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from gguf import GGUFReader

from smolconv.verify import DEFAULT_PROMPTS, VerifyOptions, verify

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

    report = verify(VerifyOptions(damaged, types=(), vision=False, prompts=DEFAULT_PROMPTS[:2],
                                  threads=2), toolchain)

    assert not report.passed
    assert report.max_nmse > report.gates.max_nmse
    assert any("F16 logits NMSE" in failure for failure in report.failures), report.failures
    assert report.path.is_file() and '"passed": false' in report.path.read_text()
