"""A real client of the ONNX folder: transformers.js 4 in Node (tests/js/, pinned in its package-lock.json), loading
the shared export (tests/conftest.py's onnx_256m) from local files with AutoProcessor and AutoModelForVision2Seq,
as fp32 and q4. Its greedy answer must be smolconv's runner's token for token, and an image prompt must expand to
the input ids transformers' own processor makes for that image.

Also the side files export-onnx completes for transformers.js (`processor_class` in preprocessor_config.json,
`chat_template` in tokenizer_config.json), on checkpoints in the transformers 4 and 5 layouts: in functions on small
directories, and once through transformers.js on the shared export's graphs with a transformers 5 layout's files.

Node 20.9 or later, and the npm packages: `make js-deps` (what `make test` runs first). Without such a `node` the
Node tests are skipped, unless SMOLCONV_REQUIRE_NODE is set (CI sets it): then they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from smolconv.formats.onnx.export import ExportResult, _copy_side_files, completed_side_files
from smolconv.formats.onnx.runtime import OnnxVLM
from smolconv.media.drawn import write_smoke_images
from smolconv.runtime.chat import Message
from smolconv.runtime.vlm import Sampling

JS = Path(__file__).resolve().parent / "js"
SCRIPT = JS / "smolvlm.mjs"
QUESTION = "What is the capital of France?"
TEXT_TOKENS = 24
IMAGE_QUESTION = "Describe this image."
IMAGE_TOKENS = 4
MIN_NODE = (20, 9)  # sharp 0.35, transformers.js 4.3's image library (Debian bookworm's Node is 18)


@pytest.fixture(scope="session")  # session: set up before the shared export, so a test without Node skips at once
def node() -> str:
    path = shutil.which("node")
    if path is None:
        reason = "Node.js is not installed (Node 20.9 or later and npm, then make js-deps)"
    else:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout.strip()
        if tuple(int(n) for n in version.lstrip("v").split(".")[:2]) < MIN_NODE:
            reason = (f"Node {version} is older than 20.9, which transformers.js 4.3's image library (sharp) needs; "
                      ".ci/run installs Node 24 from npm (tests/js/runtime)")
        else:
            reason = None
    if reason:
        if os.environ.get("SMOLCONV_REQUIRE_NODE"):
            pytest.fail(f"{reason}; CI requires the transformers.js test")
        pytest.skip(reason)
    if not (JS / "node_modules" / "@huggingface" / "transformers" / "package.json").is_file():
        pytest.fail("transformers.js is not installed in tests/js: run `make js-deps` "
                    "(ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci in tests/js)")
    return path


def run_js(node: str, folder: Path, dtype: str, *args: str, check: bool = True) -> dict | subprocess.CompletedProcess:
    """tests/js/smolvlm.mjs on `folder`: its JSON answer (the last line it prints), or the process when not `check`."""
    result = subprocess.run([node, str(SCRIPT), str(folder), "--dtype", dtype, *args], cwd=JS, capture_output=True,
                            text=True, timeout=600)
    if not check:
        return result
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@cache
def smolconv_greedy(folder: Path, variant: str, question: str, n: int) -> tuple[list[int], list[int]]:
    """smolconv's runner on the same folder and variant: the prompt's ids and `n` greedy tokens.

    transformers.js ends only on generation_config's eos; the runner also on end-of-turn tokens (`<|im_end|>`,
    as llama-server does). Both are held to transformers.js's rule here, so every token is compared."""
    runner = OnnxVLM(folder, variant)
    eos = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]
    runner.eos_ids = set(eos if isinstance(eos, list) else [eos])
    ids, _ = runner.prompt([Message.of("user", question)])
    return ids, list(runner.generate(ids, max_tokens=n, sampling=Sampling()))


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory) -> Path:
    return write_smoke_images(tmp_path_factory.mktemp("js-images"))["scene_png"]


# -- transformers.js on the shared export ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["fp32", "q4"])
def test_transformers_js_answers_with_smolconvs_greedy_tokens(node, onnx_256m, dtype):
    answer = run_js(node, onnx_256m, dtype, "--prompt", QUESTION, "--max-new-tokens", str(TEXT_TOKENS))
    pinned = json.loads((JS / "package.json").read_text())["dependencies"]["@huggingface/transformers"]
    assert answer["transformers_js"] == pinned, "tests/js/node_modules is stale: run `make js-deps`"
    assert (answer["processor"], answer["model"]) == ("Idefics3Processor", "SmolVLMForConditionalGeneration")
    ids, tokens = smolconv_greedy(onnx_256m, dtype, QUESTION, TEXT_TOKENS)
    assert answer["input_ids"] == ids
    assert len(tokens) == TEXT_TOKENS and answer["tokens"] == tokens
    if dtype == "fp32":
        assert "Paris" in answer["text"], answer["text"]


@pytest.mark.parametrize("dtype", ["fp32", "q4"])
def test_transformers_js_runs_an_image_prompt(node, onnx_256m, fixture_256m, scene_png, dtype):
    answer = run_js(node, onnx_256m, dtype, "--image", str(scene_png), "--prompt", IMAGE_QUESTION,
                    "--max-new-tokens", str(IMAGE_TOKENS))
    expected = transformers_image_prompt(fixture_256m, scene_png, IMAGE_QUESTION)
    assert answer["input_tokens"] == len(expected) == 344  # 4 tiles and the overview, 64 tokens each, and the text
    assert answer["input_ids"] == expected
    assert answer["pixel_values"] == [1, 5, 3, 512, 512]
    assert 1 <= len(answer["tokens"]) <= IMAGE_TOKENS  # the random vision tower makes the answer noise


def transformers_image_prompt(checkpoint: Path, image: Path, question: str) -> list[int]:
    """The input ids transformers' own processor makes for one image and a question, from the source checkpoint.

    Idefics3Processor: SmolVLMProcessor imports its video processor, which needs torchvision (not installed
    here); the image prompt layout is the same (transformers.js's SmolVLMProcessor is its Idefics3Processor)."""
    from PIL import Image
    from transformers import AutoTokenizer
    from transformers.models.idefics3.processing_idefics3 import Idefics3Processor

    try:  # transformers 5: the PIL backend; 4.x: the slow processor (the fast ones need torchvision)
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil as ImageProcessor,
        )
    except ImportError:
        from transformers.models.idefics3.image_processing_idefics3 import Idefics3ImageProcessor as ImageProcessor

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    seq_len = json.loads((checkpoint / "processor_config.json").read_text())["image_seq_len"]
    processor = Idefics3Processor(ImageProcessor.from_pretrained(checkpoint), tokenizer, image_seq_len=seq_len)
    text = tokenizer.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                      {"type": "text", "text": question}]}],
                                         add_generation_prompt=True, tokenize=False)
    with Image.open(image) as picture:
        return processor(text=text, images=[picture.convert("RGB")], return_tensors="np")["input_ids"][0].tolist()


def test_the_shared_export_has_what_transformers_js_reads(onnx_256m):
    preprocessor = json.loads((onnx_256m / "preprocessor_config.json").read_text())
    tokenizer = json.loads((onnx_256m / "tokenizer_config.json").read_text())
    assert preprocessor["processor_class"] == "SmolVLMProcessor"
    assert tokenizer["chat_template"] == json.loads((onnx_256m / "chat_template.json").read_text())["chat_template"]


# -- the side files, in the transformers 4 and 5 layouts -----------------------------------------------------------


def transformers5_layout(source: Path, out: Path, nested: bool) -> Path:
    """`source`'s side files (transformers 4 layout) as transformers 5 saves them: the chat template only in
    chat_template.jinja, with `nested` the image processor inside processor_config.json (ProcessorMixin's
    save_pretrained) instead of preprocessor_config.json, and (the case with nothing to take it from) no
    `processor_class` anywhere."""
    out.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "special_tokens_map.json"):
        shutil.copyfile(source / name, out / name)

    def read(name: str) -> dict:
        return json.loads((source / name).read_text())

    def write(name: str, data: dict) -> None:
        (out / name).write_text(json.dumps(data, indent=2) + "\n")

    (out / "chat_template.jinja").write_text(read("chat_template.json")["chat_template"])
    write("tokenizer_config.json", {k: v for k, v in read("tokenizer_config.json").items()
                                    if k not in ("chat_template", "processor_class")})
    image_processor = {k: v for k, v in read("preprocessor_config.json").items() if k != "processor_class"}
    processor = {k: v for k, v in read("processor_config.json").items() if k != "processor_class"}
    if nested:
        write("processor_config.json", {"image_processor": image_processor, **processor})
    else:
        write("preprocessor_config.json", image_processor)
        write("processor_config.json", processor)
    return out


def write_side_files(checkpoint: Path, out: Path) -> tuple[ExportResult, dict]:
    """export-onnx's side-file step alone: its result and the step's record in build.json."""
    from smolconv.core.progress import no_progress
    from smolconv.record.manifest import Manifest
    from smolconv.source.checkpoint import checkpoint_files

    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(out)
    inputs = {p.name: manifest.sha256(p) for p in checkpoint_files(checkpoint)}
    result = ExportResult(out)
    _copy_side_files(checkpoint, out, manifest, inputs, False, result, no_progress)
    return result, json.loads((out / "build.json").read_text())["steps"]["onnx:files"]


@pytest.mark.parametrize("nested", [False, True], ids=["preprocessor_config", "nested_in_processor_config"])
def test_a_transformers5_checkpoint_gets_processor_class_and_chat_template(fixture_256m, tmp_path, nested):
    source = transformers5_layout(fixture_256m, tmp_path / "t5", nested)
    result, step = write_side_files(source, tmp_path / "out")
    out = tmp_path / "out"
    template = (source / "chat_template.jinja").read_text()
    tokenizer = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer == {**json.loads((source / "tokenizer_config.json").read_text()), "chat_template": template}
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    image_processor = (json.loads((source / "processor_config.json").read_text())["image_processor"] if nested
                       else json.loads((source / "preprocessor_config.json").read_text()))
    assert preprocessor == {**image_processor, "processor_class": "SmolVLMProcessor"}
    assert list(preprocessor)[:-1] == list(image_processor)  # the source's fields in their order, then the new one
    for name in ("processor_config.json", "chat_template.jinja", "tokenizer.json", "config.json"):
        assert (out / name).read_bytes() == (source / name).read_bytes(), name
    added = {"tokenizer_config.json": {"chat_template": {"from": "chat_template.jinja"}},
             "preprocessor_config.json": {"processor_class": {"value": "SmolVLMProcessor", "from": "default"}}}
    if nested:
        added["preprocessor_config.json"]["created_from"] = "processor_config.json's image_processor"
    assert step["params"]["added"] == added
    assert result.written == ["config and tokenizer files"]
    again, _ = write_side_files(source, out)
    assert again.reused == ["config and tokenizer files"]


def test_a_transformers4_checkpoint_is_copied_as_it_is(fixture_256m, tmp_path):
    assert completed_side_files(fixture_256m) == ({}, {})
    _, step = write_side_files(fixture_256m, tmp_path / "out")
    assert step["params"]["added"] == {}
    for name in step["params"]["files"]:
        assert (tmp_path / "out" / name).read_bytes() == (fixture_256m / name).read_bytes(), name


def test_the_processor_class_comes_from_the_checkpoint_and_no_template_is_invented(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text('{"image_processor_type": "Idefics3ImageProcessor"}')
    (tmp_path / "tokenizer_config.json").write_text('{"processor_class": "Idefics3Processor", "eos_token": "x"}')
    completed, added = completed_side_files(tmp_path)
    assert completed == {"preprocessor_config.json": {"image_processor_type": "Idefics3ImageProcessor",
                                                      "processor_class": "Idefics3Processor"}}
    assert added == {"preprocessor_config.json": {"processor_class": {"value": "Idefics3Processor",
                                                                      "from": "tokenizer_config.json"}}}
    (tmp_path / "chat_template.json").write_text('{"chat_template": "{{ messages }}"}')
    completed, added = completed_side_files(tmp_path)
    assert completed["tokenizer_config.json"] == {"processor_class": "Idefics3Processor", "eos_token": "x",
                                                  "chat_template": "{{ messages }}"}
    assert added["tokenizer_config.json"] == {"chat_template": {"from": "chat_template.json"}}


@pytest.mark.parametrize("nested", [False, True], ids=["preprocessor_config", "nested_in_processor_config"])
def test_transformers_js_loads_a_transformers5_checkpoints_export(node, onnx_256m, fixture_256m, tmp_path, nested):
    """The shared export's q4 graphs with side files written from a transformers 5 layout: transformers.js answers as
    it does on the export itself. The same files copied as they are (what export-onnx did before) do not load."""
    source = transformers5_layout(fixture_256m, tmp_path / "t5", nested)
    folder = tmp_path / "exports" / "t5-onnx"
    write_side_files(source, folder)
    (folder / "onnx").symlink_to(onnx_256m / "onnx", target_is_directory=True)
    answer = run_js(node, folder, "q4", "--prompt", QUESTION, "--max-new-tokens", "8")
    assert answer["tokens"] == smolconv_greedy(onnx_256m, "q4", QUESTION, TEXT_TOKENS)[1][:8]

    copied = tmp_path / "exports" / "copied-onnx"
    shutil.copytree(source, copied)
    (copied / "onnx").symlink_to(onnx_256m / "onnx", target_is_directory=True)
    result = run_js(node, copied, "q4", "--prompt", QUESTION, "--max-new-tokens", "8", check=False)
    symptoms = (("was not found locally", "preprocessor_config.json") if nested
                else ("Unable to apply chat template without a tokenizer",))
    assert result.returncode != 0 and all(s in result.stderr for s in symptoms), result.stderr[-2000:]
