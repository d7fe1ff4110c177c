"""`smolconv plan`: the estimate against real files and against what the real llama-server allocates."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from gguf import GGUFReader

from smolconv.core.errors import SmolconvError
from smolconv.core.models import get_shape
from smolconv.plan import (
    GiB,
    MiB,
    PlanSettings,
    build_variants,
    estimate,
    estimated_projector_bytes,
    estimated_tensor_types,
    estimated_variant,
    measure_llama_server,
    parse_llama_server_memory,
    parse_size,
    plan_for_shape,
    plan_variant,
    read_projector,
)
from tests.helpers import FIXTURE_VISION_LAYERS, invoke, run_cli


def test_plan_2p2b_prints_a_table_without_any_download():
    result = invoke("plan", "2.2b", "--vram", "8GiB")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["Q4_K_M", "Q5_K_M", "Q8_0"]
    data = json.loads(invoke("plan", "2.2b", "--json").stdout)
    assert [d["variant"] for d in data] == ["Q4_K_M", "Q5_K_M", "Q8_0"]
    for d in data:
        assert d["estimated_from_config"] and d["fits"] and d["num_gpu"] == 25 and d["num_ctx"] == 8192
        assert d["memory"]["total"] <= 8 * GiB - 512 * MiB
    # Bigger files, less room left.
    assert data[0]["free_after_load"] > data[1]["free_after_load"] > data[2]["free_after_load"]


# The process's own GPU memory (nvidia-smi --query-compute-apps, MiB) serving 2.2b with the plan for an 8 GiB card on
# an H100 (issue 15): after a 1024x768 image, and for Q4_K_M also over a 5.3k-token text prompt and a 4.6k-token
# two-image prompt. plan.runtime_bytes was fitted to these very readings, and Q5_K_M's and Q8_0's were not taken
# at the worst case (num_ctx filled with images), so this is a regression pin on the fitted data, not a proof
# that the plan is an upper bound. Held-out readings (other contexts, shapes, image counts, at the worst case):
# scripts/bench_gpu.py on a GPU, docs/GPU_BENCH.md.
H100_FITTED_MIB = {"Q4_K_M": 4195, "Q5_K_M": 4342, "Q8_0": 4910}


def test_plan_2p2b_stays_at_or_above_the_h100_readings_it_was_fitted_to():
    result = invoke("plan", "2.2b", "--vram", "8GiB", "--json")
    assert result.returncode == 0, result.stderr
    data = {d["variant"]: d for d in json.loads(result.stdout)}
    assert set(data) == set(H100_FITTED_MIB)
    for variant, peak in H100_FITTED_MIB.items():
        memory = data[variant]["memory"]
        assert peak * MiB <= memory["total"] <= 1.10 * peak * MiB, (variant, memory["total"] / MiB)
        # The part outside llama.cpp's buffers is the modelled runtime, not a flat allowance.
        assert memory["overhead"] == memory["cuda_context"] + memory["cublas"] + memory["cuda_pool"]
        assert memory["cublas"] > 0 and memory["cuda_pool"] > 0


def test_the_runtime_model_follows_what_is_on_the_gpu_and_a_flat_overhead_replaces_it():
    variant = estimated_variant(get_shape("2.2b"), "Q4_K_M")
    settings = PlanSettings()
    full = estimate(variant, 8192, settings)
    text_only = estimate(variant, 8192, settings, projector_on_device=False)
    nothing = estimate(variant, 2048, settings, n_gpu_layers=0, projector_on_device=False)
    assert full.cuda_pool > text_only.cuda_pool > nothing.cuda_pool == 0
    assert nothing.cublas == 0 and nothing.cuda_context == full.cuda_context > 0
    # A bigger ubatch holds more in the pool while a prompt is processed.
    assert estimate(variant, 8192, PlanSettings(n_ubatch=2048)).cuda_pool > full.cuda_pool
    flat = estimate(variant, 8192, PlanSettings(overhead=300 * MiB))
    assert flat.overhead == 300 * MiB and flat.total - flat.overhead == full.total - full.overhead
    assert estimate(variant, 8192, settings, cpu_backend=True).overhead == 0


def test_estimated_2p2b_q4_k_m_matches_ggml_orgs_published_file():
    # ggml-org's SmolVLM2-2.2B-Instruct-Q4_K_M.gguf is 1,112,602,656 bytes; the rest is metadata (vocabulary).
    tensors = sum(size for _, size in estimated_tensor_types(get_shape("2.2b"), "Q4_K_M").values())
    assert 0 < 1_112_602_656 - tensors < 2 * MiB


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["Q4_K_M", "Q8_0", "F16"])
def test_estimated_tensor_types_are_what_llama_quantize_wrote(build_256m_q4_q8, variant):
    path = build_256m_q4_q8 / f"smolvlm2-256m-{variant}.gguf"
    real = {t.name: (t.tensor_type.name, int(t.n_bytes)) for t in GGUFReader(path).tensors}
    assert estimated_tensor_types(get_shape("256m"), variant) == real


@pytest.mark.slow
def test_estimated_projector_is_the_converted_one(build_256m_q4_q8):
    projector = read_projector(build_256m_q4_q8 / "mmproj-smolvlm2-256m-f16.gguf")
    shape = get_shape("256m")  # the fixture's: SigLIP with FIXTURE_VISION_LAYERS of its 12 layers
    shape = replace(shape, vision=replace(shape.vision, num_hidden_layers=FIXTURE_VISION_LAYERS))
    assert estimated_projector_bytes(shape) == projector.weight_bytes
    assert projector.tokens_per_tile == 64  # (512 / 16)² / 4²


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "n_ctx", "kv_type"),
                         [("Q4_K_M", 2048, "f16"), ("Q4_K_M", 8192, "f16"), ("Q8_0", 4096, "f16"),
                          ("Q8_0", 4096, "q8_0")])
def test_estimate_matches_the_buffers_llama_server_reports(toolchain, build_256m_q4_q8, variant, n_ctx, kv_type):
    settings = PlanSettings(kv_type=kv_type)
    [v] = build_variants(build_256m_q4_q8, (variant,))
    measured = measure_llama_server(toolchain, v, n_ctx, settings)
    est = estimate(v, n_ctx, settings, cpu_backend=True)
    weights, real_weights = est.weights + est.projector_weights, measured.weights + measured.projector_weights
    assert abs(weights - real_weights) <= 0.05 * real_weights
    assert abs(est.kv_cache - measured.kv_cache) <= 0.05 * measured.kv_cache
    assert abs(est.total - measured.total) <= 0.10 * measured.total
    assert measured.kv_cache > 0 and measured.compute > 0 and measured.projector_compute > 0


def test_projector_moves_to_the_cpu_and_layers_offload_when_vram_is_short():
    roomy = plan_for_shape("2.2b", "Q8_0", PlanSettings(vram=8 * GiB))
    assert roomy.fits and roomy.memory.projector_on_device and roomy.num_gpu == 25
    tight = plan_for_shape("2.2b", "Q8_0", PlanSettings(vram=2 * GiB))
    assert not tight.fits and not tight.memory.projector_on_device
    assert 0 < tight.num_gpu < 24 and tight.num_ctx == 2048
    assert tight.memory.total <= 2 * GiB - 512 * MiB
    # One more layer would not have fitted.
    one_more = estimate(tight.variant, tight.num_ctx, tight.settings, tight.num_gpu + 1, projector_on_device=False)
    assert one_more.total > 2 * GiB - 512 * MiB


def test_context_shrinks_before_layers_leave_the_gpu():
    sizes = [plan_for_shape("2.2b", "Q8_0", PlanSettings(vram=v * GiB)) for v in (4, 4.5, 5, 8)]
    contexts = [p.num_ctx for p in sizes]
    assert contexts == sorted(contexts) and contexts[0] < contexts[-1] == 8192
    assert all(p.num_gpu == 25 for p in sizes if p.fits)


def test_q8_0_kv_cache_is_about_half_of_f16():
    f16 = plan_for_shape("2.2b", "Q4_K_M", PlanSettings(num_ctx=4096))
    q8 = plan_for_shape("2.2b", "Q4_K_M", PlanSettings(num_ctx=4096, kv_type="q8_0"))
    assert q8.memory.kv_cache == pytest.approx(f16.memory.kv_cache * 34 / 64)


def test_ollama_keeps_the_projector_off_a_gpu_without_its_weights_plus_1_gib():
    plan = plan_for_shape("2.2b", "Q4_K_M", PlanSettings(vram=int(1.5 * GiB), reserve=0, overhead=128 * MiB))
    assert not plan.memory.projector_on_device
    assert any("projector" in note for note in plan.notes)


@pytest.mark.parametrize(("text", "expected"), [("8GiB", 8 * GiB), ("8G", 8 * GiB), ("8", 8 * GiB),
                                                ("8GB", 8_000_000_000), ("512MiB", 512 * MiB), ("7.5GiB", 7.5 * GiB)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["8XB", "", "GiB", "eight"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(SmolconvError, match="memory size"):
        parse_size(text)


def test_bad_plan_input_is_one_line_and_exit_2(tmp_path):
    for args in (["plan", "9b"], ["plan", "2.2b", "--vram", "8XB"], ["plan", "2.2b", "--kv-type", "q4"],
                 ["plan", str(tmp_path)], ["plan", "2.2b", "--vram", "512MiB"]):
        result = invoke(*args)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:"), result.stderr


@pytest.mark.slow
def test_plan_is_the_same_for_the_estimate_and_the_files(build_256m_q4_q8):
    [real] = build_variants(build_256m_q4_q8, ("Q4_K_M",))
    estimated = estimated_variant(get_shape("256m"), "Q4_K_M")
    assert real.text.layer_bytes == estimated.text.layer_bytes
    assert plan_variant(real, PlanSettings()).num_ctx == plan_variant(estimated, PlanSettings()).num_ctx



def test_image_and_video_frame_tokens_follow_smolvlm_layout():
    from smolconv.plan import estimated_variant, known_shape

    projector = estimated_variant(known_shape("256m"), "Q8_0").projector
    assert projector.grid((4000, 3000)) == (4, 3) and projector.tiles((4000, 3000)) == 13
    assert projector.image_tokens((1, 1)) == 16 * 66 + 4 + 1 + 66 + 1  # a 1x1 image is scaled up to 4x4 tiles
    assert projector.image_tokens((512, 512)) == projector.image_tokens((2048, 2048))
    # A 16:9 frame sent as an image is tiled like any image: 12 tiles and the overview.
    assert projector.photo_frame_tokens == 12 * 66 + 3 + 1 + 66 + 1
    # Through the video projector (mtmd-image.cpp, idefics3): <fake><row_1_col_1> + 64, then "\n\n" <fake>
    # <global-img> + 64 + <fake>, and the frame's "\nFrame from MM:SS:" (10 tokens): test_build.py measures it.
    assert projector.video_frame_tokens == (2 + 64) + (3 + 64 + 1) + 10


# llama-server's start-up lines on a CUDA build (the H100 run of issue 15, Q4_K_M at num_ctx 8192).
CUDA_LOG = """\
load_tensors:   CPU_Mapped model buffer size =   102.66 MiB
load_tensors:        CUDA0 model buffer size =  1005.21 MiB
llama_kv_cache:      CUDA0 KV buffer size =  1536.00 MiB
llama_context:  CUDA_Host  output buffer size =     0.19 MiB
sched_reserve:      CUDA0 compute buffer size =    68.01 MiB
sched_reserve:  CUDA_Host compute buffer size =    16.01 MiB
load_hparams: model size:         831.87 MiB
reserve_compute_meta:      CUDA0 compute buffer size =    21.58 MiB
"""


def test_buffers_on_a_cuda_device_are_told_apart_from_host_buffers():
    cuda = parse_llama_server_memory(CUDA_LOG)
    assert cuda.on_cuda
    # What the table calls llama-server's CUDA buffers: 3463 MiB.
    assert cuda.device_total == pytest.approx((1005.21 + 1536 + 68.01 + 831.87 + 21.58) * MiB, abs=1)
    cpu = parse_llama_server_memory(CUDA_LOG.replace("CUDA0", "CPU").replace("CUDA_Host", "CPU"))
    assert not cpu.on_cuda and cpu.device_total == 0


@pytest.mark.slow
def test_plan_measure_on_a_cpu_build_says_the_process_memory_was_not_measured(toolchain, build_256m_q4_q8):
    result = run_cli("plan", str(build_256m_q4_q8), "--type", "Q4_K_M", "--measure", "--json")
    assert result.returncode == 0, result.stderr
    [item] = json.loads(result.stdout)
    assert item["measured_by_llama_server"]["kv_cache"] > 0
    assert item["process_gpu_memory"] == "not measured (no CUDA)"
