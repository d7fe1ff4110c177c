"""export-mlx: mlx-vlm's converter on the fixtures (both transformers layouts, tied and untied embeddings), the
export checked against transformers, reruns, the traps smolconv fixes or refuses, and bad input.

Skipped when MLX is not installed (`pip install 'smolconv[mlx]'`), unless SMOLCONV_REQUIRE_MLX=1, as in CI. The
tiny fixtures carry most of it; one export of the 256m fixture (real SmolLM2 text) checks the default --bits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smolconv.core.choices import MlxBits, MlxDtype
from smolconv.core.errors import SmolconvError
from smolconv.formats.mlx import require_mlx
from smolconv.formats.mlx.export import (
    DEFAULT_BITS_LARGE,
    DEFAULT_BITS_SMALL,
    STEP,
    ExportMlxOptions,
    default_bits,
    export_mlx,
    weight_names,
)
from tests.helpers import assert_one_line_error


def _missing() -> str | None:
    try:
        require_mlx()
    except SmolconvError as exc:
        return exc.one_line()
    return None


MISSING = _missing()
needs_mlx = pytest.mark.skipif(MISSING is not None and os.environ.get("SMOLCONV_REQUIRE_MLX") != "1",
                               reason=f"{MISSING} (SMOLCONV_REQUIRE_MLX=1 makes this a failure)")

# `smolconv export-mlx` as installed; "no-mlx" first hides MLX from the process, as on a machine without the extra.
HARNESS = """import sys
if sys.argv[1] == "no-mlx":
    sys.modules["mlx"] = sys.modules["mlx.core"] = None
from smolconv.cli import run
sys.argv = ["smolconv", *sys.argv[2:]]
run()
"""


def run_export_mlx(*args: str, hide_mlx: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HARNESS, "no-mlx" if hide_mlx else "-", "export-mlx", *args],
                          capture_output=True, text=True, timeout=1800)


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []


@pytest.fixture(scope="module", params=["fixture_tiny", "fixture_tiny_t5"])
def tiny_fp32(request, tmp_path_factory):
    """(checkpoint, result): a float32, unquantized export of a tiny fixture in each transformers layout."""
    checkpoint = request.getfixturevalue(request.param)
    out = tmp_path_factory.mktemp("mlx") / f"{request.param}-mlx"
    return checkpoint, export_mlx(ExportMlxOptions(str(checkpoint), out, bits=MlxBits.NONE, dtype=MlxDtype.FP32))


@pytest.fixture(scope="module")
def tiny_q4(fixture_tiny_t5, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A 4-bit bfloat16 export of the tiny transformers-5 fixture, made and verified by the command line."""
    out = tmp_path_factory.mktemp("mlx") / "tiny-q4"
    return out, run_export_mlx(str(fixture_tiny_t5), "--out", str(out), "--bits", "4", "--dtype", "bf16")


@needs_mlx
def test_an_fp32_export_is_transformers_within_the_gate(tiny_fp32):
    from smolconv.formats.mlx.verify import verify_mlx

    checkpoint, result = tiny_fp32
    out = result.out_dir
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "processor_config.json", "README.md", "build.json"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.partial")), "a staging file was left behind"
    config = json.loads((out / "config.json").read_text())
    assert "quantization" not in config and config["text_config"]["rope_theta"] == 100000.0
    tensors = weight_names(out)
    assert {t["dtype"] for t in tensors.values()} == {"F32"}
    assert "language_model.lm_head.weight" in tensors and not any(n.endswith(".scales") for n in tensors)
    # Only the transformers-5 layout needs the RoPE fix; the tiny fixtures' embeddings are not tied.
    layout5 = "rope_parameters" in json.loads((checkpoint / "config.json").read_text())["text_config"]
    assert [f.split()[0] for f in result.fixes] == (["text_config.rope_theta"] if layout5 else [])
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["steps"][STEP]["params"]["mlx_vlm"] == "0.7.10"
    assert manifest["source"]["path"] == str(checkpoint.resolve())

    report = verify_mlx(out)
    assert report.passed and report.gated, report.failures
    assert report.max_nmse < 1e-6 and report.vision_nmse < 1e-6
    assert all(r.top1_same for r in report.text) and report.image.top1_same
    assert report.image.n_tokens > 16  # the tile's image tokens are in the prompt
    assert (out / "verify.json").is_file()


@needs_mlx
def test_a_rerun_skips_and_reuses_verify(tiny_fp32):
    from smolconv.formats.mlx.verify import verify_mlx

    checkpoint, first = tiny_fp32
    before = {p.name: p.stat().st_mtime_ns for p in first.files}
    verify_mlx(first.out_dir)
    again = export_mlx(ExportMlxOptions(str(checkpoint), first.out_dir, bits=MlxBits.NONE, dtype=MlxDtype.FP32))
    assert again.skipped and {p.name: p.stat().st_mtime_ns for p in again.files} == before
    assert again.fixes == first.fixes
    assert verify_mlx(first.out_dir).reused


@needs_mlx
def test_an_export_that_lost_rope_theta_fails_verify(tiny_fp32, tmp_path):
    """The trap smolconv fixes: without text_config.rope_theta mlx-vlm runs RoPE at 1e6 and answers wrongly."""
    from smolconv.formats.mlx.verify import verify_mlx

    _, result = tiny_fp32
    broken = tmp_path / "broken"
    shutil.copytree(result.out_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    del config["text_config"]["rope_theta"]
    (broken / "config.json").write_text(json.dumps(config))
    report = verify_mlx(broken, force=True)
    assert not report.passed
    assert any(f.startswith("logits NMSE") for f in report.failures), report.failures
    assert report.max_nmse > 1e-4
    assert report.vision_nmse < 1e-6  # the vision tower has no RoPE: only the decoder is wrong


@needs_mlx
def test_the_command_line_exports_4_bit_and_measures_it(tiny_q4):
    out, result = tiny_q4
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4-bit, groups of 64" in result.stdout and "mean KLD" in result.stdout and "not gated" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"] == {"group_size": 64, "bits": 4, "mode": "affine"}
    assert config["quantization_config"] == config["quantization"]
    tensors = weight_names(out)
    # Every decoder and connector projection is quantized (2 layers × 7, lm_head, connector; the embeddings too);
    # the vision tower stays in bfloat16.
    assert sum(n.endswith(".scales") for n in tensors) == 2 * 7 + 3
    assert not any(n.startswith("vision_model.") and n.endswith(".scales") for n in tensors)
    assert tensors["vision_model.post_layernorm.weight"]["dtype"] == "BF16"
    report = json.loads((out / "verify.json").read_text())
    assert report["passed"] and not report["gated"] and report["quantized"]["n_positions"] == 512


@needs_mlx
def test_a_command_line_rerun_reuses_everything(tiny_q4, fixture_tiny_t5):
    out, first = tiny_q4
    assert first.returncode == 0, first.stderr
    rerun = run_export_mlx(str(fixture_tiny_t5), "--out", str(out), "--bits", "4", "--dtype", "bf16")
    assert rerun.returncode == 0, rerun.stderr
    assert "reused (up to date)" in rerun.stdout and "reused: export and reference unchanged" in rerun.stdout


@needs_mlx
def test_publish_writes_mlx_communitys_layout_that_mlx_vlm_runs(tiny_q4, tmp_path):
    """The --dry-run folder is the repo: mlx-vlm's own `generate` runs it as users run the Hub repo."""
    from huggingface_hub import ModelCard

    out, made = tiny_q4
    assert made.returncode == 0, made.stdout + made.stderr
    folder = tmp_path / "repo"
    result = subprocess.run([sys.executable, "-m", "smolconv", "publish", str(out), "--repo", "someone/tiny-4bit",
                             "--dry-run", str(folder)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    exported = set(json.loads((out / "build.json").read_text())["steps"][STEP]["outputs"])
    assert set(_files(folder)) == (exported - {"README.md"}) | {"README.md", "smolconv.json"}
    record = json.loads((folder / "smolconv.json").read_text())
    assert record["format"] == "mlx" and record["types"] == [] and record["llama_cpp"] is None
    assert not {"build.json", "verify.json"} & set(_files(folder))
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "mlx" and "mlx" in card.data.tags
    assert "python -m mlx_vlm generate --model someone/tiny-4bit" in card.text
    verified = json.loads((out / "verify.json").read_text())
    assert f"{verified['quantized']['mean_kld']:.4f}" in card.text and verified["passed"] is True
    assert "`tiny-4bit`" in card.text or "-4bit`" in card.text  # mlx-community's name for it

    run = subprocess.run([sys.executable, "-m", "mlx_vlm", "generate", "--model", str(folder), "--max-tokens", "4",
                          "--temperature", "0.0", "--prompt", "Hello", "--verbose"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Prompt:" in run.stdout and "tokens-per-sec" in run.stdout, run.stdout


@needs_mlx
def test_publishing_an_mlx_export_is_one_upload_of_that_folder(tiny_q4, monkeypatch):
    from huggingface_hub import HfApi
    from typer.testing import CliRunner

    from smolconv.cli import app

    out, _ = tiny_q4
    uploaded = {}

    def upload_folder(self, **kwargs):
        uploaded.update(kwargs, files=_files(Path(kwargs["folder_path"])))
        return type("Commit", (), {"commit_url": "https://huggingface.co/someone/tiny-4bit/commit/1"})()

    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: None)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    result = CliRunner().invoke(app, ["publish", str(out), "--repo", "someone/tiny-4bit"])
    assert result.exit_code == 0, result.output
    assert uploaded["repo_id"] == "someone/tiny-4bit" and "MLX" in uploaded["commit_message"]
    assert "model.safetensors" in uploaded["files"] and "build.json" not in uploaded["files"]
    assert "python -m mlx_vlm generate --model someone/tiny-4bit" in result.output
    assert "hf_secretvalue" not in result.output

    refused = CliRunner().invoke(app, ["publish", str(out), "--repo", "someone/tiny-4bit", "--type", "Q4_K_M"])
    assert refused.exit_code == 2 and "--type picks GGUF variants" in refused.output


@needs_mlx
def test_verify_on_cpu_dequantizes_the_same_weights(tiny_q4):
    """verify expands quantized layers on MLX's CPU build (its quantized product is slow there): the same weights.
    In float32 the quantized kernels and the expanded layers give the same logits; in bfloat16 each rounds its
    own way."""
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_vlm.quant_utils import dequantize_model
    from mlx_vlm.utils import load_model

    from smolconv.formats.mlx.verify import load_export

    out, result = tiny_q4
    assert result.returncode == 0, result.stderr
    assert load_export(out)[1]
    ids = mx.array([[1, 504, 3458, 282, 4649, 314]])
    model = load_model(out)
    model.update(tree_map(lambda v: v.astype(mx.float32) if mx.issubdtype(v.dtype, mx.floating) else v,
                          model.parameters()))
    kernels = np.array(model.language_model(ids).logits[0, -1], np.float64)
    expanded = np.array(dequantize_model(model).language_model(ids).logits[0, -1], np.float64)
    assert ((expanded - kernels) ** 2).sum() / (kernels**2).sum() < 1e-10


@pytest.fixture(scope="module")
def export_256m(fixture_256m_t5, tmp_path_factory):
    """The one 256m export: default --bits, on the tied, transformers-5 fixture (SmolLM2-135M's real text)."""
    return export_mlx(ExportMlxOptions(str(fixture_256m_t5), tmp_path_factory.mktemp("mlx") / "256m"))


@needs_mlx
def test_the_default_bits_keep_a_small_model_answering(export_256m, fixture_256m_t5):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_vlm.models.cache import make_prompt_cache
    from mlx_vlm.quant_utils import dequantize_model
    from transformers import AutoTokenizer

    from smolconv.formats.mlx.verify import load_export, load_unquantized
    from smolconv.reference.metrics import log_softmax, next_token_kld
    from smolconv.reference.prompts import DEFAULT_PROMPTS, KLD_TEXT

    result = export_256m
    assert result.bits is DEFAULT_BITS_SMALL and "135M-parameter decoder" in result.bits_reason
    assert result.dtype is MlxDtype.BF16 and result.group_size == 64
    assert [f.split()[0] for f in result.fixes] == ["text_config.rope_theta", "lm_head.weight"]
    config = json.loads((result.out_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["text_config"]["rope_theta"] == 100000.0
    # 30 layers × 7 projections, lm_head (written from the tied embeddings), the embeddings, the connector.
    assert result.quantized_layers == 30 * 7 + 3 and result.float_layers == 0

    def logprobs(model, ids):
        return log_softmax(np.array(model.language_model(mx.array([ids])).logits[0].astype(mx.float32),
                                    np.float64))

    def answer(model, ids, n=8):
        # Greedy, with mlx-vlm's KV cache: each new token is one position (MLX's CPU build is slow).
        cache = make_prompt_cache(model.language_model)
        tokens = [int(mx.argmax(model.language_model(mx.array([ids]), cache=cache).logits[0, -1]))]
        while len(tokens) < n:
            tokens.append(int(mx.argmax(model.language_model(mx.array([tokens[-1:]]), cache=cache).logits[0, -1])))
        return tokenizer.decode(tokens)

    tokenizer = AutoTokenizer.from_pretrained(fixture_256m_t5)
    text = tokenizer(KLD_TEXT.read_text(), add_special_tokens=False)["input_ids"][:128]
    question = tokenizer(DEFAULT_PROMPTS[1], add_special_tokens=False)["input_ids"]
    base = load_unquantized(fixture_256m_t5, "bf16")
    base_logprobs = logprobs(base, text)
    assert "Paris" in answer(base, question)
    export, _ = load_export(result.out_dir)
    kld_default, same_default = next_token_kld(base_logprobs, logprobs(export, text))
    assert "Paris" in answer(export, question)
    del export
    # Plain 4-bit of the same weights (in memory, expanded again as verify does): what the default avoids for a
    # model this small.
    nn.quantize(base.language_model, group_size=64, bits=4)
    kld_4, _ = next_token_kld(base_logprobs, logprobs(dequantize_model(base), text))
    assert kld_default < 0.02 and same_default > 0.9
    assert kld_4 > 5 * kld_default


def test_the_default_bits_follow_the_decoder_size():
    class Shapes:
        def __init__(self, n):
            self.n = n

        def tensor_shapes(self):
            return {"model.text_model.layers.0.mlp.up_proj.weight": (self.n,), "model.vision_model.x": (10**9,)}

    assert default_bits(Shapes(135_000_000))[0] is DEFAULT_BITS_SMALL
    assert default_bits(Shapes(360_000_000))[0] is DEFAULT_BITS_SMALL
    bits, reason = default_bits(Shapes(1_700_000_000))
    assert bits is DEFAULT_BITS_LARGE and "1.7B-parameter decoder" in reason


@needs_mlx
def test_a_video_on_mlx_is_transformers_video_prompt_and_its_greedy_token(tiny_fp32, tmp_path):
    """`ask --backend mlx --video`: the prompt is transformers' video prompt token for token (one tile a frame), and
    the export's first greedy token is transformers' float32 model's on the same ids and pixels."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE
    from transformers.utils.chat_template_utils import render_jinja_template

    from smolconv.formats.mlx.runtime import MlxVLM
    from smolconv.media.video import prompt_parts, sample
    from smolconv.runtime.chat import Message
    from smolconv.runtime.vlm import Sampling
    from tests.videos import transformers_frame, transformers_indices, transformers_video_prompt, write_clip

    checkpoint, result = tiny_fp32
    model = MlxVLM(result.out_dir)
    clip = write_clip(tmp_path / "clip.mp4", seconds=4, fps=5)
    video = sample(clip, frame_size=model.tile_size)
    ids, tiles = model.prompt([Message("user", prompt_parts(video, "What moves?"), video=True)])
    assert len(tiles) == 4 and all(t.rows == t.cols == 0 and len(t.pixels) == 1 for t in tiles)

    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    [hf], _ = render_jinja_template(conversations=[conversation], chat_template=DEFAULT_CHAT_TEMPLATE,
                                    add_generation_prompt=True)
    expansion = transformers_video_prompt(video.info, transformers_indices(video.info, 1.0, 64))
    frame = transformers_frame().replace("<image>" * 64, "<image>" * model.image_seq_len)
    hf = hf.replace("<video>", expansion.replace(transformers_frame(), frame))
    assert ids == AutoTokenizer.from_pretrained(checkpoint)(hf, add_special_tokens=False)["input_ids"]

    reference = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    pixels = torch.from_numpy(np.concatenate([t.pixels for t in tiles])[None])
    with torch.no_grad():
        logits = reference(input_ids=torch.tensor([ids]), pixel_values=pixels,
                           pixel_attention_mask=torch.ones((1, len(tiles), *pixels.shape[-2:]), dtype=torch.bool)
                           ).logits[0, -1]
    expected = int(logits.argmax())
    tokens = list(model.generate(ids, tiles, 1, Sampling()))
    assert tokens == ([] if expected in model.eos_ids else [expected])


@needs_mlx
def test_smoke_and_ask_run_on_the_mlx_backend(tiny_fp32, tmp_path):
    # The command line in this process (CliRunner): MLX and mlx-vlm are imported once for the module.
    from typer.testing import CliRunner

    from smolconv.cli import app

    _, result = tiny_fp32
    out = result.out_dir
    smoked = CliRunner().invoke(app, ["smoke", str(out), "--backend", "mlx", "--case", "text_hello", "--case", "video",
                                      "--report-dir", str(tmp_path)])
    assert smoked.exit_code == 0, smoked.output[-3000:]
    report = json.loads((tmp_path / "mlx.mlx.json").read_text())
    cases = {c["name"]: c for c in report["cases"]}
    assert set(cases) == {"text_hello", "video"} and all(c["passed"] for c in cases.values()), cases
    assert cases["video"]["notes"][-1].startswith("4 frames")
    asked = CliRunner().invoke(app, ["ask", str(out), "Hello", "--backend", "mlx", "--max-tokens", "3", "--json"])
    assert asked.exit_code == 0, asked.output
    assert json.loads(asked.stdout)["completion_tokens"] >= 1


@needs_mlx
def test_an_adapter_is_merged_and_checked_against_peft(fixture_tiny, tmp_path):
    from smolconv.formats.mlx.verify import verify_mlx
    from tests.adapters import make_adapter

    adapter = make_adapter(fixture_tiny, tmp_path / "tiny-lora")
    out = tmp_path / "out"
    export_mlx(ExportMlxOptions(str(fixture_tiny), out, bits=MlxBits.NONE, dtype=MlxDtype.FP32, adapter=str(adapter)))
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["adapter"]["name"] == "tiny-lora" and manifest["mlx"]["checkpoint"] == str(out / "merged")
    # Against transformers + peft (unmerged): the export is the fine-tune, vision tower included.
    report = verify_mlx(out)
    assert report.passed, report.failures


# --------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing of the user's touched


def test_without_the_extra_it_names_the_install_command(fixture_tiny, tmp_path):
    result = run_export_mlx(str(fixture_tiny), "--out", str(tmp_path / "out"), hide_mlx=True)
    assert_one_line_error(result, "needs MLX", "pip install 'smolconv[mlx]'")
    assert not (tmp_path / "out").exists()


@needs_mlx
def test_a_checkpoint_that_is_not_smolvlm_is_refused(fixture_tiny, tmp_path):
    checkpoint = tmp_path / "llama"
    shutil.copytree(fixture_tiny, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["architectures"], config["model_type"] = ["LlamaForCausalLM"], "llama"
    (checkpoint / "config.json").write_text(json.dumps(config))
    result = run_export_mlx(str(checkpoint), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "LlamaForCausalLM")
    assert not (tmp_path / "out").exists()


@needs_mlx
def test_an_unwritable_out_is_refused(fixture_tiny, tmp_path):
    # Tests run as root in CI, where permission bits do not stop writes; a path through a file does.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_export_mlx(str(fixture_tiny), "--out", str(blocker / "out"))
    assert_one_line_error(result, "cannot create output directory", "--out")


@needs_mlx
def test_rope_scaling_is_refused_before_the_converter_runs(fixture_tiny_t5, tmp_path):
    checkpoint = tmp_path / "scaled"
    shutil.copytree(fixture_tiny_t5, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["text_config"]["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0}
    (checkpoint / "config.json").write_text(json.dumps(config))
    result = run_export_mlx(str(checkpoint), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "scales RoPE ('linear')", "export-onnx")
    assert not (tmp_path / "out").exists()


@needs_mlx
@pytest.mark.parametrize(("args", "needle"), [(["--group-size", "48"], "--group-size 48"),
                                              (["--bits", "mixed_4_6", "--group-size", "128"], "groups of 64")])
def test_a_group_size_mlx_cannot_use_is_refused(fixture_tiny, tmp_path, args, needle):
    result = run_export_mlx(str(fixture_tiny), "--out", str(tmp_path / "out"), *args)
    assert_one_line_error(result, needle)


@needs_mlx
def test_a_users_file_is_not_overwritten_without_force(fixture_tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("mine")
    result = run_export_mlx(str(fixture_tiny), "--out", str(out), "--no-verify")
    assert_one_line_error(result, "not written by this build", "--force")
    assert (out / "config.json").read_text() == "mine" and _files(out) == ["config.json"]
