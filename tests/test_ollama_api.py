"""Which Ollama versions smolconv creates models on, by both routes, against the FAKE Ollama (no model, no build)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smolconv.core.errors import SmolconvError, ToolFailed
from smolconv.runtime.ollama_api import CreateRequest, create_models, creates_adapters
from tests import fake_ollama
from tests.fake_ollama import FakeOllama


@pytest.mark.parametrize(("version", "creates"), [
    ("0.30.0", True),
    ("0.34.0", True),       # the last that creates a model with an ADAPTER
    ("0.34.1", False),
    ("0.34.1-rc0", False),  # a release candidate of 0.34.1 counts as 0.34.1
    ("0.35.0", False),
    ("1.0.0", False),
])
def test_which_ollama_versions_create_a_model_with_an_adapter(version, creates):
    assert creates_adapters(version) is creates
    assert fake_ollama.refuses_adapters(version) is not creates  # the fake stands for the same Ollama


def _request(tmp_path: Path, adapter: bool) -> CreateRequest:
    # Files that do not exist: a refusal must come before anything is read, hashed or sent.
    return CreateRequest(tag="text-lora:256m-q8_0", modelfile=tmp_path / "text-lora-256m-q8_0.Modelfile",
                         files=[tmp_path / "base.gguf", tmp_path / "mmproj.gguf"], template="{{ .Prompt }}",
                         system=None, parameters={}, license="Apache-2.0",
                         adapters=[tmp_path / "text-lora-LoRA-F32.gguf"] if adapter else [])


def _never_hashed(path: Path) -> str:
    raise AssertionError(f"{path} was hashed")


def test_the_api_route_refuses_an_adapter_on_ollama_0_34_1_before_sending_anything(tmp_path):
    with FakeOllama(version="0.34.1") as fake, pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("OLLAMA_HOST", fake.host)
        with pytest.raises(SmolconvError) as refused:
            create_models([_request(tmp_path, adapter=True)], _never_hashed, route="api")
        assert fake.state.requests == [("GET", "/api/version")]
        assert fake.state.uploads == [] and fake.state.creates == []
    assert not isinstance(refused.value, ToolFailed) and refused.value.exit_code == 2
    line = refused.value.one_line()
    assert f"Ollama 0.34.1 (the server at {fake.host})" in line
    assert "--adapter-format merge" in line and "--lora" in line


@pytest.mark.parametrize(("version", "refused"), [("0.34.1", True), ("0.34.0", False)])
def test_the_cli_route_refuses_an_adapter_on_ollama_0_34_1_before_ollama_create(tmp_path, monkeypatch, version,
                                                                                refused):
    log = fake_ollama.install_cli(tmp_path / "bin", monkeypatch, version=version)
    request = _request(tmp_path, adapter=True)
    request.modelfile.write_text("FROM ./base.gguf\nFROM ./mmproj.gguf\nADAPTER ./text-lora-LoRA-F32.gguf\n")
    if refused:
        with pytest.raises(SmolconvError, match=r"Ollama 0\.34\.1 \(the server\).*--adapter-format merge") as error:
            create_models([request], _never_hashed, route="cli")
        assert not isinstance(error.value, ToolFailed)
        assert log.read_text() == ""
    else:
        report = create_models([request], _never_hashed, route="cli")
        assert report.created == [request.tag] and report.version == version
        assert log.read_text().split() == ["create", request.tag, "-f", str(request.modelfile.resolve())]


def test_a_model_without_an_adapter_is_still_created_on_ollama_0_34_1(tmp_path, monkeypatch):
    log = fake_ollama.install_cli(tmp_path / "bin", monkeypatch, version="0.34.1")
    request = _request(tmp_path, adapter=False)
    request.modelfile.write_text("FROM ./base.gguf\nFROM ./mmproj.gguf\n")
    assert create_models([request], _never_hashed, route="cli").created == [request.tag]
    assert log.read_text().startswith("create text-lora:256m-q8_0 -f ")


def test_the_cli_route_names_the_modelfile_so_ollama_finds_it_from_its_folder(tmp_path, monkeypatch):
    # ollama resolves `-f` from its working directory, which smolconv sets to the Modelfile's folder (for the
    # FROM paths): a relative build directory must not be joined twice.
    log = fake_ollama.install_cli(tmp_path / "bin", monkeypatch)
    (tmp_path / "out" / "m").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    request = _request(Path("out/m"), adapter=False)
    request.modelfile.write_text("FROM ./base.gguf\nFROM ./mmproj.gguf\n")
    create_models([request], _never_hashed, route="cli")
    named = Path(log.read_text().split()[-1])
    assert named.is_absolute() and named == (tmp_path / "out/m" / request.modelfile.name)
