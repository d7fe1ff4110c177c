"""export-onnx on the 256m fixture (real SmolLM2-135M text weights, random vision tower), exported once per
test session, then run with onnxruntime: smolconv's runner, a plain onnxruntime loop that knows only the
published input names, the smoke suite, the example, and the variants measured against fp32."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smolconv.core.errors import SmolconvError
from smolconv.formats.onnx.export import GRAPHS, ExportOptions, export_onnx, graph_file
from smolconv.formats.onnx.runtime import OnnxVLM
from smolconv.media.drawn import write_smoke_images
from smolconv.media.images import load_image
from smolconv.runtime.chat import Message
from smolconv.runtime.vlm import Sampling
from tests.helpers import ONNX_VARIANTS, invoke

VARIANTS = ONNX_VARIANTS  # what tests/conftest.py's onnx_256m exports (once per run, shared with other files)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "onnx_chat.py"


@pytest.fixture(scope="module")
def hf_model(fixture_256m):
    from smolconv.reference.transformers import _load_reference

    return _load_reference(fixture_256m)


@pytest.fixture(scope="module")
def fp32(onnx_256m) -> OnnxVLM:
    return OnnxVLM(onnx_256m, "fp32")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    return write_smoke_images(tmp_path_factory.mktemp("onnx-images"))


def test_export_writes_the_published_layout(onnx_256m):
    import onnx

    for graph in GRAPHS:
        for variant in VARIANTS:
            assert graph_file(onnx_256m, graph, variant).is_file(), (graph, variant)
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json", "processor_config.json",
                 "generation_config.json", "chat_template.json"):
        assert (onnx_256m / name).is_file(), name
    assert not list(onnx_256m.rglob(".*partial*")), "a staging file was left behind"

    decoder = onnx.load(str(graph_file(onnx_256m, "decoder_model_merged")), load_external_data=False).graph
    names = [i.name for i in decoder.input]
    assert names[:3] == ["inputs_embeds", "attention_mask", "position_ids"]
    assert names[3:5] == ["past_key_values.0.key", "past_key_values.0.value"] and len(names) == 3 + 2 * 30
    assert [o.name for o in decoder.output][:3] == ["logits", "present.0.key", "present.0.value"]
    past = decoder.input[3].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in past] == ["batch_size", 3, "past_sequence_length", 64]
    vision = onnx.load(str(graph_file(onnx_256m, "vision_encoder")), load_external_data=False).graph
    assert [(i.name, i.type.tensor_type.elem_type) for i in vision.input] == [
        ("pixel_values", onnx.TensorProto.FLOAT), ("pixel_attention_mask", onnx.TensorProto.BOOL)]
    assert [o.name for o in vision.output] == ["image_features"]
    embed = onnx.load(str(graph_file(onnx_256m, "embed_tokens")), load_external_data=False).graph
    assert ([i.name for i in embed.input], [o.name for o in embed.output]) == (["input_ids"], ["inputs_embeds"])
    # fp16 keeps float32 inputs and outputs; q4 holds MatMulNBits
    fp16 = onnx.load(str(graph_file(onnx_256m, "decoder_model_merged", "fp16")), load_external_data=False).graph
    assert fp16.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    q4 = onnx.load(str(graph_file(onnx_256m, "decoder_model_merged", "q4")), load_external_data=False).graph
    assert sum(n.op_type == "MatMulNBits" for n in q4.node) == 30 * 7 + 1  # 7 per layer and lm_head


def test_build_json_records_every_output_and_a_rerun_skips_them(onnx_256m, fixture_256m):
    from smolconv.core.hashing import sha256_file

    record = json.loads((onnx_256m / "build.json").read_text())
    assert record["onnx"]["opset"] == 17 and "TorchScript" in record["onnx"]["exporter"]
    step = record["steps"]["onnx:export:decoder_model_merged"]
    assert step["params"]["torch"] and "model.safetensors" in step["inputs"]
    output = record["outputs"]["onnx/decoder_model_merged_q4.onnx"]
    assert output["sha256"] == sha256_file(graph_file(onnx_256m, "decoder_model_merged", "q4"))
    before = {p: p.stat().st_mtime_ns for p in (onnx_256m / "onnx").iterdir()}
    again = export_onnx(ExportOptions(str(fixture_256m), onnx_256m, variants=VARIANTS))
    assert again.written == [] and len(again.reused) == 1 + 3 * len(VARIANTS)
    assert {p: p.stat().st_mtime_ns for p in (onnx_256m / "onnx").iterdir()} == before


def test_the_cli_reruns_the_export_without_redoing_it(onnx_256m, fixture_256m):
    args = ["export-onnx", str(fixture_256m), "--out", str(onnx_256m), "--no-verify"]
    result = invoke(*args, *[a for v in VARIANTS for a in ("--type", v)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "onnx/decoder_model_merged_q4.onnx" in result.stdout
    assert result.stdout.count("reused") == 3 * len(VARIANTS) and "written" not in result.stdout


def test_fp32_graphs_answer_paris_and_stop(fp32):
    answer = "".join(fp32.stream([Message.of("user", "What is the capital of France?")], 48, Sampling()))
    assert "Paris" in answer, answer


def test_fp32_gives_transformers_greedy_tokens(fp32, hf_model):
    import torch

    tokenizer, model = hf_model
    question = "Write a long story about a dragon who lives in a castle."
    ids, _ = fp32.prompt([Message.of("user", question)])
    with torch.no_grad():
        reference = model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                                   eos_token_id=sorted(fp32.eos_ids), pad_token_id=2)[0, len(ids):].tolist()
    ours = list(fp32.generate(ids, max_tokens=20, sampling=Sampling()))
    assert len(ours) == 20 and ours == reference


def test_vision_features_match_the_hf_connector(fp32, hf_model, fixture_256m):
    from smolconv.formats.onnx.verify import tile_features
    from smolconv.reference.metrics import cosine
    from smolconv.reference.prompts import _test_tile
    from smolconv.reference.transformers import reference_tile_embeddings

    tile = _test_tile(512)
    processor = json.loads((fixture_256m / "preprocessor_config.json").read_text())
    ours = tile_features(fp32, tile, processor)
    assert ours.shape == (64, 576)
    assert cosine(reference_tile_embeddings(hf_model[1], fixture_256m, tile), ours) >= 0.9999


def test_a_plain_onnxruntime_loop_loads_the_folder(onnx_256m):
    """Only onnxruntime, tokenizers and the published names: what a transformers.js-style runtime does."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    folder = onnx_256m / "onnx"
    vision, embed, decoder = (ort.InferenceSession(str(folder / f"{g}.onnx"), providers=["CPUExecutionProvider"])
                              for g in ("vision_encoder", "embed_tokens", "decoder_model_merged"))
    tokenizer = Tokenizer.from_file(str(onnx_256m / "tokenizer.json"))
    config = json.loads((onnx_256m / "config.json").read_text())["text_config"]
    ids = tokenizer.encode("<|im_start|>User: What is the capital of France?<end_of_utterance>\nAssistant:",
                           add_special_tokens=False).ids
    past = {i.name: np.zeros((1, config["num_key_value_heads"], 0, config["head_dim"]), np.float32)
            for i in decoder.get_inputs() if i.name.startswith("past_key_values")}
    assert len(past) == 2 * config["num_hidden_layers"]
    new, generated = ids, []
    for _ in range(8):
        total = len(ids) + len(generated)
        outputs = decoder.run(None, {"inputs_embeds": embed.run(None, {"input_ids": np.array([new])})[0],
                                     "attention_mask": np.ones((1, total), np.int64),
                                     "position_ids": np.arange(total - len(new), total)[None], **past})
        past = {name.replace("present", "past_key_values"): value for name, value in
                zip((o.name for o in decoder.get_outputs()[1:]), outputs[1:], strict=True)}
        new = [int(outputs[0][0, -1].argmax())]
        generated += new
    assert "Paris" in tokenizer.decode(generated)
    # Two sets of images, the second padded (all-zero pixels, mask off) as a batch is: padding is dropped.
    pixels = np.random.default_rng(0).uniform(-1, 1, (2, 2, 3, 512, 512)).astype(np.float32)
    mask = np.ones((2, 2, 512, 512), bool)
    pixels[1, 1], mask[1, 1] = 0, False
    features = vision.run(None, {"pixel_values": pixels, "pixel_attention_mask": mask})[0]
    assert features.shape == (3, 64, 576)


def test_numpy_preprocessing_matches_transformers(fp32, images):
    from PIL import Image

    from smolconv.runtime.preprocess import NumpyImageProcessor

    for key in ("scene_png", "large_jpeg"):
        with Image.open(images[key]) as image:
            ours, theirs = NumpyImageProcessor(fp32.folder)(image), fp32.images(image)
        assert (ours.rows, ours.cols) == (theirs.rows, theirs.cols) != (0, 0)
        np.testing.assert_allclose(ours.pixels, theirs.pixels, atol=1e-5)


def test_the_runner_writes_image_features_over_the_image_rows(fp32, images):
    from smolconv.runtime.preprocess import Tiles, image_prompt

    full, _ = fp32.prompt([Message.of("user", "Describe this image.", [load_image(images["scene_png"])])])
    assert full.count(fp32.image_token_id) == 5 * 64  # 4 tiles and the overview
    tiles = Tiles(np.random.default_rng(0).uniform(-1, 1, (1, 3, 512, 512)).astype(np.float32), 0, 0)
    ids = fp32.tokenizer.encode("Look: " + image_prompt(tiles, 64) + " ok", add_special_tokens=False).ids
    rows = [i for i, t in enumerate(ids) if t == fp32.image_token_id]
    assert len(rows) == 64
    embeds = fp32.prompt_embeddings(ids, [tiles])
    np.testing.assert_allclose(embeds[0, rows], fp32.image_features([tiles]), rtol=1e-5, atol=1e-6)
    others = [i for i in range(len(ids)) if i not in rows]
    np.testing.assert_array_equal(embeds[0, others], fp32.embeddings(ids)[0, others])
    with pytest.raises(SmolconvError, match="<image> tokens but the images gave"):
        fp32.prompt_embeddings(ids[: rows[10]], [tiles])


def test_variants_load_and_are_measured_against_fp32(onnx_256m, fixture_256m):
    from smolconv.formats.onnx.verify import verify_onnx

    report = verify_onnx(onnx_256m, fixture_256m, tokens=128)
    assert report.passed, report.failures
    assert report.max_nmse < 1e-5 and report.vision_cosine >= 0.9999
    measured = {v.variant: v for v in report.variants}
    assert set(measured) == set(VARIANTS) - {"fp32"}
    assert measured["fp16"].mean_kld < 0.01 and measured["fp16"].same_top > 0.95
    # less precision, more divergence: the order the sizes promise
    assert measured["fp16"].mean_kld < measured["quantized"].mean_kld
    assert measured["fp16"].mean_kld < measured["q4"].mean_kld
    assert all(0 <= v.same_top <= 1 and v.vision_cosine > 0.9 for v in report.variants)
    assert json.loads((onnx_256m / "build.json").read_text())["verify"]["passed"] is True


def test_smoke_runs_on_the_onnx_backend(onnx_256m, tmp_path):
    from smolconv.checks.smoke import SmokeOptions, smoke

    options = SmokeOptions(str(onnx_256m), backend="onnx", types=("quantized",), report_dir=tmp_path,
                           cases=("text_fact", "image_png", "corrupt_image"), strict=True)
    [report] = smoke(options)
    assert report.passed, [(r.name, r.reason) for r in report.results]
    image = {r.name: r for r in report.results}["image_png"]
    assert image.answer.prompt_tokens >= 5 * 64  # the image's tiles reached the decoder
    assert (tmp_path / "quantized.onnx.json").is_file()


def test_example_streams_an_answer_without_torch(onnx_256m, images):
    code = ("import runpy, sys; sys.argv = sys.argv[1:]\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as exc:\n    print('exit', exc.code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(EXAMPLE), str(onnx_256m), str(images["scene_jpeg"]),
                             "What colour is the house?", "--variant", "q4", "--max-tokens", "8"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("exit 0 False"), result.stdout  # torch was never imported
    assert "prompt tokens" in result.stdout and "generated" in result.stdout


# -- bad input -----------------------------------------------------------------------------------------


def test_unknown_variant_is_refused_before_anything_is_written(fixture_256m, tmp_path):
    result = invoke("export-onnx", str(fixture_256m), "--out", str(tmp_path / "out"), "--type", "q3")
    assert result.returncode == 2 and "unknown ONNX variant 'q3'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_missing_checkpoint_is_refused_in_one_line(tmp_path):
    result = invoke("export-onnx", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "neither a local directory nor a Hub id" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_users_file_is_not_replaced_without_force(fixture_256m, tmp_path):
    out = tmp_path / "out"
    (out / "onnx").mkdir(parents=True)
    (out / "onnx" / "vision_encoder.onnx").write_text("mine")
    with pytest.raises(SmolconvError, match="not written by this build"):
        export_onnx(ExportOptions(str(fixture_256m), out, variants=("fp32",)))
    assert (out / "onnx" / "vision_encoder.onnx").read_text() == "mine"


@pytest.mark.slow  # exports and runs the graphs in onnxruntime
def test_an_adapter_is_merged_before_export_and_checked_against_peft(fixture_tiny, tmp_path):
    from smolconv.formats.onnx.verify import verify_onnx
    from tests.adapters import make_adapter

    adapter = make_adapter(fixture_tiny, tmp_path / "tiny-lora")
    out = tmp_path / "out"
    export_onnx(ExportOptions(str(fixture_tiny), out, variants=("fp32",), adapter=str(adapter)))
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["adapter"]["format"] == "merge" and manifest["adapter"]["name"] == "tiny-lora"
    assert manifest["adapter"]["parts"] == ["vision", "text"]
    assert (out / "merged" / "config.json").is_file()
    # Against transformers + peft (unmerged): the graphs are the fine-tune, vision tower included.
    report = verify_onnx(out, variants=())
    assert report.passed, report.failures
    assert report.max_nmse < 1e-5


def test_an_adapter_for_another_model_is_refused_before_export(fixture_tiny, fixture_256m, tmp_path):
    from tests.adapters import make_adapter

    adapter = make_adapter(fixture_tiny, tmp_path / "tiny-lora")
    with pytest.raises(SmolconvError, match="trained on"):
        export_onnx(ExportOptions(str(fixture_256m), tmp_path / "out", adapter=str(adapter)))
    assert not (tmp_path / "out").exists()


def test_a_missing_extra_names_the_install_command(monkeypatch):
    import builtins

    from smolconv.formats.onnx import require_onnx

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(SmolconvError, match=r"pip install 'smolconv\[onnx\]'"):
        require_onnx()


def test_the_runner_refuses_a_folder_without_the_variant(onnx_256m, tmp_path):
    with pytest.raises(SmolconvError, match="is not an ONNX SmolVLM folder"):
        OnnxVLM(tmp_path, "fp32")
    with pytest.raises(SmolconvError, match="unknown ONNX variant"):
        OnnxVLM(onnx_256m, "int3")


def test_tensors_written_one_file_each_are_merged_into_one_data_file(tmp_path):
    """What export does with a graph over 2 GB (the exporter's one-file-per-tensor layout), on a small graph."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from smolconv.formats.onnx.export import merge_external_data

    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((64, 64)).astype(np.float32) for _ in range(3)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", f"w{i}"], [f"h{i + 1}"]) for i in range(3)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("h3", TensorProto.FLOAT, [1, 64])],
                              [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    onnx.save_model(model, str(scratch / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0)
    assert len(list(scratch.iterdir())) == 4
    final = tmp_path / "out" / "decoder_model_merged.onnx"
    final.parent.mkdir()
    merge_external_data(scratch / "model.onnx", final)
    assert [p.name for p in scratch.iterdir()] == ["model.onnx"], "the per-tensor files are deleted once copied"
    assert sorted(p.name for p in final.parent.iterdir()) == ["decoder_model_merged.onnx",
                                                              "decoder_model_merged.onnx_data"]
    x = rng.standard_normal((1, 64)).astype(np.float32)
    out = ort.InferenceSession(str(final), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(out, x @ weights[0] @ weights[1] @ weights[2], rtol=1e-4)


def test_a_graph_with_external_data_is_quantized_into_its_own_data_file(tmp_path):
    """The 2.2B decoder's `_quantized` path, on a small graph: the weights stay in `<name>_quantized.onnx_data`,
    and the graph equals what quantize_dynamic makes when left to its own shape inference."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from smolconv.formats.onnx.quantize import make_variant

    rng = np.random.default_rng(0)
    table, weight = rng.standard_normal((256, 64)).astype(np.float32), rng.standard_normal((64, 64)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["h"]), helper.make_node("MatMul", ["h", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "seq"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", 64])],
                              [numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = tmp_path / "decoder_model_merged.onnx"
    onnx.save_model(model, str(source), save_as_external_data=True, location=f"{source.name}_data")
    target = tmp_path / "decoder_model_merged_quantized.onnx"
    make_variant("quantized", source, target)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "decoder_model_merged.onnx", "decoder_model_merged.onnx_data",
        "decoder_model_merged_quantized.onnx", "decoder_model_merged_quantized.onnx_data"]
    ours = onnx.load(str(target), load_external_data=False)
    assert {ExternalDataInfo(t).location for t in _get_all_tensors(ours) if uses_external_data(t)} == {
        "decoder_model_merged_quantized.onnx_data"}
    quantize_dynamic(tmp_path / "decoder_model_merged.onnx", tmp_path / "plain.onnx", weight_type=QuantType.QUInt8,
                     op_types_to_quantize=["MatMul", "Gather"], extra_options={"MatMulConstBOnly": True})
    plain = onnx.load(str(tmp_path / "plain.onnx"))
    assert list(ours.graph.node) == list(plain.graph.node)
    assert list(ours.graph.value_info) == list(plain.graph.value_info)
    ids = np.array([[3, 200, 17]], np.int64)
    out = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    expected = table[ids] @ weight
    assert np.abs(out - expected).max() < 0.05 * np.abs(expected).max()


@pytest.mark.parametrize("tied", [False, True])
def test_each_graph_loads_only_its_own_weights_and_the_same_values(fixture_tiny, tmp_path, tied):
    """load_model reads only the tensors a graph uses (the rest stays on the meta device, taking no memory); what
    it reads equals from_pretrained's float32 model, a head tied to the embedding included."""
    import torch
    from transformers import AutoConfig, SmolVLMForConditionalGeneration

    from smolconv.formats.onnx.export import load_model

    checkpoint = fixture_tiny
    if tied:  # the tiny fixture's config with the head tied, saved as transformers saves it (no lm_head tensor)
        config = AutoConfig.from_pretrained(fixture_tiny)
        config.tie_word_embeddings = config.text_config.tie_word_embeddings = True
        torch.manual_seed(0)
        checkpoint = tmp_path / "tied"
        SmolVLMForConditionalGeneration(config).save_pretrained(checkpoint)
    reference = SmolVLMForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).state_dict()
    parts = {"vision_encoder": ("model.vision_model.", "model.connector."),
             "embed_tokens": ("model.text_model.embed_tokens.",),
             "decoder_model_merged": ("model.text_model.layers.", "model.text_model.norm.", "lm_head.")}
    for graph, prefixes in parts.items():
        loaded = load_model(checkpoint, (graph,)).state_dict()
        assert {k for k in loaded if k.startswith(prefixes)} == {k for k in reference if k.startswith(prefixes)}
        assert not [k for k in loaded if not k.startswith(prefixes) and not k.endswith("inv_freq")], graph
        for name, value in loaded.items():
            assert not value.is_meta and value.dtype == torch.float32, name
            if name in reference:
                assert torch.equal(value, reference[name]), name


def test_the_vision_graph_takes_patches_that_do_not_divide_the_tile(fixture_tiny, tmp_path):
    """2.2B's tower cuts 384-px tiles into 14-px patches (27 of them, 6 px left over): the exported graph must
    drop the remainder as the patch convolution does. The tiny fixture's config, reshaped to that case."""
    import onnxruntime as ort
    import torch
    from transformers import AutoConfig, SmolVLMForConditionalGeneration

    from smolconv.formats.onnx.export import export_graph
    from smolconv.reference.metrics import cosine
    from smolconv.reference.transformers import reference_tile_embeddings

    config = AutoConfig.from_pretrained(fixture_tiny)
    config.vision_config.patch_size, config.vision_config.image_size, config.scale_factor = 14, 130, 3
    torch.manual_seed(0)
    model = SmolVLMForConditionalGeneration(config).eval()
    path = tmp_path / "vision_encoder.onnx"
    export_graph(model, "vision_encoder", path)
    tile = np.random.default_rng(0).integers(0, 255, (130, 130, 3)).astype(np.uint8)
    pixels = ((tile.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None, None]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"pixel_values": pixels, "pixel_attention_mask": np.ones((1, 1, 130, 130), bool)})[0]
    reference = reference_tile_embeddings(model, fixture_tiny, tile)
    assert ours.shape == (1, 9, 256) and cosine(reference, ours[0]) >= 0.9999


def test_the_onnx_verify_gates_decide_the_result():
    from smolconv.formats.onnx.verify import OnnxVerifyReport, TextResult

    good = OnnxVerifyReport([TextResult("a", 3, 1e-11, True)], vision_cosine=0.99999, vision_nmse=1e-9)
    assert good.passed and good.failures == []
    bad = OnnxVerifyReport([TextResult("a", 3, 1e-11, True), TextResult("b", 4, 2e-5, False)], 0.999, 1e-3)
    assert not bad.passed
    assert bad.failures == ["fp32 logits NMSE 2.00e-05 is over the gate 1e-05",
                            "vision features cosine 0.999000 is under 0.9999"]
