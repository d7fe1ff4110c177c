"""`smolconv pull` with the real huggingface_hub code, offline, against a Hub cache the test lays out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from smolconv.errors import SmolconvError
from smolconv.pull import PullOptions, pull, resolve_model
from tests.conftest import free_port, run_cli

REPO = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(fixture_tiny, tmp_path) -> Path:
    """A Hugging Face cache holding REPO at COMMIT, laid out as huggingface_hub writes it."""
    cache = tmp_path / "hub"
    repo = cache / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in fixture_tiny.iterdir():
        blob = repo / "blobs" / f"blob-{file.name}"
        blob.symlink_to(file)
        (snapshot / file.name).symlink_to(Path("../../blobs") / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


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
