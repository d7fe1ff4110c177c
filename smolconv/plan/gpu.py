"""What the NVIDIA driver says: the GPUs (name, compute capability, driver) and the memory one process holds.

NVML through `nvidia-ml-py` (the optional extra `smolconv[gpu]`) when it is installed, else `nvidia-smi`'s
CSV queries. Without a driver both say nothing, and callers report "no GPU". Memory is the process's own as
the driver counts it: llama.cpp's buffers plus the CUDA context, cuBLAS and ggml's memory pool, which is what
`plan` has to stay above.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from smolconv.core.errors import SmolconvError
from smolconv.process.runner import run_tool

MiB = 2**20
GPU_FIELDS = "index,name,compute_cap,driver_version,memory.total,memory.free"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_cap: str   # "9.0" for an H100, "8.9" for an RTX 4070
    driver: str
    memory_total: int  # bytes
    memory_free: int

    @property
    def arch(self) -> str:
        """The compute capability as CMAKE_CUDA_ARCHITECTURES writes it: 9.0 → 90."""
        return self.compute_cap.replace(".", "")


def _mib(text: str) -> int | None:
    text = text.strip()
    try:
        return int(float(text) * MiB)
    except ValueError:
        return None  # "[N/A]" (MIG, WDDM) or "[Not Supported]"


def parse_gpus(csv: str) -> list[GpuInfo]:
    """`nvidia-smi --query-gpu=<GPU_FIELDS> --format=csv,noheader,nounits`, one line per GPU."""
    gpus = []
    for line in csv.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 6 or not parts[0].isdigit():
            continue  # a warning line, or an older nvidia-smi without compute_cap
        index, name, cap, driver, total, free = parts
        gpus.append(GpuInfo(int(index), name, cap, driver, _mib(total) or 0, _mib(free) or 0))
    return gpus


def parse_compute_apps(csv: str) -> dict[int, int]:
    """`nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits` → pid: bytes, summed
    over the GPUs a process uses (it is listed once per GPU). Lines without a number are left out."""
    used: dict[int, int] = {}
    for line in csv.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        memory = _mib(parts[1])
        if memory is not None:
            used[int(parts[0])] = used.get(int(parts[0]), 0) + memory
    return used


def _nvidia_smi(*query: str) -> str | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        return run_tool([smi, *query, "--format=csv,noheader,nounits"], what="asking nvidia-smi",
                        fix="check the NVIDIA driver with `nvidia-smi`", timeout=20).output
    except SmolconvError:
        return None


def list_gpus() -> list[GpuInfo] | None:
    """The GPUs nvidia-smi lists; None when there is no nvidia-smi or it fails (no driver)."""
    out = _nvidia_smi(f"--query-gpu={GPU_FIELDS}")
    return None if out is None else parse_gpus(out)


def _nvml_process_memory(pid: int) -> int | None:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        used = None
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    used = (used or 0) + int(proc.usedGpuMemory)
        return used
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def process_memory(pid: int) -> tuple[int | None, str]:
    """The GPU memory `pid` holds, in bytes, and what read it ("nvml", "nvidia-smi"); (None, why) when neither
    can (no driver, or the process is not on a GPU; in a container nvidia-smi may list the host's pids)."""
    used = _nvml_process_memory(pid)
    if used is not None:
        return used, "nvml"
    out = _nvidia_smi("--query-compute-apps=pid,used_memory")
    if out is None:
        return None, "no nvidia-smi or NVML"
    used = parse_compute_apps(out).get(pid)
    return (used, "nvidia-smi") if used is not None else (None, f"nvidia-smi does not list pid {pid}")


def built_archs(backend: str | None) -> list[str]:
    """The architectures a toolchain was built for, from its backend name: cuda89 → [89], cuda86-89 → [86, 89],
    cuda90a-real → [90a]; [] for the CPU build and for one built for `native` (unknown here)."""
    if not backend or not backend.startswith("cuda"):
        return []
    archs = []
    for item in backend[len("cuda"):].split("-"):
        if item and item[0].isdigit():
            archs.append(item)
    return archs


def arch_problem(gpu: GpuInfo, archs: list[str]) -> str | None:
    """Why a toolchain built for `archs` does not fit this GPU, or None when it does (or cannot be told).

    CMake's plain `89` builds sm_89 code and compute_89 PTX: the card runs sm_89 code when its capability is
    89, and JIT-compiles the PTX when it is newer (slow first start); an older card cannot run it at all."""
    if not archs or gpu.arch in archs:
        return None
    numbers = sorted(int("".join(c for c in a if c.isdigit())) for a in archs)
    mine = int(gpu.arch) if gpu.arch.isdigit() else 0
    built = ", ".join(f"sm_{a}" for a in archs)
    if mine and any(n < mine for n in numbers):
        return (f"the CUDA toolchain was built for {built}, not this {gpu.name} (sm_{gpu.arch}): its kernels are "
                f"JIT-compiled at every first start")
    return (f"the CUDA toolchain was built for {built}, not this {gpu.name} (sm_{gpu.arch}): its kernels will "
            "not run on this card")
