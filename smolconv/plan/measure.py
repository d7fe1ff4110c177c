"""Checking the memory model against llama.cpp's own numbers: llama-server's reported buffers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from smolconv.core.errors import SmolconvError
from smolconv.plan.memory import MiB, PlanSettings
from smolconv.process.runner import run_until
from smolconv.record.variants import Variant

# --------------------------------------------------------------------------------------------------
# Checking the model against llama.cpp's own numbers


@dataclass(frozen=True)
class MeasuredMemory:
    """What llama-server reports at start-up (log verbosity 4), in bytes, summed over devices."""

    weights: int            # text model buffers, without CPU_REPACK (a CPU-only re-layout copy)
    projector_weights: int  # clip "model size"
    kv_cache: int
    compute: int            # text compute buffers (device and host)
    projector_compute: int
    output: int
    repack: int = 0
    buffers: dict[str, float] = field(default_factory=dict)  # every reported line, MiB

    @property
    def total(self) -> int:
        return (self.weights + self.projector_weights + self.kv_cache + self.compute + self.projector_compute
                + self.output)

    @property
    def on_cuda(self) -> bool:
        """llama-server put buffers on a CUDA device (CUDA0 ...): a CUDA build with a GPU."""
        return any(key.split(":")[1].startswith("CUDA") and not key.split(":")[1].startswith("CUDA_Host")
                   for key in self.buffers if key.count(":") == 2)

    @property
    def device_total(self) -> int:
        """What the CUDA devices hold of the buffers (host-side buffers left out), in bytes."""
        return int(round(sum(mib for key, mib in self.buffers.items()
                             if key.count(":") == 2 and key.split(":")[1].startswith("CUDA")
                             and not key.split(":")[1].startswith("CUDA_Host")) * MiB)
                   + (self.projector_weights if self.on_cuda else 0))


_BUFFER = re.compile(r"(?P<where>\w+):\s+(?P<dev>[\w.]+)\s+(?P<kind>model|KV|compute|output) buffer size\s*=\s*"
                     r"(?P<mib>[0-9.]+) MiB")
_CLIP_MODEL = re.compile(r"load_hparams: model size:\s*(?P<mib>[0-9.]+) MiB")


def parse_llama_server_memory(log: str) -> MeasuredMemory:
    sums = {"weights": 0.0, "repack": 0.0, "kv": 0.0, "compute": 0.0, "clip_compute": 0.0, "output": 0.0,
            "clip_model": 0.0}
    buffers: dict[str, float] = {}
    for line in log.splitlines():
        if m := _BUFFER.search(line):
            mib, kind, dev = float(m["mib"]), m["kind"], m["dev"]
            buffers[f"{m['where']}:{dev}:{kind}"] = buffers.get(f"{m['where']}:{dev}:{kind}", 0.0) + mib
            if kind == "model":
                sums["repack" if dev.endswith("REPACK") else "weights"] += mib
            elif kind == "KV":
                sums["kv"] += mib
            elif kind == "output":
                sums["output"] += mib
            elif m["where"] == "reserve_compute_meta":  # clip (the projector) reserves its graph here
                sums["clip_compute"] += mib
            else:
                sums["compute"] += mib
        elif m := _CLIP_MODEL.search(line):
            sums["clip_model"] += float(m["mib"])
            buffers["clip:model"] = float(m["mib"])
    if not sums["weights"]:
        raise SmolconvError("llama-server reported no model buffer sizes",
                            "this llama.cpp build logs differently; run it with -lv 4 and read the sizes by hand")

    def b(key: str) -> int:
        return int(round(sums[key] * MiB))

    return MeasuredMemory(weights=b("weights"), projector_weights=b("clip_model"), kv_cache=b("kv"),
                          compute=b("compute"), projector_compute=b("clip_compute"), output=b("output"),
                          repack=b("repack"), buffers=buffers)


def measure_llama_server(toolchain, variant: Variant, n_ctx: int, settings: PlanSettings,
                         n_gpu_layers: int | None = None, port: int = 0) -> MeasuredMemory:
    """Start llama-server on the variant's files, read the buffer sizes it reports, stop it."""

    if variant.text_path is None or variant.projector_path is None:
        raise SmolconvError("a variant estimated from config dimensions has no files to measure",
                            "build it first, then plan the build directory with --measure")
    args = [toolchain.tool("llama-server"), "-m", variant.text_path, "--mmproj", variant.projector_path,
            "-c", str(n_ctx), "-np", str(settings.n_parallel), "-ub", str(settings.n_ubatch),
            "-ctk", settings.kv_type, "-ctv", settings.kv_type, "--host", "127.0.0.1", "--port", str(port),
            "-lv", "4", "--no-webui"]
    if n_gpu_layers is not None:
        args += ["-ngl", str(n_gpu_layers)]
    if variant.adapter_path is not None:
        args += ["--lora", variant.adapter_path]
    result = run_until(args, ready=lambda line: "listening on" in line or "server is listening" in line,
                       what=f"measuring {variant.name} with llama-server", timeout=600,
                       fix="check that the GGUF files load with llama-server by hand")
    return parse_llama_server_memory(result.output)
