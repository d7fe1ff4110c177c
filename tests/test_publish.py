"""`smolconv publish`: the folder `--dry-run` writes, read back as the Hub, Ollama and Go would; Hub errors in one line.

The card of a build with verify and smoke records is checked in test_build.py (its module build has them), with
the same `check_published_folder` (tests/helpers.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers.utils.chat_template_utils import render_jinja_template
from typer.testing import CliRunner

from smolconv.core.models import CHAT_TEMPLATE
from smolconv.core.templates import templates_dir
from smolconv.hub.publish import PublishOptions, publish
from tests.helpers import (
    CONVERSATIONS,
    check_published_folder,
    hub_error,
    invoke,
    ollama_messages,
    render_with_go,
    run_cli,
)

pytestmark = pytest.mark.slow

REPO = "someone/SmolVLM2-256M-Video-Instruct-GGUF"
BASE = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
NAME = BASE.split("/")[1]
SECRET = "hf_secretvalue"


@pytest.fixture(scope="module")
def dry_run(build_256m_q4_q8, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("publish") / "repo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | {"HF_TOKEN": SECRET}
    result = run_cli("publish", str(build_256m_q4_q8), "--repo", REPO, "--base-model", BASE, "--dry-run",
                     str(folder), env=env)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr and str(folder) in result.stdout
    return folder


def test_dry_run_writes_ggml_org_layout_and_a_card_the_hub_reads(build_256m_q4_q8, dry_run):
    check_published_folder(build_256m_q4_q8, dry_run, REPO, BASE, ("Q4_K_M", "Q8_0"))


@pytest.mark.parametrize("name", ["image turn", "two images, then a follow-up"])
def test_the_template_file_renders_like_the_hf_chat_template(go_renderer, dry_run, name):
    conversation = CONVERSATIONS[name]
    [hf], _ = render_jinja_template(conversations=[conversation], chat_template=CHAT_TEMPLATE,
                                    add_generation_prompt=True)
    ollama = render_with_go(go_renderer, (dry_run / "template").read_text(), ollama_messages(conversation))
    assert re.sub(r"\[img-\d+\]", "<image>", ollama) == hf


def _linked_copy(build: Path, dest: Path, **record) -> Path:
    """The build's files as hard links, with build.json changed as given (the shared fixture stays untouched)."""
    shutil.copytree(build, dest, copy_function=os.link, ignore=shutil.ignore_patterns("build.json"))
    manifest = json.loads((build / "build.json").read_text())
    for key, value in record.items():
        manifest[key] = value if not isinstance(value, dict) else {**manifest.get(key, {}), **value}
    (dest / "build.json").write_text(json.dumps(manifest))
    return dest


@pytest.mark.parametrize(("adapter", "relation"), [
    ({"repo_id": "someone/smolvlm2-lora", "revision": "a" * 40, "format": "merge", "name": "smolvlm2-lora",
      "path": "/home/me/secret/smolvlm2-lora"}, "finetune"),
    ({"repo_id": "someone/smolvlm2-lora", "revision": "b" * 40, "format": "gguf", "name": "smolvlm2-lora",
      "gguf": "lora.gguf", "path": "/home/me/secret/smolvlm2-lora"}, "adapter"),
])
def test_base_model_is_the_hub_source_and_the_relation_follows_the_adapter(build_256m_q4_q8, tmp_path, adapter,
                                                                            relation):
    build = _linked_copy(build_256m_q4_q8, tmp_path / "build", source={"repo_id": BASE, "revision": "c" * 40},
                         adapter=adapter)
    if adapter["format"] == "gguf":
        (build / "lora.gguf").write_bytes(b"GGUF stand-in")
    result = publish(PublishOptions(build, REPO, types=("Q8_0",), preset="ocr", dry_run=tmp_path / "repo"))
    card = ModelCard.load(result.folder / "README.md")
    assert card.data.base_model == BASE and card.data.base_model_relation == relation
    assert f"`{BASE}` at commit `{'c' * 40}`" in card.text
    names = {p.name for p in result.folder.iterdir()}
    # Merged weights are the fine-tune and carry its name; a GGUF LoRA ships beside the base's files.
    stem = adapter["name"] if adapter["format"] == "merge" else NAME
    assert {f"{stem}-Q8_0.gguf", f"mmproj-{stem}-f16.gguf", "template", "params", "system"} <= names
    assert "Q4_K_M" not in " ".join(names)
    presets = tomllib.loads((templates_dir() / "presets.toml").read_text())
    assert (result.folder / "system").read_text() == presets["ocr"]["system"]
    assert json.loads((result.folder / "params").read_text())["temperature"] == presets["ocr"]["parameters"][
        "temperature"]
    assert f"`{adapter['repo_id']}` at commit `{adapter['revision']}`" in card.text
    assert "/home/me" not in card.text  # a local path never goes to the Hub
    assert ("lora.gguf" in names) == (adapter["format"] == "gguf")
    assert result.commit_message.startswith("smolconv ") and "Q8_0" in result.commit_message


def test_the_card_of_a_verify_that_left_checks_out_says_what_was_not_measured(build_256m_q4_q8, tmp_path):
    verified = {"passed": True, "skipped": ["vision", "video", "kld"],
                "text": {"max_nmse": 3.25e-07, "top1_agree": 5},
                "vision": {"checked": False, "reason": "not checked (--skip-check vision)"},
                "kld": {"f16_ppl": None, "variants": []}}
    build = _linked_copy(build_256m_q4_q8, tmp_path / "build", verify=verified)
    card = ModelCard.load(publish(PublishOptions(build, REPO, dry_run=tmp_path / "repo")).folder / "README.md")
    assert "largest NMSE 3.25e-07, same top-1 token on 5 prompts" in card.text
    assert "- Vision projector: not compared (`--skip-check vision`)." in card.text
    assert "- Quantized variants against F16: not measured (`--skip-check kld`)." in card.text
    assert "mean KLD against F16" not in card.text  # no empty table


# --------------------------------------------------------------------------------------------------
# Errors: one line each, exit 2, and the token nowhere


def _one_line(result, *expected: str) -> str:
    output = result.stdout + result.stderr
    assert SECRET not in output
    assert getattr(result, "exit_code", getattr(result, "returncode", None)) == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for text in expected:
        assert text in lines[0]
    return lines[0]


def test_no_token_and_offline_are_one_line(build_256m_q4_q8, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))} | {
        "HF_HOME": str(tmp_path / "hf-home")}
    _one_line(run_cli("publish", str(build_256m_q4_q8), "--repo", REPO, env=env),
              "no Hugging Face token", "hf auth login")
    env |= {"HF_TOKEN": SECRET, "HF_HUB_OFFLINE": "1"}
    _one_line(run_cli("publish", str(build_256m_q4_q8), "--repo", REPO, env=env), "HF_HUB_OFFLINE", "--dry-run")
    assert not any(p.name.startswith(".publish-") for p in build_256m_q4_q8.iterdir())


@pytest.mark.parametrize(("failing", "status", "expected"), [
    ("create_repo", 401, ("refused the token (401", "settings/tokens")),
    ("upload_folder", 403, (f"cannot write to {REPO} (403", "write access")),
])
def test_hub_refusals_are_one_line(build_256m_q4_q8, monkeypatch, failing, status, expected):
    from huggingface_hub import HfApi

    from smolconv.cli import app

    calls = []

    def answer(self, *args, **kwargs):
        calls.append(kwargs.get("repo_id", args[0] if args else None))
        if calls and len(calls) == (1 if failing == "create_repo" else 2):
            raise hub_error(status, f"https://huggingface.co/api/repos/{REPO}", SECRET)

    monkeypatch.setattr(HfApi, "create_repo", answer)
    monkeypatch.setattr(HfApi, "upload_folder", answer)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    result = CliRunner().invoke(app, ["publish", str(build_256m_q4_q8), "--repo", REPO, "--type", "Q8_0"])
    _one_line(result, *expected)
    assert calls[0] == REPO
    assert not any(p.name.startswith(".publish-") for p in build_256m_q4_q8.iterdir())


def test_bad_repo_and_an_existing_folder_are_one_line(build_256m_q4_q8, tmp_path):
    _one_line(invoke("publish", str(build_256m_q4_q8), "--repo", "no-slash", "--dry-run", str(tmp_path / "x")),
              "USER/NAME")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    _one_line(invoke("publish", str(build_256m_q4_q8), "--repo", REPO, "--dry-run", str(tmp_path / "taken")),
              "already exists", "--force")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["mine.txt"]


def test_build_publish_needs_the_checks_and_a_token_before_it_starts(toolchain, fixture_tiny, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))} | {
        "HF_HOME": str(tmp_path / "hf-home")}
    out = tmp_path / "out"
    _one_line(run_cli("build", str(fixture_tiny), "--out", str(out), "--no-smoke", "--publish", REPO, env=env),
              "only after verify and smoke pass")
    _one_line(run_cli("build", str(fixture_tiny), "--out", str(out), "--publish", REPO, env=env),
              "no Hugging Face token")
    assert not out.exists()  # refused before converting anything


def test_the_card_says_why_a_projector_could_not_be_compared(build_256m_q4_q8, tmp_path):
    verified = {"passed": True, "skipped": [], "text": {"max_nmse": 3.25e-07, "top1_agree": 5},
                "vision": {"checked": False, "could_not_run": True,
                           "reason": "not checked: this llama.cpp does not write projector embeddings "
                           "(MTMD_DEBUG_EMBEDDINGS)"},
                "kld": {"f16_ppl": None, "variants": []}}
    build = _linked_copy(build_256m_q4_q8, tmp_path / "build", verify=verified)
    card = ModelCard.load(publish(PublishOptions(build, REPO, dry_run=tmp_path / "repo")).folder / "README.md")
    assert ("- Vision projector: not compared (this llama.cpp does not write projector embeddings "
            "(MTMD_DEBUG_EMBEDDINGS))." in card.text)


def test_the_card_shows_its_own_variants_size_against_kld(build_256m_q4_q8, tmp_path):
    """The picture publish draws for the card: this build's variants, from its verify record; none without KLD."""
    from PIL import Image

    from smolconv.hub.picture import PICTURE_NAME

    verified = {"passed": True, "skipped": [], "text": {"max_nmse": 3.25e-07, "top1_agree": 5},
                "vision": {"checked": True, "nmse": 2.9e-07},
                "kld": {"f16_ppl": 42.97, "variants": [
                    {"variant": "Q4_K_M", "mean_kld": 0.0653, "kld_p99": 0.4153, "same_top": 0.8618, "gate": None},
                    {"variant": "Q8_0", "mean_kld": 0.0045, "kld_p99": 0.0218, "same_top": 0.9608, "gate": None}]}}
    build = _linked_copy(build_256m_q4_q8, tmp_path / "build", verify=verified)
    folder = publish(PublishOptions(build, REPO, dry_run=tmp_path / "repo")).folder
    card = ModelCard.load(folder / "README.md")
    assert f"]({PICTURE_NAME})" in card.text
    with Image.open(folder / PICTURE_NAME) as picture:
        assert picture.format == "PNG" and picture.size == (760, 440)
        drawn = picture.tobytes()
    record = json.loads((folder / "smolconv.json").read_text())
    assert PICTURE_NAME in record["files"]  # part of what `smolconv batch` compares

    # Another build's numbers: another picture (a point moved); the same numbers: the same bytes.
    moved = {**verified, "kld": {**verified["kld"], "variants": [
        {**verified["kld"]["variants"][0], "mean_kld": 0.03}, verified["kld"]["variants"][1]]}}
    other = _linked_copy(build_256m_q4_q8, tmp_path / "other", verify=moved)
    other_folder = publish(PublishOptions(other, REPO, dry_run=tmp_path / "other-repo")).folder
    with Image.open(other_folder / PICTURE_NAME) as picture:
        assert picture.tobytes() != drawn
    again = publish(PublishOptions(build, REPO, dry_run=tmp_path / "again", force=True)).folder
    assert (again / PICTURE_NAME).read_bytes() == (folder / PICTURE_NAME).read_bytes()

    skipped = _linked_copy(build_256m_q4_q8, tmp_path / "skipped",
                           verify={**verified, "skipped": ["kld"], "kld": {"f16_ppl": None, "variants": []}})
    bare = publish(PublishOptions(skipped, REPO, dry_run=tmp_path / "bare")).folder
    assert not (bare / PICTURE_NAME).exists()
    assert PICTURE_NAME not in (bare / "README.md").read_text()
