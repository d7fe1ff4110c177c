"""The import contracts in pyproject.toml (`lint-imports`, run by `make lint`): the tree keeps them, and a new
upward import or a format importing another breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.is_file(),
                                reason="import-linter is not installed (pip install -e '.[dev]')")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    """lint-imports with the repo's contracts on the copy of smolconv in `tree`."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path) -> Path:
    shutil.copytree(REPO / "smolconv", tmp_path / "smolconv", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add_import(module: Path, line: str) -> None:
    text = module.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in text
    module.write_text(text.replace(marker, marker + line + "\n", 1))


def test_the_tree_keeps_its_contracts(tree):
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tree):
    # the record layer reaching up into a check: a cycle through pipeline → checks → … → record
    _add_import(tree / "smolconv" / "record" / "manifest.py", "import smolconv.checks.smoke")
    result = _lint(tree)
    assert result.returncode != 0
    assert "Layers: each imports only from the layers below it BROKEN" in result.stdout
    assert "smolconv.record.manifest -> smolconv.checks.smoke" in result.stdout


def test_a_format_importing_another_breaks_their_independence(tree):
    _add_import(tree / "smolconv" / "formats" / "mlx" / "verify.py", "import smolconv.formats.onnx.runtime")
    result = _lint(tree)
    assert result.returncode != 0
    assert "Formats side by side: GGUF, ONNX and MLX never import one another BROKEN" in result.stdout
