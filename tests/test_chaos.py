"""A few seeded kill points of scripts/chaos.py: kill `smolconv build` in each stage, rerun, end byte-identical.

verify and smoke stay off here (they take minutes on the tiny fixture on CI's two cores); `scripts/chaos.py` runs
them too. The uninterrupted build to compare with is the shared `build_tiny_q4`, made with the same arguments.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _chaos_module():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "scripts" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_killed_builds_rerun_to_the_same_bytes(toolchain, fixture_tiny, build_tiny_q4, tmp_path):
    chaos_module = _chaos_module()
    reference = chaos_module._products(build_tiny_q4)
    assert any(name.endswith("-Q4_K_M.gguf") for name in reference) and any(
        name.endswith(".Modelfile") for name in reference)
    chaos = chaos_module.Chaos(fixture_tiny, tmp_path, types=["Q4_K_M"], imatrix_text=None, verify=False,
                               smoke=False, seed=5, signals=[signal.SIGKILL, signal.SIGTERM])
    # Stage lengths to spread the kill moments over (seconds after the stage is reached), instead of timing a
    # reference run here. Each is at most what the stage takes on a fast machine (converting the tiny fixture
    # about 2 s, quantizing it a fraction of one), or a late moment finds the build over. Package is the last
    # stage and short: its kill goes at once.
    chaos.durations = {"convert": 1.5, "quantize": 0.2, "package": 0.0}
    chaos.round(reference)
    report = chaos.report
    assert not report.problems, report.lines()
    assert report.identical == [True]
    # Every kill landed on a running build (none finished first), so chaos.py would exit 0.
    assert report.aimed == report.landed == 3 and report.missed == 0, report.lines()
    assert report.passed
