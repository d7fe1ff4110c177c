"""`smolconv pull` with the real huggingface_hub code, offline, against a Hub cache the test lays out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from smolconv.core.errors import SmolconvError
from smolconv.source.pull import PullOptions, pull, resolve_model
from tests.helpers import assert_one_line_error, free_port, run_cli

REPO = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(cache: Path, repo_id: str, commit: str, files: Path) -> None:
    """Put the files of `files` into a Hugging Face cache as `repo_id` at `commit`, as huggingface_hub lays it out."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in files.iterdir():
        blob = repo / "blobs" / f"blob-{file.name}"
        blob.symlink_to(file)
        (snapshot / file.name).symlink_to(Path("../../blobs") / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture
def hub_cache(fixture_tiny, tmp_path) -> Path:
    """A Hugging Face cache holding REPO at COMMIT (the tiny fixture's files)."""
    cache = tmp_path / "hub"
    cache_repo(cache, REPO, COMMIT, fixture_tiny)
    return cache


ADAPTER_REPO = "someone/smolvlm2-256m-lora"
ADAPTER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def _cached_adapter(fixture_tiny, hub_cache: Path, tmp_path: Path, base: str) -> None:
    """A LoRA made with peft on the tiny fixture, published as ADAPTER_REPO with `base` as its base model."""
    from tests.adapters import make_adapter

    adapter = make_adapter(fixture_tiny, tmp_path / "adapter-files")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": base}))
    cache_repo(hub_cache, ADAPTER_REPO, ADAPTER_COMMIT, adapter)


def test_an_adapter_from_the_hub_is_pulled_and_checked_with_its_commit(toolchain, fixture_tiny, hub_cache, tmp_path):
    _cached_adapter(fixture_tiny, hub_cache, tmp_path, REPO)
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    result = run_cli("pull", "256m", "--adapter", ADAPTER_REPO, env=env)
    assert result.returncode == 0, result.stderr
    assert f"adapter {ADAPTER_REPO} at {ADAPTER_COMMIT}" in result.stdout and "fits the checkpoint" in result.stdout
    out = tmp_path / "out"
    result = run_cli("convert", str(hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT),
                     "--adapter", ADAPTER_REPO, "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "build.json").read_text())["adapter"]
    assert record["repo_id"] == ADAPTER_REPO and record["revision"] == ADAPTER_COMMIT and record["format"] == "merge"
    assert (out / "smolvlm2-256m-lora-F16.gguf").is_file() and (out / "merged" / "config.json").is_file()


def test_an_adapter_for_another_model_is_refused_before_the_base_is_pulled(fixture_tiny, hub_cache, tmp_path):
    _cached_adapter(fixture_tiny, hub_cache, tmp_path, "HuggingFaceTB/SmolVLM2-2.2B-Instruct")
    # The base is not in this cache: a refusal that needed it would say the Hub is out of reach instead.
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    result = run_cli("pull", "500m", "--adapter", ADAPTER_REPO, env=env)
    assert_one_line_error(result, "trained on HuggingFaceTB/SmolVLM2-2.2B-Instruct",
                          "not on HuggingFaceTB/SmolVLM2-500M-Video-Instruct", "--force")


def test_aliases_and_ids():
    assert resolve_model("256m") == (REPO, None)
    assert resolve_model("2.2B") == ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", None)
    assert resolve_model("someone/SmolVLM2-fork") == ("someone/SmolVLM2-fork", None)
    with pytest.raises(SmolconvError, match="neither a local directory nor a Hub id"):
        resolve_model("no-such-thing")


def test_local_directory_is_used_as_it_is(fixture_tiny):
    source = pull(PullOptions(str(fixture_tiny)))
    assert source.path == fixture_tiny and source.repo_id is None and source.revision is None


def test_offline_pull_resolves_the_cached_snapshot(hub_cache):
    source = pull(PullOptions("256m", cache_dir=hub_cache, local_files_only=True))
    assert source.repo_id == REPO
    assert source.revision == COMMIT
    assert (source.path / "config.json").is_file()
    assert source.name == "SmolVLM2-256M-Video-Instruct"


def test_offline_env_var_is_respected(hub_cache):
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    result = run_cli("pull", "256m", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(COMMIT)


def test_unreachable_hub_is_one_line_and_never_shows_the_token(tmp_path):
    token = "hf_TESTTOKENvalue1234567890abcdef"
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_TOKEN": token,
           "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HUB_ETAG_TIMEOUT": "2",
           "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    env.pop("HF_HUB_OFFLINE", None)
    result = run_cli("pull", "256m", env=env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "cannot reach the Hugging Face Hub" in lines[0] and "pass the directory" in lines[0]
    assert token not in result.stdout + result.stderr


def test_build_from_the_hub_cache_records_the_source(toolchain, hub_cache, tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    result = run_cli("build", "256m", "--out", str(out), "--type", "Q8_0", "--no-verify", "--no-smoke", env=env)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["source"]["repo_id"] == REPO
    assert manifest["source"]["revision"] == COMMIT
    assert set(manifest["source"]["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert (out / "SmolVLM2-256M-Video-Instruct-F16.gguf").is_file()
    assert (out / "mmproj-SmolVLM2-256M-Video-Instruct-f16.gguf").is_file()
    assert (out / "SmolVLM2-256M-Video-Instruct-Q8_0.gguf").is_file()
