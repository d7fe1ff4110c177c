"""verify's default KLD gates are per model size (smolconv.reference.gates, chosen from scripts/kld_gates.py): a
healthy 256M build passes its own verify, where the earlier 8B-scale defaults failed it, and a damaged quant fails.

On real files: the shared 256m build (real SmolLM2-135M text), verified against its checkpoint without the fixture
marker, so that verify treats it as a real checkpoint and applies the defaults (a fixture is measured, not gated).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from smolconv.core.models import SHAPES
from smolconv.reference.gates import DEFAULT_MAX_KLD, DEFAULT_MAX_KLD_BY_SIZE, Gates, model_size
from smolconv.source.checkpoint import FIXTURE_MARKER
from tests.helpers import invoke, linked_build, tool_threads

NAME = "smolvlm2-256m"


def test_the_default_gates_follow_the_model_size():
    assert {n: model_size(s.text.hidden_size) for n, s in SHAPES.items()} == \
        {"tiny": None, "256m": "256m", "500m": "500m", "2.2b": "2.2b"}
    assert Gates(size="256m").kld_gate("Q4_K_M") == DEFAULT_MAX_KLD_BY_SIZE["256m"]["Q4_K_M"] == 0.18
    assert Gates(size="2.2b").kld_gate("Q8_0") == 0.005 and Gates().kld_gate("Q8_0") == DEFAULT_MAX_KLD["Q8_0"]
    assert Gates(size="256m", max_kld={"Q8_0": 0.5}).kld_gate("Q8_0") == 0.5  # --max-kld wins
    assert Gates(size="256m", default_kld=False).kld_gate("Q8_0") is None  # a fixture: measured, not gated


def scale_q8_0_tensor(path, name: str, factor: float) -> None:
    """Every block scale of one Q8_0 tensor times `factor` (a Q8_0 block: an f16 scale, then 32 int8)."""
    from gguf import GGUFReader

    reader = GGUFReader(path, "r+")
    tensor = next(t for t in reader.tensors if t.name == name)
    assert tensor.tensor_type.name == "Q8_0"
    blocks = tensor.data.reshape(-1, 34)
    scales = blocks[:, 0:2].copy().view(np.float16)
    blocks[:, 0:2] = (scales.astype(np.float32) * factor).astype(np.float16).view(np.uint8)
    reader.data.flush()


@pytest.mark.slow
def test_a_healthy_256m_passes_its_default_gates_and_a_damaged_quant_fails(toolchain, build_256m_q4_q8,
                                                                            fixture_256m, tmp_path):
    real = tmp_path / "checkpoint"  # the fixture as a real checkpoint: without the marker that exempts it
    shutil.copytree(fixture_256m, real, copy_function=os.link, ignore=shutil.ignore_patterns(FIXTURE_MARKER))
    out = linked_build(build_256m_q4_q8, tmp_path / NAME, damaged=f"{NAME}-Q8_0.gguf")
    common = ("verify", str(out), "--checkpoint", str(real), "--skip-check", "vision", "--skip-check", "video",
              "--threads", tool_threads())

    healthy = invoke(*common)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    kld = {k["variant"]: k for k in json.loads((out / "verify.json").read_text())["kld"]["variants"]}
    assert {v: k["gate"] for v, k in kld.items()} == {"Q4_K_M": 0.18, "Q8_0": 0.01}
    # The earlier default (0.05, from 8B-scale numbers) would have failed this healthy Q4_K_M.
    assert kld["Q4_K_M"]["mean_kld"] > DEFAULT_MAX_KLD["Q4_K_M"] and kld["Q4_K_M"]["passed"]

    scale_q8_0_tensor(out / f"{NAME}-Q8_0.gguf", "blk.15.ffn_down.weight", 2.0)  # a quantizer's wrong scale
    damaged = invoke(*common, "--type", "Q8_0")
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert "Q8_0 mean KLD" in damaged.stderr and "over the gate 0.01" in damaged.stderr
