"""`smolconv publish`: the folder `--dry-run` writes, read back as the Hub, Ollama and Go would; Hub errors in one line.

The card of a build with verify and smoke records is checked in test_build.py (its module build has them), with
`check_published_folder` from here.
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
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import hf_raise_for_status
from transformers.utils.chat_template_utils import render_jinja_template
from typer.testing import CliRunner

from smolconv.hashing import sha256_file
from smolconv.models import CHAT_TEMPLATE
from smolconv.package import templates_dir
from smolconv.publish import PublishOptions, publish
from tests.conftest import run_cli
from tests.modelfile_parser import parse
from tests.test_template import CONVERSATIONS, ollama_messages, render_with_go

pytestmark = pytest.mark.slow

REPO = "someone/SmolVLM2-256M-Video-Instruct-GGUF"
BASE = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
NAME = BASE.split("/")[1]
SECRET = "hf_secretvalue"
# ggml-org's names (ggml-org/SmolVLM2-2.2B-Instruct-GGUF): <Name>-<TYPE>.gguf and mmproj-<Name>-<f16|Q8_0>.gguf.
GGUF_NAME = re.compile(r"^(?P<name>.+)-(?P<type>(?:[IT]?Q\d\w*)|F16|BF16|F32)\.gguf$")
MMPROJ_NAME = re.compile(r"^mmproj-(?P<name>.+)-(?:f16|bf16|f32|Q8_0)\.gguf$")
# A number standing on its own in the card (not part of Q4_K, SmolVLM2-256M, a commit or a file name).
NUMBER = re.compile(r"(?<![\w.\-/:])\d+(?:\.\d+)?(?:e[-+]\d+)?(?![\w\-/:]|\.\d)")


def _rows(body: str, header: str) -> list[list[str]]:
    """The cells of the markdown table whose header row starts with `| header |`."""
    lines = body.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def check_published_folder(build: Path, folder: Path, repo: str, base: str, types: tuple[str, ...]) -> None:
    """Everything in a publish folder against the build it came from; every number in the card against build.json."""
    manifest = json.loads((build / "build.json").read_text())
    name = base.split("/")[1]
    presets = tomllib.loads((templates_dir() / "presets.toml").read_text())
    files = sorted(p.name for p in folder.iterdir())
    ggufs = [f"{name}-{t}.gguf" for t in types]
    assert files == sorted([*ggufs, f"mmproj-{name}-f16.gguf", "template", "params", "README.md",
                            *(f"{name}-{t}.Modelfile" for t in types)])
    for file in files:
        if file.endswith(".gguf"):
            match = GGUF_NAME.match(file) or MMPROJ_NAME.match(file)
            assert match and match["name"] == name, file

    # The GGUF files are the build's, byte for byte.
    build_files = {t: f"smolvlm2-256m-{t}.gguf" for t in types}
    for t in types:
        assert sha256_file(folder / f"{name}-{t}.gguf") == manifest["outputs"][build_files[t]]["sha256"]
    assert sha256_file(folder / f"mmproj-{name}-f16.gguf") == manifest["outputs"]["mmproj-smolvlm2-256m-f16.gguf"][
        "sha256"]

    # template: the TEMPLATE of the build's own Modelfile, and of the Modelfiles in the repo.
    template = (folder / "template").read_text()
    for modelfile in [build / "smolvlm2-256m-q4_K_M.Modelfile", *(folder / f"{name}-{t}.Modelfile" for t in types)]:
        commands = parse(modelfile.read_text())
        assert dict(c for c in commands if c[0] == "template")["template"] == template
    for t in types:
        froms = [v for n, v in parse((folder / f"{name}-{t}.Modelfile").read_text()) if n == "model"]
        assert froms == [f"./{name}-{t}.gguf", f"./mmproj-{name}-f16.gguf"]

    # params: what Ollama reads from the repo (JSON), the general preset and the plan's smallest context.
    params = json.loads((folder / "params").read_text())
    plans = manifest["package"]["plans"]
    assert params == {"stop": ["<end_of_utterance>"], **presets["general"]["parameters"],
                      "num_ctx": min(plans[t]["num_ctx"] for t in types)}

    # The card's YAML header, as the Hub reads it.
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == base and card.data.base_model_relation == "quantized"
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "image-text-to-text"
    assert set(card.data.tags) == {"gguf", "llama.cpp", "ollama", "smolvlm2"}
    body = card.text
    for command in (f"ollama run hf.co/{repo}:Q4_K_M", f"llama-server -hf {repo}:Q4_K_M",
                    f"ollama create {name.lower().split('-')[0]}:", f"-f {name}-Q4_K_M.Modelfile"):
        assert command in body
    if source_revision := manifest["source"].get("revision"):
        assert source_revision in body
    assert manifest["source"]["path"] not in body  # a local checkpoint is named, its place on disk stays private

    # Every number in the card body, against build.json.
    accounted = {"99"}  # the "99% KLD" column header
    steps = manifest["steps"]
    for row in _rows(body, "file"):
        file = row[0].strip("`").split("`")[0]
        if file.startswith("mmproj-"):
            size = manifest["outputs"]["mmproj-smolvlm2-256m-f16.gguf"]["size"]
            assert row[1] == f"{size / 2**20:.1f}"
            accounted.add(row[1])
            continue
        qtype = GGUF_NAME.match(file)["type"]
        report = steps[f"quantize:{qtype}"]["report"]
        assert row[1] == f"{report['size'] / 2**20:.1f}" and row[2] == f"{report['bits_per_weight']:.2f}"
        mix = re.findall(r"(\w+) ([\d.]+)% \((\d+) tensors\)", row[3])
        assert {t for t, _, _ in mix} == set(report["weight_share"])
        for kind, share, count in mix:
            assert abs(float(share) - 100 * report["weight_share"][kind]) < 0.051
            assert int(count) == report["tensor_types"][kind]
            accounted |= {share, count}
        accounted |= {row[1], row[2]}
        assert report["summary"] in body  # the honest sentence: what fell back, what most of it really is
        accounted |= set(NUMBER.findall(report["summary"]))
    for row in _rows(body, "variant | num_ctx"):
        plan = plans[row[0]]
        assert row[1] == str(plan["num_ctx"]) and row[2] == f"{plan['num_gpu']} of {plan['layers']}"
        assert row[3] == ("GPU" if plan["projector_on_gpu"] else "CPU")
        assert row[5] == ("yes" if plan["fits"] else "partly")
        total = plan["memory"]["total"]
        assert row[4] in (f"{total / 2**30:.2f} GiB", f"{total / 2**20:.0f} MiB")
        accounted |= {row[1], str(plan["num_gpu"]), str(plan["layers"]), row[4].split()[0]}
    assert f"sets num_ctx {params['num_ctx']}" in body
    settings = manifest["package"]["settings"]
    assert f"for {settings['vram'] / 2**30:.2f} GiB of VRAM ({settings['reserve'] / 2**20:.0f} MiB kept free" in body
    accounted |= {f"{settings['vram'] / 2**30:.2f}", f"{settings['reserve'] / 2**20:.0f}", manifest["smolconv"]}
    verify = manifest.get("verify")
    if verify:
        assert f"largest NMSE {verify['text']['max_nmse']:.2e}, same top-1 token on {verify['text']['top1_agree']}" \
            in body
        assert f"one tile: NMSE {verify['vision']['nmse']:.2e}" in body
        accounted |= {f"{verify['text']['max_nmse']:.2e}", f"{verify['vision']['nmse']:.2e}"}
        kld = {k["variant"]: k for k in verify["kld"]["variants"]}
        rows = _rows(body, "variant | mean KLD against F16")
        assert {row[0] for row in rows} == set(kld)
        for row in rows:
            k = kld[row[0]]
            assert row[1:4] == [f"{k['mean_kld']:.4f}", f"{k['kld_p99']:.4f}", f"{100 * k['same_top']:.1f}"]
            accounted |= set(row[1:4]) | set(NUMBER.findall(row[4]))
            assert row[4] == ("not gated" if k["gate"] is None else f"≤ {k['gate']}")
    else:
        assert "`smolconv verify` was not run on this build." in body
    # The published variants' smoke records (a build's video case ran on its video projector, which is not
    # published: the repo's mmproj is the image projector).
    smoke = {key: record for key, record in manifest.get("smoke", {}).items() if key.partition(":")[0] in types}
    if smoke:
        rows = _rows(body, "variant | backend")
        assert {f"{row[0]}:{row[1]}" for row in rows} == set(smoke)
        for row in rows:
            record = smoke[f"{row[0]}:{row[1]}"]
            assert row[2] == ("passed" if record["passed"] else f"failed: {', '.join(record['failed'])}")
            assert row[3] == ("" if record["decode_tps"] is None else f"{record['decode_tps']:.1f}")
            assert row[4] == ("" if record["ttft_s"] is None else f"{record['ttft_s']:.2f}")
            accounted |= set(row[3:5])
    else:
        assert "`smolconv smoke` was not run on this build." in body
    found = set(NUMBER.findall(body))
    assert found <= accounted, f"numbers in the card that build.json does not account for: {found - accounted}"


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


def _hub_error(status: int, url: str):
    """The error huggingface_hub raises for this answer of the Hub, made from a real response of its transport
    (httpx since huggingface_hub 1.0)."""
    import httpx

    request = httpx.Request("POST", url, headers={"authorization": f"Bearer {SECRET}"})
    response = httpx.Response(status, request=request, headers={"X-Request-Id": "test-request"},
                              content=json.dumps({"error": f"denied ({SECRET} is not shown by smolconv)"}).encode())
    try:
        hf_raise_for_status(response)
    except (HfHubHTTPError, httpx.HTTPStatusError) as exc:  # whichever huggingface_hub raises for this answer
        return exc
    raise AssertionError("hf_raise_for_status did not raise")


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
            raise _hub_error(status, f"https://huggingface.co/api/repos/{REPO}")

    monkeypatch.setattr(HfApi, "create_repo", answer)
    monkeypatch.setattr(HfApi, "upload_folder", answer)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    result = CliRunner().invoke(app, ["publish", str(build_256m_q4_q8), "--repo", REPO, "--type", "Q8_0"])
    _one_line(result, *expected)
    assert calls[0] == REPO
    assert not any(p.name.startswith(".publish-") for p in build_256m_q4_q8.iterdir())


def test_bad_repo_and_an_existing_folder_are_one_line(build_256m_q4_q8, tmp_path):
    _one_line(run_cli("publish", str(build_256m_q4_q8), "--repo", "no-slash", "--dry-run", str(tmp_path / "x")),
              "USER/NAME")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    _one_line(run_cli("publish", str(build_256m_q4_q8), "--repo", REPO, "--dry-run", str(tmp_path / "taken")),
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
