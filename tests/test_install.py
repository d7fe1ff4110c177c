"""What the wheel carries: every package, and every file smolconv reads at run time. The wheel itself is built,
installed and run outside the checkout by scripts/ci_wheel.sh (`make wheel-check`)."""

from __future__ import annotations

import fnmatch
import shutil
import tomllib
from pathlib import Path

import pytest
from setuptools import find_namespace_packages

from smolconv.core.errors import SmolconvError
from smolconv.core.templates import MODELFILE_TEMPLATE, templates_dir

REPO = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def _source_dir(package: str) -> Path:
    mapped = SETUPTOOLS.get("package-dir", {}).get(package)
    return REPO / (mapped or package.replace(".", "/"))


def test_every_package_of_the_checkout_is_listed():
    on_disk = {p for p in find_namespace_packages(where=str(REPO), include=["smolconv", "smolconv.*"])
               if "__pycache__" not in p}
    assert on_disk <= set(SETUPTOOLS["packages"])


@pytest.mark.parametrize("package", ["smolconv.templates", "smolconv.data"])
def test_every_file_of_the_data_folders_goes_into_the_wheel(package):
    patterns = SETUPTOOLS["package-data"][package]
    files = [p.name for p in _source_dir(package).iterdir() if p.is_file()]
    assert files
    assert [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)] == []


def test_the_top_level_templates_are_the_source_of_truth_in_a_checkout():
    assert _source_dir("smolconv.templates") == REPO / "templates"
    assert not (REPO / "smolconv" / "templates").exists()  # no copy to drift from the real one
    assert templates_dir() == REPO / "templates"


def test_smolconv_templates_overrides_and_a_wrong_one_is_one_line(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    shutil.copytree(REPO / "templates", mine)
    monkeypatch.setenv("SMOLCONV_TEMPLATES", str(mine))
    assert templates_dir() == mine
    (mine / MODELFILE_TEMPLATE).unlink()
    with pytest.raises(SmolconvError) as error:
        templates_dir()
    assert str(mine) in error.value.one_line() and "SMOLCONV_TEMPLATES" in error.value.one_line()
