"""`smolconv build` end to end on the 256m fixture: real converter, real llama-quantize, real servers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gguf import GGUFReader

from smolconv.checks.smoke import CASES
from smolconv.core.hashing import sha256_file
from smolconv.core.models import END_OF_UTTERANCE_ID
from smolconv.llamacpp.gguf_header import read_gguf_header
from smolconv.media.video import probe
from smolconv.pipeline import BuildOptions, build
from smolconv.plan import build_variants
from tests.helpers import (
    SHARED_BUILD_SETTINGS,
    chat_with_llama_server,
    check_published_folder,
    run_cli,
    write_test_image,
)
from tests.videos import IMAGE_SEQ_LEN, transformers_indices, transformers_video_prompt, write_clip

pytestmark = pytest.mark.slow
NAME = "smolvlm2-256m"
VARIANTS = ("F16", "Q4_K_M", "Q5_K_M", "Q8_0")


def _model(out: Path, variant: str) -> Path:
    return out / f"{NAME}-{variant}.gguf"


def test_build_writes_every_variant_and_a_manifest(built_256m, fixture_256m):
    out = built_256m.out_dir
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    modelfiles = [f"smolvlm2-256m-{q}{p}.Modelfile" for q in ("q4_K_M", "q5_K_M", "q8_0")
                  for p in ("", "-caption", "-ocr", "-vqa", "-video")]
    assert names == sorted([*(f"{NAME}-{v}.gguf" for v in VARIANTS), f"mmproj-{NAME}-f16.gguf",
                            f"mmproj-{NAME}-f16-video.gguf", "build.json", *modelfiles, "verify.json", "smoke"])
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["llama_cpp"]["commit"] == "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
    assert manifest["source"]["files"]["model.safetensors"] == sha256_file(fixture_256m / "model.safetensors")
    for name, record in manifest["outputs"].items():
        assert record["sha256"] == sha256_file(out / name)
        assert record["size"] == (out / name).stat().st_size
    assert manifest["outputs"][f"{NAME}-Q4_K_M.gguf"]["params"]["type"] == "Q4_K_M"
    assert set(manifest["steps"]) == {"convert", "quantize:Q4_K_M", "quantize:Q5_K_M", "quantize:Q8_0",
                                      "video-projector"}


def test_build_ends_with_verify_under_the_f16_gate(built_256m):
    report = built_256m.verified
    assert report is not None and report.passed, report.failures
    assert len(report.text) == 5 and report.max_nmse < 1e-4
    assert all(r.top1_same and r.tokenizer_same for r in report.text)
    assert report.vision.checked and report.vision.nmse < 1e-4 and report.vision.n_tokens == 64
    kld = {k.variant: k for k in report.kld}
    assert set(kld) == {"Q4_K_M", "Q5_K_M", "Q8_0"}
    # Measured, and ordered as bits say; not gated by default on a fixture (its text weights were Q4_1).
    assert 0 < kld["Q8_0"].mean_kld < kld["Q4_K_M"].mean_kld
    assert kld["Q8_0"].same_top > kld["Q4_K_M"].same_top
    assert all(k.gate is None for k in kld.values())
    recorded = json.loads((built_256m.out_dir / "build.json").read_text())["verify"]
    assert recorded["passed"] is True and recorded["text"]["max_nmse"] == report.max_nmse
    assert json.loads((built_256m.out_dir / "verify.json").read_text())["text"]["top1_agree"] == 5


def test_build_ends_with_every_variant_passing_smoke_on_llama_server(built_256m):
    reports = {r.variant: r for r in built_256m.smoked}
    assert set(reports) == {"Q4_K_M", "Q5_K_M", "Q8_0", "Q4_K_M-video"}
    projector = build_variants(built_256m.out_dir, ("Q4_K_M",))[0].projector
    # The video case: Q4_K_M with the video projector, SmolVLM2's video prompt, two tiles a frame reach the model.
    video = reports.pop("Q4_K_M-video")
    [case] = json.loads(video.path.read_text())["cases"]
    assert video.passed and case["name"] == "video" and case["passed"], case
    assert case["answer"]["prompt_tokens"] >= 4 * 2 * projector.tokens_per_tile
    assert case["notes"][-1].startswith("4 frames, prompt ")
    shared = {c.name for c in CASES if c.per_projector}
    assert shared == {"image_png", "image_webp", "two_images", "blank_image", "one_pixel", "large_image"}
    assert [c.name for c in CASES if c.per_context] == ["long_prompt"]
    for variant, report in reports.items():
        assert report.passed, [(c.name, c.reason) for c in report.results if not c.passed]
        saved = json.loads(report.path.read_text())
        assert saved["variant"] == variant and saved["backend"] == "llama-server" and saved["passed"] is True
        cases = {c["name"]: c for c in saved["cases"]}
        assert list(cases) == [c.name for c in CASES if not c.video]  # every variant's report names every case
        assert cases["corrupt_image"]["reason"] == "refused before sending"
        # Every variant shares the one projector file and the planned context: Q4_K_M, served first, ran the
        # cases that check image decoding, preprocessing, the projector and the full context; the others say
        # so. Text and one image run on each.
        ran_here = [name for name in cases if cases[name]["covered_by"] is None]
        if variant == "Q4_K_M":
            assert set(ran_here) == set(cases)
        else:
            assert set(ran_here) == set(cases) - shared - {"long_prompt"}
            assert all(cases[name]["covered_by"] == "Q4_K_M" and cases[name]["answer"] is None
                       and "same projector sha256" in cases[name]["reason"] for name in shared)
            n_ctx = saved["backend_info"]["n_ctx"]
            assert cases["long_prompt"]["reason"].startswith(f"covered by Q4_K_M (same context, {n_ctx} tokens)")
        for name in {"text_hello", "image_jpeg", "long_prompt", "large_image"} & set(ran_here):
            answer = cases[name]["answer"]
            assert answer["prompt_tokens"] > 0 and answer["wall_s"] > 0 and answer["prompt_tps"] > 0, name
            # a decode rate needs two generated tokens: the first comes out of the prompt pass
            assert answer["decode_tps"] > 0 if answer["completion_tokens"] > 1 else answer["decode_tps"] is None
        # The variant's own text weights meet image embeddings: the image's tokens reach its prompt.
        assert cases["image_jpeg"]["answer"]["prompt_tokens"] >= projector.tiles((960, 240)) * 64
    cases = {c["name"]: c for c in json.loads(reports["Q4_K_M"].path.read_text())["cases"]}
    # the long prompt fills most of the planned context.
    n_ctx = json.loads(reports["Q4_K_M"].path.read_text())["backend_info"]["n_ctx"]
    assert cases["long_prompt"]["answer"]["prompt_tokens"] > 0.9 * (n_ctx - 192)
    # The 4000x3000 image is 13 tiles of 64 tokens.
    assert cases["large_image"]["answer"]["prompt_tokens"] >= 13 * 64
    # plan counts an image's tokens as llama-server does: same question, only the image differs.
    tokens = {name: cases[name]["answer"]["prompt_tokens"] for name in ("one_pixel", "image_png")}
    assert tokens["one_pixel"] - tokens["image_png"] == projector.image_tokens((1, 1)) - projector.image_tokens(
        (960, 240))
    recorded = json.loads((built_256m.out_dir / "build.json").read_text())["smoke"]
    assert {k: v["passed"] for k, v in recorded.items()} == {f"{v}:llama-server": True
                                                             for v in (*reports, "Q4_K_M-video")}
    assert built_256m.passed
    # build.json says how long each stage of the run took, in order (make rehearsal reads it)
    last = json.loads((built_256m.out_dir / "build.json").read_text())["last_build"]
    assert [s["stage"] for s in last["stages"]] == ["pull", "convert", "quantize", "plan + package", "verify", "smoke"]
    assert last["passed"] is True and all(s["seconds"] >= 0 for s in last["stages"])
    smoke_stage = last["stages"][-1]
    assert smoke_stage["seconds"] >= sum(r.seconds for r in built_256m.smoked)
    assert all(a["started"] + a["seconds"] <= b["started"] + 0.01
               for a, b in zip(last["stages"], last["stages"][1:], strict=False))


def test_publish_dry_run_of_a_checked_build_reports_its_numbers(built_256m, tmp_path):
    from smolconv.hub.publish import PublishOptions, publish

    base, repo = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct", "someone/SmolVLM2-256M-Video-Instruct-GGUF"
    # In process: the card's plans are made with the build's settings, which the command line cannot give
    # (test_publish.py runs `smolconv publish --dry-run` itself).
    publish(PublishOptions(built_256m.out_dir, repo, base_model=base, dry_run=tmp_path / "repo",
                           settings=SHARED_BUILD_SETTINGS))
    check_published_folder(built_256m.out_dir, tmp_path / "repo", repo, base, ("Q4_K_M", "Q5_K_M", "Q8_0"))


def test_build_publish_uploads_last_when_every_check_passed(toolchain, built_256m, fixture_256m, monkeypatch):
    # The rerun reuses every step and the passing checks; the one Hub call is replaced, everything before it is real.
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs.get("private")))

    def upload_folder(self, *, repo_id, folder_path, commit_message, **kwargs):
        calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir()), commit_message))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/1")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    out = built_256m.out_dir
    result = build(BuildOptions(model=str(fixture_256m), out_dir=out, publish="someone/smolvlm2-256m-GGUF",
                                settings=SHARED_BUILD_SETTINGS), toolchain)
    assert result.passed and result.verify_reused and result.published.url.endswith("/commit/1")
    assert calls[0] == ("create_repo", "someone/smolvlm2-256m-GGUF", False)
    _, _, files, message = calls[1]
    assert files == sorted([*(f"{NAME}-{v}.gguf" for v in VARIANTS[1:]), f"mmproj-{NAME}-f16.gguf", "template",
                            "params", "README.md", "smolconv.json", *(f"{NAME}-{v}.Modelfile" for v in VARIANTS[1:]),
                            "size-vs-kld.png"])  # the card's picture: verify measured each variant's KLD
    assert message.startswith("smolconv ") and "Q4_K_M, Q5_K_M, Q8_0" in message
    assert not [p for p in out.iterdir() if p.name.startswith(".publish-")]


def test_converted_files_read_back_as_smolvlm2(built_256m):
    model = GGUFReader(_model(built_256m.out_dir, "F16"))
    field = lambda reader, key: reader.fields[key].contents()  # noqa: E731
    assert field(model, "general.architecture") == "llama"
    assert field(model, "llama.block_count") == 30
    assert field(model, "tokenizer.ggml.pre") == "smollm"  # the rebuilt tokenizer is SmolLM's
    assert len(field(model, "tokenizer.ggml.tokens")) == 49280
    assert field(model, "tokenizer.ggml.eos_token_id") == END_OF_UTTERANCE_ID
    projector = GGUFReader(built_256m.out_dir / f"mmproj-{NAME}-f16.gguf")
    assert field(projector, "general.type") == "mmproj"
    assert field(projector, "clip.projector_type") == "idefics3"
    assert field(projector, "clip.vision.projector.scale_factor") == 4
    assert field(projector, "clip.vision.image_size") == 512


def test_the_video_projector_is_the_projector_cutting_a_frame_into_one_tile(built_256m):
    out = built_256m.out_dir
    image, video = (GGUFReader(out / f"mmproj-{NAME}-f16{s}.gguf") for s in ("", "-video"))
    values = {name: {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
              for name, r in (("image", image), ("video", video))}
    assert values["image"]["clip.vision.preproc_image_size"] == 2048
    assert values["video"]["clip.vision.preproc_image_size"] == values["video"]["clip.vision.image_size"] == 512
    changed = {k for k in values["image"] if values["image"][k] != values["video"].get(k)}
    assert changed == {"clip.vision.preproc_image_size"} and set(values["image"]) == set(values["video"])
    assert [(t.name, t.tensor_type, bytes(t.data)) for t in image.tensors] == \
        [(t.name, t.tensor_type, bytes(t.data)) for t in video.tensors]
    modelfile = (out / "smolvlm2-256m-q4_K_M-video.Modelfile").read_text()
    assert f"FROM ./mmproj-{NAME}-f16-video.gguf" in modelfile and f"FROM ./{NAME}-Q4_K_M.gguf" in modelfile


def test_report_says_most_of_q4_k_m_is_q5_0(built_256m):
    reports = {r.qtype: r for r in built_256m.quantized.reports}
    q4 = reports["Q4_K_M"]
    reader = GGUFReader(q4.path)
    assert q4.tensor_types == dict(__import__("collections").Counter(t.tensor_type.name for t in reader.tensors))
    assert q4.dominant_type() == "Q5_0"
    assert q4.n_fallbacks > 150 and q4.log_fallbacks > 150
    assert 'Most of this "Q4_K_M" is Q5_0' in q4.plain_summary()
    assert reports["Q5_K_M"].dominant_type() == "Q5_1"
    assert reports["Q8_0"].n_fallbacks == 0 and reports["Q8_0"].dominant_type() == "Q8_0"
    assert q4.bits_per_weight < reports["Q5_K_M"].bits_per_weight < reports["Q8_0"].bits_per_weight


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_answers_paris(llama_servers, built_256m, variant):
    """The answer's content survives every quantization.

    End-of-turn is held back for this one reply: on this fixture (SmolLM2-135M's weights, themselves from a
    Q4_1 file, in SmolVLM2's chat format) the 5-bit fallback variants rank ending the turn at once above
    " The" as the first token, so greedy decoding would return an empty reply. What the model says once it
    speaks is what this test checks; the next test checks stopping by itself.
    """
    out = built_256m.out_dir
    answer = chat_with_llama_server(llama_servers, _model(out, variant), out / f"mmproj-{NAME}-f16.gguf",
                                    "What is the capital of France?", max_tokens=12,
                                    logit_bias={str(END_OF_UTTERANCE_ID): -100, "2": -100})
    assert answer["choices"][0]["message"]["content"].strip().startswith("The capital of France is Paris")


@pytest.mark.parametrize("variant", ["F16", "Q8_0"])
def test_f16_and_q8_0_answer_paris_and_stop_by_themselves(llama_servers, built_256m, variant):
    out = built_256m.out_dir
    answer = chat_with_llama_server(llama_servers, _model(out, variant), out / f"mmproj-{NAME}-f16.gguf",
                                    "What is the capital of France?")
    assert "Paris" in answer["choices"][0]["message"]["content"]
    assert answer["choices"][0]["finish_reason"] == "stop"


# The quantized variants take images in the build's own smoke suite (llama-server, the engine Ollama runs);
# llama-mtmd-cli, the other way llama.cpp runs a projector, is checked on the F16 conversion.
def test_the_f16_conversion_takes_an_image_in_mtmd_cli(toolchain, built_256m, tmp_path):
    out = built_256m.out_dir
    image = write_test_image(tmp_path / "scene.png")
    result = subprocess.run(
        [toolchain.tool("llama-mtmd-cli"), "-m", _model(out, "F16"), "--mmproj", out / f"mmproj-{NAME}-f16.gguf",
         "--image", image, "-p", "Describe this image.", "-n", "8", "--temp", "0", "-t", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # mtmd logs encoding the image; with a random vision tower the words it writes are meaningless.
    assert re.search(r"mtmd batch encoding done|image slice encoded", result.stderr), result.stderr[-2000:]


def test_text_gguf_is_byte_identical_to_the_converter_run_by_hand(toolchain, built_256m, fixture_256m, tmp_path):
    by_hand = tmp_path / "by-hand.gguf"
    subprocess.run([sys.executable, toolchain.converter, str(fixture_256m), "--outfile", str(by_hand),
                    "--outtype", "f16"], cwd=toolchain.root, check=True, capture_output=True)
    assert sha256_file(by_hand) == sha256_file(_model(built_256m.out_dir, "F16"))


def test_rerun_with_nothing_changed_redoes_nothing(toolchain, built_256m, fixture_256m):
    out = built_256m.out_dir
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.gguf")}
    again = build(BuildOptions(model=str(fixture_256m), out_dir=out, settings=SHARED_BUILD_SETTINGS), toolchain)
    assert again.converted.skipped
    assert all(r.skipped for r in again.quantized.reports)
    # verify and smoke passed on these same files: kept, not run again.
    assert again.verify_reused and again.verified is None
    assert sorted(again.smoke_reused) == ["Q4_K_M", "Q5_K_M", "Q8_0"] and not again.smoked
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.gguf")} == mtimes
    assert [r.to_dict()["summary"] for r in again.quantized.reports] == \
        [r.to_dict()["summary"] for r in built_256m.quantized.reports]


def test_a_verify_that_left_checks_out_is_not_reused_for_a_full_one(built_256m, fixture_256m):
    from dataclasses import replace

    from smolconv.pipeline import verify_key
    from smolconv.record.builddir import BuildDir

    out = built_256m.out_dir
    options = BuildOptions(model=str(fixture_256m), out_dir=out, settings=SHARED_BUILD_SETTINGS)
    build_dir = BuildDir.open(out)
    built = tuple(r.qtype for r in built_256m.quantized.reports)
    full = verify_key(options, build_dir, built)
    assert json.loads((out / "build.json").read_text())["verify"]["key"] == full  # what the full build recorded
    partial = {verify_key(replace(options, verify_skip=frozenset(skip)), build_dir, built)
               for skip in ({"kld"}, {"video"}, {"vision", "video"})}
    assert len(partial) == 3 and full not in partial


def test_changed_parameters_redo_only_what_they_touch(toolchain, built_256m, fixture_256m):
    out = built_256m.out_dir
    f16_mtime = _model(out, "F16").stat().st_mtime_ns
    result = build(BuildOptions(model=str(fixture_256m), out_dir=out, types=("Q8_0", "Q4_0"), verify=False,
                                smoke=False), toolchain)
    assert result.converted.skipped
    assert [(r.qtype, r.skipped) for r in result.quantized.reports] == [("Q8_0", True), ("Q4_0", False)]
    assert _model(out, "F16").stat().st_mtime_ns == f16_mtime
    _model(out, "Q4_0").unlink()


def test_killed_build_leaves_no_final_partial_file_and_the_next_run_completes(toolchain, fixture_tiny, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "smolconv", "build", str(fixture_tiny), "--out", str(out), "--no-verify", "--no-smoke"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    writing = False
    while time.monotonic() < deadline and proc.poll() is None and not writing:
        writing = bool(list(out.glob(".*.partial")))
        time.sleep(0 if writing else 0.01)
    # The kill must hit a stage that is writing: a partial file was there and the build still runs.
    assert writing and proc.poll() is None, "the build ended before a stage could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # smolconv and the converter it runs, mid-write
    assert proc.wait() == -signal.SIGKILL
    finals = [p for p in out.glob("*.gguf")]
    manifest = json.loads((out / "build.json").read_text()) if (out / "build.json").exists() else {"outputs": {}}
    for path in finals:  # anything under a final name is complete and recorded
        assert manifest["outputs"][path.name]["sha256"] == sha256_file(path)
    result = run_cli("build", str(fixture_tiny), "--out", str(out), "--no-verify", "--no-smoke")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.gguf")) == sorted(
        [f"{fixture_tiny.name}-{v}.gguf" for v in VARIANTS] + [f"mmproj-{fixture_tiny.name}-f16.gguf",
                                                               f"mmproj-{fixture_tiny.name}-f16-video.gguf"])


def test_tiny_shape_takes_k_quants_without_fallback(toolchain, fixture_tiny, tmp_path):
    result = build(BuildOptions(model=str(fixture_tiny), out_dir=tmp_path / "out", types=("Q4_K_M",), verify=False,
                                smoke=False), toolchain)
    report = result.quantized.reports[0]
    assert report.n_fallbacks == 0 and report.log_fallbacks == 0
    assert report.dominant_type() == "Q4_K"


def test_imatrix_from_text_and_quantized_projector(toolchain, fixture_tiny, tmp_path):
    out = tmp_path / "out"
    text = Path(__file__).parent / "data" / "calibration.txt"
    result = build(BuildOptions(model=str(fixture_tiny), out_dir=out, types=("Q4_K_M",), imatrix_text=text,
                                mmproj_type="Q8_0", verify=False, smoke=False), toolchain)
    assert result.quantized.imatrix == out / "imatrix.gguf"
    assert GGUFReader(out / "imatrix.gguf").fields  # a real GGUF imatrix
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["steps"]["quantize:Q4_K_M"]["params"]["imatrix"] == "imatrix.gguf"
    # llama-quantize writes the matrix's path into the GGUF: named alone, the bytes do not depend on --out.
    assert read_gguf_header(result.quantized.reports[0].path).get("quantize.imatrix.file") == "imatrix.gguf"
    projector = GGUFReader(result.quantized.mmproj)
    assert projector.fields["general.type"].contents() == "mmproj"
    assert "Q8_0" in {t.tensor_type.name for t in projector.tensors}


def test_convert_alone_records_its_source(toolchain, fixture_tiny, tmp_path):
    result = run_cli("convert", str(fixture_tiny), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    source = json.loads((tmp_path / "out" / "build.json").read_text())["source"]
    assert source["path"] == str(fixture_tiny.resolve())
    assert source["files"]["config.json"] == sha256_file(fixture_tiny / "config.json")


def test_relative_paths_work_from_any_directory(toolchain, fixture_tiny, tmp_path):
    # The converter runs from its own tree; paths a user types relative to their shell must still work.
    import shutil

    shutil.copytree(fixture_tiny, tmp_path / "ckpt")
    result = run_cli("build", "ckpt", "--out", "built", "--type", "Q8_0", "--no-verify", "--no-smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "built" / "ckpt-F16.gguf").is_file()
    assert (tmp_path / "built" / "ckpt-Q8_0.gguf").is_file()


# -- the default build's reads, and its video path (verify's video check, ask --video) ---------------------------


def test_a_build_loads_build_json_once_and_reads_each_gguf_header_once(counted_build_256m):
    """A build directory is read once per command: build.json loaded once, each GGUF header read once, counted on
    the default build (conftest.counted_build_256m): every stage, verify and smoke included, four variants."""
    result = counted_build_256m.result
    assert result.verified is not None and result.smoked, "the walk must cover verify and smoke"
    assert counted_build_256m.manifest_loads == [result.out_dir]
    # F16, Q4_K_M, Q5_K_M and Q8_0 text models and the projector: each header read once though six stages ask.
    reads = counted_build_256m.header_reads
    assert len(reads) == 5 and set(reads.values()) == {1}, reads


def test_llama_server_with_the_video_projector_spends_two_tiles_a_frame(built_256m, tmp_path):
    """256m: llama-server with the video projector against transformers' video prompt, the same clip. The
    documented difference: llama.cpp adds the frame's one tile beside the overview transformers gives (its
    `<fake_token_around_image><row_1_col_1>`, the tile's 64 tokens and the "\\n\\n" before the overview)."""
    from transformers import AutoTokenizer
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE
    from transformers.utils.chat_template_utils import render_jinja_template

    from smolconv.checks.ask import AskOptions, ask
    from smolconv.llamacpp.toolchain import find_toolchain

    clip = write_clip(tmp_path / "square.mp4", seconds=8, fps=10)
    out = built_256m.out_dir
    result = ask(AskOptions(str(out), "What moves?", video=clip, variant="Q8_0", max_tokens=4), find_toolchain())
    frames = len(result.frames)
    assert frames == 8 and result.decoded_frames <= 80
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    [hf], _ = render_jinja_template(conversations=[conversation], chat_template=DEFAULT_CHAT_TEMPLATE,
                                    add_generation_prompt=True)
    info = probe(clip)
    hf = hf.replace("<video>", transformers_video_prompt(info, transformers_indices(info, 1.0, 64)))
    source = json.loads((out / "build.json").read_text())["source"]["path"]
    hf_tokens = len(AutoTokenizer.from_pretrained(source)(hf, add_special_tokens=False)["input_ids"])
    assert result.answer.prompt_tokens - hf_tokens == frames * (IMAGE_SEQ_LEN + 3)
    # What the plan counts a frame at (ask refuses by it) covers what llama-server spends, with the text reserve.
    assert frames * result.frame_tokens <= result.answer.prompt_tokens <= frames * result.frame_tokens + 256


def test_verify_compares_llama_servers_video_prompt_with_transformers(built_256m, tmp_path):
    """The default build's verify: llama-server with the video projector against transformers on a 4-frame clip.
    The token counts differ by the documented 67 a frame; on llama.cpp's layout the logits meet the video gate."""
    from transformers import AutoTokenizer
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE
    from transformers.utils.chat_template_utils import render_jinja_template

    from smolconv.formats.gguf.verify import VIDEO_QUESTION, VIDEO_SECONDS
    from smolconv.media.drawn import write_clip as smolconv_clip

    report = json.loads((built_256m.out_dir / "verify.json").read_text())
    video = report["video"]
    assert video["checked"] and video["frames"] == VIDEO_SECONDS
    assert video["nmse"] < report["gates"]["max_video_nmse"] and video["top1_same"]
    # transformers' own prompt for verify's clip, from its processor's code and chat template.
    info = probe(smolconv_clip(tmp_path / "clip.mp4", seconds=VIDEO_SECONDS))
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": VIDEO_QUESTION}]}]
    [hf], _ = render_jinja_template(conversations=[conversation], chat_template=DEFAULT_CHAT_TEMPLATE,
                                    add_generation_prompt=True)
    hf = hf.replace("<video>", transformers_video_prompt(info, transformers_indices(info, 1.0, 64)))
    tokenizer = AutoTokenizer.from_pretrained(json.loads((built_256m.out_dir / "build.json").read_text())
                                              ["source"]["path"])
    assert video["tokens_transformers"] == len(tokenizer(hf, add_special_tokens=False)["input_ids"])
    assert video["tokens_llama_cpp"] == video["tokens_expected"]
    assert video["tokens_llama_cpp"] - video["tokens_transformers"] == video["frames"] * (IMAGE_SEQ_LEN + 3)
    assert video["layout_kl"] > 0  # measured and reported: the overview tile changes what the model sees
