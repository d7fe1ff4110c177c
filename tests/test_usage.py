"""The docs' walk-through, run as written: the install block from the repository, then the fixture block and the
blocks that use its build (ask, publish) from an empty directory, and plan, in one bash with `set -e`. A command
that changes or breaks in the docs fails here. Each block is marked `<!-- walkthrough:NAME -->` on its page."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
MARKER = re.compile(r"<!-- walkthrough:([\w-]+) -->\n```bash\n(.*?)```", re.S)
# In the order a new user meets them: install (Install), fixture and ask (Your first build), publish (Publishing),
# plan (What fits). Every marked block in docs/ must be one of these: a block no test runs fails below.
RUN_IN_ORDER = ("install", "fixture", "ask", "publish", "plan")


def documented_blocks() -> dict[str, tuple[Path, str]]:
    found: dict[str, tuple[Path, str]] = {}
    for page in sorted(DOCS.rglob("*.md")):
        for name, block in MARKER.findall(page.read_text(encoding="utf-8")):
            assert name not in found, f"walkthrough:{name} is marked twice ({found[name][0].name}, {page.name})"
            found[name] = (page, block)
    return found


def documented_block(name: str) -> str:
    """The ```bash block right after `<!-- walkthrough:NAME -->`, on whichever page of docs/ holds it."""
    blocks = documented_blocks()
    assert name in blocks, f"no page in docs/ has a bash block marked walkthrough:{name}"
    return blocks[name][1]


def test_the_documented_blocks_are_there_and_use_smolconv():
    install, fixture = documented_block("install"), documented_block("fixture")
    assert "make setup" in install and "smolconv doctor" in install
    assert "smolconv synth" in fixture and "smolconv build" in fixture and "smolconv plan" in fixture
    assert "smolconv ask" in documented_block("ask") and "--dry-run" in documented_block("publish")
    assert sorted(documented_blocks()) == sorted(RUN_IN_ORDER), "a walkthrough block the test does not run"


def test_a_new_user_gets_from_nothing_to_a_smoke_tested_model(tmp_path):
    script = "\n".join(["set -euo pipefail", f"cd {REPO}", documented_block("install"), f"cd {tmp_path}",
                        *(f"echo '--- {name}'\n{documented_block(name)}" for name in RUN_IN_ORDER[1:])])
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shown = dict(re.findall(r"^--- (\w+)\n(.*?)(?=^--- |\Z)", result.stdout, re.S | re.M))

    out = tmp_path / "out" / "smolvlm2-tiny"
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["verify"]["passed"] is True
    assert {key: value["passed"] for key, value in manifest["smoke"].items()} == {
        "Q8_0:llama-server": True, "Q8_0-video:llama-server": True}  # the variant, and its video case
    reports = sorted(p.name for p in (out / "smoke").glob("*.json"))
    assert len(reports) == 2 and all(r in shown["fixture"] for r in reports)  # the `ls` at the end shows them
    planned = manifest["package"]["plans"]["Q8_0"]["num_ctx"]
    plan_row = [line for line in shown["fixture"].splitlines() if line.startswith("│ Q8_0 ")]
    assert plan_row and f"│ {planned} " in plan_row[-1]  # plan printed the context it chose

    assert shown["ask"].strip()  # an answer (the tiny fixture's is noise), streamed to stdout
    # publish --dry-run: the repo's files, the card's size-against-KLD picture among them (verify measured Q8_0).
    listed = shown["publish"].split()
    assert {"README.md", "params", "template", "size-vs-kld.png"} <= set(listed)
    assert "](size-vs-kld.png)" in (tmp_path / "repo" / "README.md").read_text()
    # plan 2.2b: the RTX 4070's table, every variant at 8192 tokens; then --vram 12GiB and --json.
    assert re.search(r"│ Q4_K_M +│ [\d.]+ GiB +│ 8192 ", shown["plan"])
    assert '"variant": "Q4_K_M"' in shown["plan"]
