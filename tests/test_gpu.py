"""gpu: reading nvidia-smi's CSV (the GPUs, a process's memory) and the toolchain's architectures."""

from __future__ import annotations

import os

from smolconv.plan.gpu import (
    GpuInfo,
    MiB,
    arch_problem,
    built_archs,
    list_gpus,
    parse_compute_apps,
    parse_gpus,
    process_memory,
)
from tests import fake_nvidia_smi


def test_parse_gpus_reads_name_compute_capability_driver_and_memory():
    csv = f"{fake_nvidia_smi.H100}\n1, NVIDIA GeForce RTX 4070, 8.9, 580.82.07, 12282, [N/A]\n"
    h100, rtx = parse_gpus(csv)
    assert (h100.index, h100.name, h100.compute_cap, h100.arch, h100.driver) == (
        0, "NVIDIA H100 80GB HBM3", "9.0", "90", "580.82.07")
    assert h100.memory_total == 81559 * MiB and h100.memory_free == 81000 * MiB
    assert rtx.arch == "89" and rtx.memory_free == 0  # [N/A] is not a number
    # An old nvidia-smi without compute_cap answers with an error line, not a GPU.
    assert parse_gpus('Field "compute_cap" is not a valid field to query.') == []


def test_parse_compute_apps_sums_a_process_over_its_gpus_and_skips_what_is_not_a_number():
    csv = "4242, 4052\n4242, 128\n777, [N/A]\n9, 4195\nNo running processes found\n"
    assert parse_compute_apps(csv) == {4242: 4180 * MiB, 9: 4195 * MiB}
    assert parse_compute_apps("") == {}


def test_process_memory_falls_back_to_nvidia_smi(tmp_path, monkeypatch):
    fake_nvidia_smi.install(tmp_path / "bin", monkeypatch, apps=f"{os.getpid()}, 4195\n12, 100")
    used, how = process_memory(os.getpid())
    assert (used, how) == (4195 * MiB, "nvidia-smi")
    used, how = process_memory(13)
    assert used is None and "does not list pid 13" in how
    assert [g.name for g in list_gpus()] == ["NVIDIA H100 80GB HBM3"]


def test_without_nvidia_smi_there_is_no_gpu_and_no_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert list_gpus() is None
    assert process_memory(os.getpid()) == (None, "no nvidia-smi or NVML")


def test_toolchain_architectures_and_what_a_mismatch_means():
    assert built_archs("cuda89") == ["89"] and built_archs("cuda86-89") == ["86", "89"]
    assert built_archs("cpu") == [] and built_archs(None) == [] and built_archs("cudanative") == []
    h100 = GpuInfo(0, "H100", "9.0", "580", 0, 0)
    old = GpuInfo(0, "RTX 3060", "8.6", "580", 0, 0)
    assert arch_problem(h100, ["90"]) is None and arch_problem(h100, []) is None
    assert "JIT-compiled" in arch_problem(h100, ["89"])  # compute_89 PTX runs on sm_90 after a JIT compile
    assert "will not run" in arch_problem(old, ["89"])


def test_worst_case_sends_the_largest_image_then_fills_the_context_with_images(tmp_path, monkeypatch):
    # The requests against the fake Ollama daemon (it counts a word as a token and an image as the plan's
    # tokens); the memory from the test-double nvidia-smi, which lists this process.
    from smolconv.checks.workload import ANSWER_TOKENS, MARGIN, worst_case
    from smolconv.runtime.chat import OllamaBackend
    from tests.fake_ollama import FakeOllama
    from tests.helpers import PROJECTOR_256M

    fake_nvidia_smi.install(tmp_path / "bin", monkeypatch, apps=f"{os.getpid()}, 1234")
    with FakeOllama() as fake:
        fake.state.models["m"] = {"parameters": "num_ctx 4096", "capabilities": ["vision"]}
        fake.state.tokens_per_image = PROJECTOR_256M.max_image_tokens
        case = worst_case(OllamaBackend("m", fake.host), os.getpid(), PROJECTOR_256M, 4096, tmp_path / "images")
    image, *calibration, full = fake.state.chats
    assert len(image["messages"][0]["images"]) == 1 and len(calibration) == 2
    budget = 4096 - ANSWER_TOKENS - MARGIN
    assert case.images_in_context == len(full["messages"][0]["images"]) == (budget - 256) // 1128 == 3
    # the text fills what the images leave, to within one filler sentence
    assert budget - 12 <= case.full_context.prompt_tokens <= budget
    assert (case.idle, case.after_image, case.after_full_context, case.peak) == (1234 * MiB,) * 4
    assert case.during_requests == 1234 * MiB  # read while the requests ran, too
    assert case.how == "nvidia-smi" and case.to_dict()["images_in_context"] == 3
