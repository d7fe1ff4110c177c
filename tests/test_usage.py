"""docs/USAGE.md's walk-through, run as written: the install block from the repository, then the fixture block
from an empty directory, in one bash with `set -e`. A command that changes or breaks in the docs fails here."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
USAGE = REPO / "docs" / "USAGE.md"


def documented_block(name: str) -> str:
    """The ```bash block right after `<!-- walkthrough:NAME -->`."""
    match = re.search(rf"<!-- walkthrough:{name} -->\n```bash\n(.*?)```", USAGE.read_text(encoding="utf-8"), re.S)
    assert match, f"docs/USAGE.md has no bash block marked walkthrough:{name}"
    return match.group(1)


def test_the_documented_blocks_are_there_and_use_smolconv():
    install, fixture = documented_block("install"), documented_block("fixture")
    assert "make setup" in install and "smolconv doctor" in install
    assert "smolconv synth" in fixture and "smolconv build" in fixture and "smolconv plan" in fixture


def test_a_new_user_gets_from_nothing_to_a_smoke_tested_model(tmp_path):
    script = "\n".join(["set -euo pipefail", f"cd {REPO}", documented_block("install"), f"cd {tmp_path}",
                        documented_block("fixture")])
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    out = tmp_path / "out" / "smolvlm2-tiny"
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["verify"]["passed"] is True
    assert {key: value["passed"] for key, value in manifest["smoke"].items()} == {
        "Q8_0:llama-server": True, "Q8_0-video:llama-server": True}  # the variant, and its video case
    reports = sorted(p.name for p in (out / "smoke").glob("*.json"))
    assert len(reports) == 2 and all(r in result.stdout for r in reports)  # the `ls` at the end shows them
    planned = manifest["package"]["plans"]["Q8_0"]["num_ctx"]
    plan_row = [line for line in result.stdout.splitlines() if line.startswith("│ Q8_0 ")]
    assert plan_row and f"│ {planned} " in plan_row[-1]  # plan printed the context it chose
