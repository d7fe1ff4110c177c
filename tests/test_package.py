"""`smolconv package`: Modelfiles for a real build, and `--create` against the FAKE Ollama daemon."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from smolconv.runtime.ollama_api import cli_create_command, parse_cli_version
from tests.fake_ollama import MEDIA_MODEL, MEDIA_PROJECTOR, FakeOllama
from tests.helpers import free_port, invoke
from tests.modelfile_parser import parse

pytestmark = pytest.mark.slow


def _env(host: str | None, tmp_path: Path) -> dict:
    """No ollama CLI on PATH (so the HTTP API is used), OLLAMA_HOST as given."""
    env = {k: v for k, v in os.environ.items() if k != "OLLAMA_HOST"}
    bin_dir = Path(os.sys.executable).parent
    env["PATH"] = os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])
    if host:
        env["OLLAMA_HOST"] = host
    return env


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_modelfiles_of_a_build_name_its_files_and_plan(build_256m_q4_q8):
    out = build_256m_q4_q8
    modelfile = out / "smolvlm2-256m-q4_K_M.Modelfile"
    commands = parse(modelfile.read_text())
    froms = [v for n, v in commands if n == "model"]
    assert froms == ["./smolvlm2-256m-Q4_K_M.gguf", "./mmproj-smolvlm2-256m-f16.gguf"]
    assert all((out / f).is_file() for f in froms)
    values = dict(c for c in commands if c[0] != "model")
    assert values["num_ctx"] == "8192" and values["num_gpu"] == "31"
    assert "Most of this" in modelfile.read_text()  # the quant report: Q4_K_M here is mostly Q5_0


def test_package_create_uploads_each_blob_once_and_creates_every_model(build_256m_q4_q8, tmp_path):
    out = build_256m_q4_q8
    text_q4, text_q8 = out / "smolvlm2-256m-Q4_K_M.gguf", out / "smolvlm2-256m-Q8_0.gguf"
    projector = out / "mmproj-smolvlm2-256m-f16.gguf"
    with FakeOllama() as fake:
        result = invoke("package", str(out), "--preset", "general", "--preset", "ocr", "--create",
                        env=_env(fake.host, tmp_path))
        assert result.returncode == 0, result.stderr
        # Four files, each uploaded once, with the digest of its bytes; the projectors are shared, and the video
        # model of each variant shares its text blob.
        video = out / "mmproj-smolvlm2-256m-f16-video.gguf"
        assert sorted(fake.state.uploads) == sorted({_sha(text_q4), _sha(text_q8), _sha(projector), _sha(video)})
        assert len(fake.state.creates) == 6
        by_tag = {c["model"]: c for c in fake.state.creates}
        assert set(by_tag) == {"smolvlm2:256m-q4_K_M", "smolvlm2:256m-q4_K_M-ocr", "smolvlm2:256m-q8_0",
                               "smolvlm2:256m-q8_0-ocr", "smolvlm2:256m-q4_K_M-video", "smolvlm2:256m-q8_0-video"}
        assert by_tag["smolvlm2:256m-q8_0-video"]["files"] == {text_q8.name: _sha(text_q8), video.name: _sha(video)}
        ocr = by_tag["smolvlm2:256m-q4_K_M-ocr"]
        assert ocr["files"] == {text_q4.name: _sha(text_q4), projector.name: _sha(projector)}
        assert "adapters" not in ocr
        # Ollama tells the text model from the projector by what each GGUF holds.
        assert {(layer["mediaType"], layer["digest"]) for layer in fake.state.manifests[ocr["model"]]} == {
            (MEDIA_MODEL, _sha(text_q4)), (MEDIA_PROJECTOR, _sha(projector))}
        assert ocr["template"].startswith("<|im_start|>") and "<end_of_utterance>" in ocr["template"]
        assert ocr["parameters"]["stop"] == ["<end_of_utterance>"]
        assert ocr["parameters"]["num_ctx"] == 8192 and ocr["parameters"]["temperature"] == 0
        assert "Transcribe" in ocr["system"] and "Apache" in ocr["license"]
        assert "system" not in by_tag["smolvlm2:256m-q8_0"]
        # What the Modelfile says is what the API got.
        modelfile = dict(c for c in parse((out / "smolvlm2-256m-q4_K_M-ocr.Modelfile").read_text()) if c[0] != "model")
        assert modelfile["template"] == ocr["template"] and modelfile["system"] == ocr["system"]

        # Again: the server has every blob, so nothing is uploaded.
        uploads = len(fake.state.uploads)
        again = invoke("package", str(out), "--preset", "general", "--create", env=_env(fake.host, tmp_path))
        assert again.returncode == 0, again.stderr
        assert len(fake.state.uploads) == uploads
        assert "0 files uploaded, 4 already there" in again.stdout


@pytest.mark.parametrize(("case", "expected"), [
    ("absent", "Ollama is not installed"),
    ("down", "Ollama is not running"),
    ("old", "is too old"),
])
def test_ollama_absent_down_or_too_old_is_one_line(build_256m_q4_q8, tmp_path, case, expected):
    if case == "old":
        with FakeOllama(version="0.29.1") as fake:
            result = invoke("package", str(build_256m_q4_q8), "-p", "general", "--create",
                            env=_env(fake.host, tmp_path))
            assert fake.state.uploads == [] and fake.state.creates == []
    else:
        host = None if case == "absent" else f"http://127.0.0.1:{free_port()}"
        if case == "absent":
            pytest.importorskip("httpx")
            import httpx

            try:
                httpx.get("http://127.0.0.1:11434/api/version", timeout=1)
                pytest.skip("something answers at Ollama's default port on this machine")
            except httpx.HTTPError:
                pass
        result = invoke("package", str(build_256m_q4_q8), "-p", "general", "--create", env=_env(host, tmp_path))
    assert result.returncode != 0
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr


def test_package_without_create_prints_the_commands(build_256m_q4_q8):
    result = invoke("package", str(build_256m_q4_q8), "-p", "vqa")
    assert result.returncode == 0, result.stderr
    assert "ollama create smolvlm2:256m-q8_0-vqa -f" in result.stdout


def test_a_modelfile_the_user_wrote_is_not_replaced(build_256m_q4_q8):
    mine = build_256m_q4_q8 / "smolvlm2-256m-q8_0-caption.Modelfile"
    mine.write_text("FROM ./mine.gguf\n")
    try:
        result = invoke("package", str(build_256m_q4_q8), "-p", "caption")
        assert result.returncode == 2 and "--force" in result.stderr
        assert mine.read_text() == "FROM ./mine.gguf\n"
        assert invoke("package", str(build_256m_q4_q8), "-p", "caption", "--force").returncode == 0
        assert "PARAMETER stop" in mine.read_text()
    finally:
        mine.unlink(missing_ok=True)


def test_cli_route_helpers():
    assert parse_cli_version("ollama version is 0.33.0\n") == ("0.33.0", None, True)
    assert parse_cli_version("Warning: could not connect to a running Ollama instance\n"
                             "Warning: client version is 0.31.2\n") == (None, "0.31.2", False)
    assert parse_cli_version("ollama version is 0.33.0\nWarning: client version is 0.29.0") == \
        ("0.33.0", "0.29.0", True)
    assert cli_create_command("ollama", "smolvlm2:x", Path("a b/M.Modelfile")) == \
        ["ollama", "create", "smolvlm2:x", "-f", "a b/M.Modelfile"]


def test_a_modelfile_left_claimed_by_a_killed_run_is_recorded_by_the_next(build_256m_q4_q8):
    # A SIGKILL between a Modelfile's rename and build.json's save leaves the file and only its claim; the rerun
    # finds the same text there and must still record it (scripts/chaos.py found this).
    import json

    from smolconv.record.manifest import Manifest

    out = build_256m_q4_q8
    manifest = Manifest.load(out)
    name = "smolvlm2-256m-q4_K_M.Modelfile"
    recorded = manifest.output(name)
    assert recorded.sha256 and (out / name).is_file()
    manifest.forget_outputs([name])
    manifest.claim(out / name)  # leaves {"step": "claimed"}, and saves
    assert json.loads((out / "build.json").read_text())["outputs"][name] == {"step": "claimed"}
    result = invoke("package", str(out), "--preset", "general")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "build.json").read_text())["outputs"][name] == recorded.to_dict()
