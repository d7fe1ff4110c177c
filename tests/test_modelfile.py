"""Modelfiles: every value smolconv writes reads back the same through a reader that follows Ollama's parser."""

from __future__ import annotations

from dataclasses import replace

import pytest

from smolconv.core.errors import SmolconvError
from smolconv.core.names import model_tag
from smolconv.core.templates import Preset, chat_template, load_presets
from smolconv.formats.gguf.package import ModelfileSpec, modelfile_quote, render_examples, render_modelfile
from smolconv.plan import plan_for_shape
from tests.modelfile_parser import parse

HOSTILE = [
    "plain words",
    'She said "hello" and left',
    'ends with a quote"',
    '"starts with a quote',
    'a """triple""" quote in the middle',
    "two\nlines",
    "line one\nline two ends with a quote\"\nline three",
    "  leading and trailing spaces  ",
    "\ttab at the start",
    "# not a comment",
    "PARAMETER stop looks like a command\nFROM /etc/passwd",
    "unicode: café, 東京, emoji 🙂",
    "",
    "C:\\Windows\\path with\\backslashes",
    "{{ .System }} is not expanded",
]


def _spec(system: str | None, text_file: str = "./model Q4.gguf", projector_file: str = "./mmproj f16.gguf",
          license_text: str = "Apache-2.0") -> ModelfileSpec:
    preset = Preset("ocr", "test preset", system, {"temperature": 0.0, "num_predict": 64})
    return ModelfileSpec(tag="smolvlm2:256m-q4_K_M-ocr", modelfile_name="x.Modelfile", text_file=text_file,
                         projector_file=projector_file, plan=plan_for_shape("256m", "Q4_K_M"), preset=preset,
                         source="a test", license=license_text)


@pytest.mark.parametrize("system", HOSTILE)
def test_hostile_system_prompts_read_back_exactly(system):
    commands = parse(render_modelfile(_spec(system)))
    assert [v for n, v in commands if n == "system"] == [system]
    assert [v for n, v in commands if n == "template"] == [chat_template()]


@pytest.mark.parametrize("path", ["./with space.gguf", "/abs/dir with spaces/m.gguf", './quote".gguf',
                                  "./ leading-space.gguf"])
def test_paths_read_back_exactly(path):
    commands = parse(render_modelfile(_spec(None, text_file=path)))
    assert [v for n, v in commands if n == "model"] == [path, "./mmproj f16.gguf"]


def test_every_field_reads_back():
    spec = _spec("Transcribe.", license_text='Line 1\n"quoted"\nLine 3')
    commands = parse(render_modelfile(spec))
    names = [n for n, _ in commands]
    assert names == ["model", "model", "template", "system", "stop", "num_ctx", "num_gpu", "num_predict",
                     "temperature", "license"]
    values = dict(commands[2:])
    assert values["stop"] == "<end_of_utterance>"
    assert values["num_ctx"] == str(spec.plan.num_ctx) and values["num_gpu"] == str(spec.plan.num_gpu)
    assert values["temperature"] == "0.0" and values["license"] == 'Line 1\n"quoted"\nLine 3'


def test_the_header_says_which_ollama_versions_create_it():
    plain = render_modelfile(_spec(None)).splitlines()
    with_lora = render_modelfile(replace(_spec(None), adapter_file="./my-lora-LoRA-F32.gguf")).splitlines()
    assert "# Needs Ollama 0.30.0 or newer" in plain[3] and "0.34.1" not in "".join(plain)
    assert with_lora[3].startswith("# Needs Ollama 0.30.0 up to before 0.34.1 to create it:")
    assert ("adapter", "./my-lora-LoRA-F32.gguf") in parse("\n".join(with_lora))


@pytest.mark.parametrize("value", ['one"""\ntwo"\nthree', 'first line ends with triple"""\nsecond line'])
def test_values_no_quoting_can_hold_are_refused_in_one_line(value):
    with pytest.raises(SmolconvError) as info:
        render_modelfile(_spec(value))
    message = info.value.one_line()
    assert "system prompt" in message and "\n" not in message


def test_characters_ollama_would_drop_are_refused():
    with pytest.raises(SmolconvError, match="U\\+0007"):
        modelfile_quote("bell\a")


def test_quoted_forms_are_minimal():
    assert modelfile_quote("8192") == "8192"
    assert modelfile_quote("<end_of_utterance>") == '"<end_of_utterance>"'
    assert modelfile_quote("two\nlines") == '"""two\nlines"""'


def test_committed_example_modelfiles_are_current_and_parse(tmp_path):
    from pathlib import Path

    committed = Path(__file__).resolve().parent.parent / "modelfiles"
    fresh = render_examples(tmp_path)
    assert sorted(p.name for p in fresh) == sorted(p.name for p in committed.glob("*.Modelfile"))
    presets = load_presets()
    for path in fresh:
        assert path.read_text() == (committed / path.name).read_text(), f"{path.name} is stale: make modelfiles"
        commands = parse(path.read_text())
        froms = [v for n, v in commands if n == "model"]
        assert len(froms) == 2 and froms[1].startswith("./mmproj-")
        values = dict(c for c in commands if c[0] != "model")
        assert values["stop"] == "<end_of_utterance>" and int(values["num_ctx"]) >= 2048
        preset = path.name.removesuffix(".Modelfile").rsplit("-", 1)[-1]
        if preset in presets:
            assert values["system"] == presets[preset].system


def test_tags_follow_ollamas_conventions():
    assert model_tag("SmolVLM2-2.2B-Instruct", "Q4_K_M") == "smolvlm2:2.2b-instruct-q4_K_M"
    assert model_tag("SmolVLM2-2.2B-Instruct", "Q4_K_M", "ocr") == "smolvlm2:2.2b-instruct-q4_K_M-ocr"
    assert model_tag("SmolVLM2-256M-Video-Instruct", "Q8_0") == "smolvlm2:256m-video-instruct-q8_0"
    assert model_tag("SmolVLM-256M-Instruct", "F16") == "smolvlm:256m-instruct-fp16"
    assert model_tag("anything", "Q5_K_M", name="mine") == "mine:q5_K_M"
    with pytest.raises(SmolconvError):
        model_tag("x", "Q4_K_M", name="Bad Name!")


def test_presets_are_complete():
    presets = load_presets()
    assert set(presets) == {"general", "caption", "ocr", "vqa"}
    assert presets["ocr"].parameters["temperature"] == 0
    assert presets["general"].system is None
    assert all(replace(p).description for p in presets.values())
