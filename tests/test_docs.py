"""The front door: the README's first screen, the docs site (mkdocs --strict), the generated command reference and
its stale check, the figures, and what a newcomer sees of the command line (`--help`, the smoke table at 100
columns). The walk-through commands themselves run in test_usage.py."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
FIGURES = DOCS / "figures"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- README ---------------------------------------------------------------------------------------------------------


def test_the_readme_is_short_and_its_first_screen_has_the_two_commands():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:40])
    assert re.search(r"^make demo\b", first_screen, re.M) and re.search(r"^make test\b", first_screen, re.M)


def test_every_relative_link_of_the_readme_resolves():
    """GitHub shows the README, not mkdocs: its links into docs/ and its pictures must exist (anchors included)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = [t for t in LINK.findall(text) if not t.startswith(("http://", "https://", "#"))]
    assert any(t.startswith("docs/figures/") for t in targets)  # the README shows the pictures
    for target in targets:
        path, _, anchor = target.partition("#")
        assert (REPO / path).exists(), target
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (REPO / path).read_text(encoding="utf-8"), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, target


# -- the docs site --------------------------------------------------------------------------------------------------

def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site_copy(tmp_path_factory) -> Path:
    """mkdocs.yml and docs/ copied, so a test can break a page without touching the checkout."""
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]' (make docs)")
    pytest.importorskip("material", reason="the docs extra: pip install -e '.[docs]' (make docs)")
    root = tmp_path_factory.mktemp("site")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copytree(DOCS, root / "docs")
    return root


def test_the_site_builds_with_strict_and_has_a_page_per_task(site_copy, tmp_path):
    result = _mkdocs_build(site_copy / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    for page in ("install", "first-build", "fine-tune", "quants", "hardware", "checks", "video", "onnx", "mlx",
                 "publishing", "ci", "troubleshooting", "commands", "reference/cli", "ARCHITECTURE"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page


@pytest.mark.parametrize(("broken", "said"), [
    ("[the plan](hardware.md#no-such-heading)", "no-such-heading"),
    ("[a page](no-such-page.md)", "no-such-page.md"),
])
def test_a_broken_link_or_anchor_fails_the_strict_build(site_copy, tmp_path, broken, said):
    docs = tmp_path / "copy"
    shutil.copytree(site_copy, docs)
    page = docs / "docs" / "quants.md"
    page.write_text(page.read_text(encoding="utf-8") + f"\nSee {broken}.\n", encoding="utf-8")
    result = _mkdocs_build(docs / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0 and said in result.stderr, result.stderr[-2000:]


# -- the command reference ------------------------------------------------------------------------------------------


def test_the_command_reference_is_current_and_lists_every_command():
    reference = _script("gen_cli_reference")
    assert reference.main(["--check"]) == 0, "docs/reference/cli.md is stale: run `make docs-reference`"
    from smolconv.cli import COMMANDS

    text = reference.DOC.read_text(encoding="utf-8")
    assert [h for h in re.findall(r"^## (\S+)$", text, re.M)] == list(COMMANDS)
    assert "- `--skip-check` `NAME`" in text and "(env `SMOLCONV_LLAMA_CPP`)" in text


def test_the_stale_check_fails_when_a_help_text_changes(monkeypatch, tmp_path, capsys):
    reference = _script("gen_cli_reference")
    from smolconv.cli import app

    page = tmp_path / "cli.md"
    assert reference.main(["--doc", str(page)], app) == 0
    assert reference.main(["--check", "--doc", str(page)], app) == 0
    publish = next(c for c in app.registered_commands if c.name == "publish")
    monkeypatch.setattr(publish, "help", "Upload a build to the Hub, worded anew.")
    capsys.readouterr()
    assert reference.main(["--check", "--doc", str(page)], app) == 1
    said = capsys.readouterr().err
    assert "stale" in said and "run `make docs-reference`" in said
    assert "worded anew" in reference.render(app) and "worded anew" not in page.read_text()


# -- figures --------------------------------------------------------------------------------------------------------

FIGURE_NAMES = ("plan-8gib.svg", "size-vs-kld.png", "video-tokens.svg", "terminal-plan.svg", "terminal-build.svg",
                "terminal-smoke.svg", "terminal-ask.svg")


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_each_figure_is_in_the_repo_small_and_shown(name):
    figure = FIGURES / name
    assert figure.is_file(), f"run `make figures` ({figure})"
    assert figure.stat().st_size < 160 * 1024  # the repo stays small
    shown = [p for p in DOCS.rglob("*.md") if f"figures/{name}" in p.read_text(encoding="utf-8")]
    assert shown, f"no docs page shows {name}"


def test_the_readme_shows_figures_and_they_come_from_the_figures_script():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"docs/figures/([\w.-]+)", readme)
    assert shown and set(shown) <= set(FIGURE_NAMES)
    script = (REPO / "scripts" / "make_figures.py").read_text(encoding="utf-8")
    assert all(name in script or name == "size-vs-kld.png" for name in FIGURE_NAMES)


def test_the_plan_chart_is_drawn_from_plan_json(tmp_path, monkeypatch):
    """The chart's numbers are plan's: each variant's total, and the 8 GiB line."""
    pytest.importorskip("matplotlib")
    figures = _script("make_figures")
    monkeypatch.setattr(figures, "FIGURES", tmp_path)
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    svg = figures.plan_chart().read_text(encoding="utf-8")
    planned = json.loads(figures.smolconv("plan", "2.2b", "--json", "--type", "Q8_0").stdout)[0]
    assert f"{planned['memory']['total'] / 2**30:.2f} GiB, num_ctx {planned['num_ctx']}" in svg
    assert "the 8 GiB card" in svg and "512 MiB kept free" in svg


# -- what a newcomer sees of the command line -----------------------------------------------------------------------


def test_help_shows_no_type_after_a_flag_and_each_command_on_whole_lines():
    from smolconv.cli import app

    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100", "TERMINAL_WIDTH": "100"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output and re.search(r"--version +Print the version", result.output)
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="smolconv")
    for name in group.list_commands(ctx):
        short = group.get_command(ctx, name).short_help
        assert short and "\n" not in short, name  # Typer's rich help would break the line where the docstring does
    publish = CliRunner().invoke(app, ["publish", "--help"], env={"COLUMNS": "100"})
    assert "--private " in publish.output and "<bool>" not in publish.output


def test_the_smoke_table_is_one_line_a_case_at_100_columns(monkeypatch):
    from rich.console import Console

    from smolconv.checks.smoke import CaseResult, SmokeReport
    from smolconv.cli import _output, _render
    from smolconv.runtime.chat import Answer

    answer = Answer(text="The capital of France is Paris. " * 4, finish_reason="stop", prompt_tokens=1140,
                    completion_tokens=9, wall_s=44.0, ttft_s=43.81, prompt_tps=26.0, decode_tps=62.6)
    results = [
        CaseResult("text_fact", "text", True, "stopped by itself, no template text", answer),
        CaseResult("image_png", "image", True, "covered by Q4_K_M (same projector sha256 79cf15aefa16): answered "
                   "(not judged)", covered_by="Q4_K_M"),
        CaseResult("long_prompt", "edge", True, "covered by Q4_K_M (same context, 8192 tokens): stopped by itself, "
                   "no template text", covered_by="Q4_K_M"),
        CaseResult("corrupt_image", "edge", True, "refused before sending"),
        CaseResult("large_image", "edge", False, "did not stop by itself within 160 tokens (finish: length); "
                   "answer contains template text <end_of_utterance>", answer),
    ]
    report = SmokeReport("out/m", "Q5_K_M", "llama-server", {}, results, frozenset({"vision"}), "now", 1.0,
                         Path("out/m/smoke/Q5_K_M.llama-server.json"))
    console = Console(width=100, record=True, file=io.StringIO())  # a CI log's width
    monkeypatch.setattr(_render, "console", console)
    monkeypatch.setattr(_output, "console", console)
    _render.smoke(report)
    text = console.export_text()
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert len(rows) == len(results)  # one line each: nothing wraps
    table = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert max(len(line) for line in table) <= 100
    assert "as Q4_K_M: same projector" in text and "as Q4_K_M: same context" in text
    # The failed case's whole reason follows the table.
    assert "large_image: did not stop by itself within 160 tokens (finish: length); answer contains template " \
           "text <end_of_utterance>" in text
