"""`smolconv doctor`: can the pipeline run here, and with what?

Each check gives a status: ok, warn (the pipeline runs, one stage is limited: no Ollama, no GPU) or fail
(the pipeline cannot run). The report is a plain dataclass, printed as a table or JSON by the CLI.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from smolconv import __version__
from smolconv.core.errors import SmolconvError
from smolconv.llamacpp.toolchain import (
    CONVERTER_MODULES,
    TOOLS,
    Toolchain,
    find_toolchain,
    missing_converter_modules,
    package_version,
)
from smolconv.plan.gpu import MiB, arch_problem, built_archs, list_gpus
from smolconv.runtime.ollama_api import ollama_host


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


OK, WARN, FAIL = CheckStatus.OK, CheckStatus.WARN, CheckStatus.FAIL
MIN_FREE_DISK = 10 * 1024**3  # the 2.2B model: ~4.5 GB download, ~4.5 GB F16 GGUF, plus quants


@dataclass
class Check:
    name: str
    status: str
    detail: str
    data: dict = field(default_factory=dict)


@dataclass
class DoctorReport:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, "smolconv": __version__,
                           "checks": [asdict(c) for c in self.checks]}, indent=2)


def run_doctor(llama_cpp: str | None = None, work_dir: Path = Path(".")) -> DoctorReport:
    checks = [check_toolchain(llama_cpp)]
    checks.append(check_converter_packages())
    checks.append(check_ollama())
    checks.append(check_gpu(checks[0].data.get("backend")))
    checks.append(check_disk(work_dir))
    return DoctorReport(checks)


def check_toolchain(llama_cpp: str | None) -> Check:
    try:
        toolchain: Toolchain = find_toolchain(llama_cpp)
    except SmolconvError as exc:
        return Check("llama.cpp", FAIL, exc.one_line())
    data = {"root": str(toolchain.root), "bin_dir": str(toolchain.bin_dir), "origin": toolchain.origin,
            "tools": {t: str(toolchain.bin_dir / t) for t in TOOLS},
            "converter": str(toolchain.converter), "gguf_py": str(toolchain.gguf_py)}
    try:
        version = toolchain.version()
    except SmolconvError as exc:
        return Check("llama.cpp", FAIL, exc.one_line(), data)
    data["version"] = version
    data.update({k: v for k, v in toolchain.info.items() if k in ("llama_cpp_commit", "backend")})
    origin = "smolconv setup" if toolchain.origin == "pinned" else "your checkout"
    return Check("llama.cpp", OK, f"build {version} at {toolchain.bin_dir} ({origin}); "
                 f"tools: {', '.join(TOOLS)}", data)


def check_converter_packages() -> Check:
    versions = {pkg: package_version(pkg) for pkg in CONVERTER_MODULES}
    missing = missing_converter_modules()
    shown = ", ".join(f"{pkg} {v}" for pkg, v in versions.items() if v)
    if missing:
        return Check("converter packages", FAIL,
                     f"missing {', '.join(missing)}: pip install {' '.join(missing)}", versions)
    return Check("converter packages", OK, shown, versions)


def check_ollama() -> Check:
    cli = shutil.which("ollama")
    host = ollama_host()
    data: dict = {"cli": cli, "host": host}
    try:
        with urllib.request.urlopen(f"{host}/api/version", timeout=2) as response:
            data["version"] = json.load(response).get("version")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        data["error"] = str(reason)
    cli_text = f"CLI {cli}" if cli else "no ollama CLI on PATH"
    if data.get("version"):
        return Check("ollama", OK, f"{cli_text}; daemon {data['version']} at {host}", data)
    return Check("ollama", WARN, f"{cli_text}; no daemon at {host} ({data.get('error')}): "
                 "`smolconv package --create` needs one", data)


def check_gpu(backend: str | None = None) -> Check:
    """The GPUs, their compute capability and driver; a warning when the installed toolchain (`backend`, as
    toolchain.json records it: cuda89) was built for another architecture than a GPU here."""
    gpus = list_gpus()
    if gpus is None:
        return Check("gpu", WARN, "none (no nvidia-smi, or it failed): llama.cpp runs on the CPU", {"gpus": []})
    if not gpus:
        return Check("gpu", WARN, "none: nvidia-smi lists no GPU", {"gpus": []})
    data = {"gpus": [{"name": g.name, "compute_cap": g.compute_cap, "driver": g.driver,
                      "total_mib": g.memory_total // MiB, "free_mib": g.memory_free // MiB} for g in gpus],
            "toolchain_backend": backend}
    text = "; ".join(f"{g.name} (compute {g.compute_cap}), driver {g.driver}, {g.memory_total // MiB} MiB total, "
                     f"{g.memory_free // MiB} MiB free" for g in gpus)
    archs = built_archs(backend)
    problems = [p for p in (arch_problem(g, archs) for g in gpus) if p]
    if problems:
        data["problems"] = problems
        return Check("gpu", WARN, f"{text}. {problems[0]}: rebuild with `smolconv setup --cuda --cuda-arch "
                     f"{gpus[0].arch}`", data)
    if backend and not archs:  # a CPU toolchain on a machine with a GPU
        return Check("gpu", WARN, f"{text}. The llama.cpp toolchain is a CPU build: `smolconv setup --cuda "
                     f"--cuda-arch {gpus[0].arch}` uses the GPU", data)
    return Check("gpu", OK, text, data)


def check_disk(work_dir: Path) -> Check:
    path = Path(work_dir).resolve()
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    data = {"path": str(path), "free_bytes": free}
    text = f"{free / 1024**3:.1f} GiB free in {path}"
    if free < MIN_FREE_DISK:
        return Check("disk", WARN, text + f" (the 2.2B model needs about {MIN_FREE_DISK // 1024**3} GiB)", data)
    return Check("disk", OK, text, data)
