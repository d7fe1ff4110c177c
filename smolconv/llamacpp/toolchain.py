"""The llama.cpp toolchain: a pinned source, built once into the user cache, or the user's own build.

Default source: the `llama-cpp-python` sdist on PyPI, which vendors a complete llama.cpp tree. pip fetches
it, its sha256 is checked against the value pinned here, and `vendor/llama.cpp` is built with CMake
(only the tools the pipeline runs) into `<user cache>/smolconv/llama.cpp/<version>-<backend>/`:

    src/              the llama.cpp tree: convert_hf_to_gguf.py, conversion/, gguf-py/, tools/ ...
    bin/              llama-quantize, llama-mtmd-cli, llama-server, llama-imatrix, llama-perplexity
    toolchain.json    written last: its presence is what makes an install complete

The install is assembled in `<name>.partial` and renamed into place, under a file lock, so a failed or
interrupted build never leaves a directory that looks complete, and two setups never build over each other.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
from filelock import FileLock

from smolconv.core.errors import SmolconvError
from smolconv.core.hashing import sha256_file
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.process.runner import ToolResult, run_tool

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
LLAMA_CPP_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
_SDIST_TREE = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
_SDIST_COMMIT_FILE = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/.git/modules/vendor/llama.cpp/HEAD"

TOOLS = ("llama-quantize", "llama-mtmd-cli", "llama-server", "llama-imatrix", "llama-perplexity")
DEFAULT_CUDA_ARCH = "89"  # Ada Lovelace: the RTX 4070

# What convert_hf_to_gguf.py imports (its requirements file), as import names.
CONVERTER_MODULES = {
    "torch": "torch",
    "numpy": "numpy",
    "transformers": "transformers",
    "sentencepiece": "sentencepiece",
    "protobuf": "google.protobuf",
    "safetensors": "safetensors",
}

_CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    # Static binaries: bin/ can be copied out of the build tree and the build tree removed.
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    # The server's web UI is not needed and its prebuilt assets would be downloaded from the Hub.
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)
# GGML_NATIVE (-march=native) picks up AVX-512 and AMX where the CPU lists them; in virtual machines and
# sandboxes that list AMX without enabling it, quantized models then die with SIGILL. A fixed x86-64 baseline
# (AVX2, FMA, F16C, BMI2: every CPU an RTX 4070 is paired with) also keeps a cached build valid when the cache
# moves to another machine.
_X86_FLAGS = ("-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
              "-DGGML_BMI2=ON")
# Bumped whenever the build recipe changes, so installs made by an older recipe are rebuilt.
RECIPE = 2

MARKER = "toolchain.json"


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/smolconv` on Linux (platformdirs honours XDG_CACHE_HOME)."""
    return Path(platformdirs.user_cache_dir("smolconv", appauthor=False))


def backend_name(cuda: bool, cuda_arch: str = DEFAULT_CUDA_ARCH) -> str:
    return f"cuda{cuda_arch.replace(';', '-')}" if cuda else "cpu"


def install_dir(backend: str) -> Path:
    return cache_root() / "llama.cpp" / f"{LLAMA_CPP_PYTHON_VERSION}-{backend}"


@dataclass(frozen=True)
class Toolchain:
    """A llama.cpp tree (converter + gguf-py) and a directory holding its built tools."""

    root: Path
    bin_dir: Path
    origin: str  # "pinned" (built by smolconv setup) or "user" (--llama-cpp / SMOLCONV_LLAMA_CPP)
    info: dict = field(default_factory=dict, compare=False)

    @property
    def converter(self) -> Path:
        return self.root / "convert_hf_to_gguf.py"

    @property
    def lora_converter(self) -> Path:
        return self.root / "convert_lora_to_gguf.py"

    @property
    def gguf_py(self) -> Path:
        return self.root / "gguf-py"

    def tool(self, name: str) -> Path:
        path = self.bin_dir / name
        if not path.exists():
            raise SmolconvError(
                f"llama.cpp tool {name} is missing from {self.bin_dir}",
                "run `smolconv setup` (or rebuild your own llama.cpp with that target)",
            )
        return path

    def identity(self) -> str:
        """What a build records as "made by": the pinned commit, or a user build's own version line."""
        commit = self.info.get("llama_cpp_commit")
        return f"llama.cpp@{commit}" if commit else f"user:{self.version()}"

    def describe(self) -> dict:
        return {"origin": self.origin, "version": self.info.get("version") or self.version(),
                "commit": self.info.get("llama_cpp_commit"), "backend": self.info.get("backend"),
                "llama_cpp_python": self.info.get("llama_cpp_python"), "bin_dir": str(self.bin_dir)}

    def version(self) -> str:
        """What the tools say of themselves, e.g. `version: 1 (0c1e570)`."""
        result = run_tool(
            [self.tool("llama-server"), "--version"],
            what="asking llama-server for its version",
            fix="rebuild the toolchain with `smolconv setup --rebuild`",
            timeout=60,
        )
        for line in result.output.splitlines():
            if line.startswith("version:"):
                return line.removeprefix("version:").strip()
        return "unknown"

    def run_converter(
        self,
        model_dir: Path,
        outfile: Path,
        *,
        outtype: str = "f16",
        mmproj: bool = False,
        extra_args: Sequence[str] = (),
        on_line: Callable[[str], None] | None = None,
        on_start: Callable[[subprocess.Popen], None] | None = None,
    ) -> ToolResult:
        """Run this tree's convert_hf_to_gguf.py, which imports the gguf-py beside it (not the installed one)."""
        # The converter runs from its own tree (cwd), so relative paths must be made absolute first.
        model_dir, outfile = Path(model_dir).resolve(), Path(outfile).resolve()
        args = [sys.executable, self.converter, str(model_dir), "--outfile", str(outfile), "--outtype", outtype]
        if mmproj:
            args.append("--mmproj")
        args.extend(extra_args)
        return run_tool(
            args,
            what=f"converting {model_dir} to GGUF" + (" (vision projector)" if mmproj else ""),
            fix="the converter's last lines are quoted here; fix the checkpoint they name, or report them",
            cwd=self.root,
            on_line=on_line,
            on_start=on_start,
            writes_to=outfile.parent,
        )

    def run_lora_converter(self, adapter_dir: Path, base_dir: Path, outfile: Path, *, outtype: str = "f32",
                           on_line: Callable[[str], None] | None = None) -> ToolResult:
        """This tree's convert_lora_to_gguf.py; `--base` gives it the base's config, so it never asks the Hub."""
        adapter_dir, base_dir, outfile = Path(adapter_dir).resolve(), Path(base_dir).resolve(), Path(outfile).resolve()
        args = [sys.executable, self.lora_converter, str(adapter_dir), "--base", str(base_dir),
                "--outfile", str(outfile), "--outtype", outtype]
        return run_tool(
            args,
            what=f"converting the adapter {adapter_dir} to a GGUF LoRA",
            fix="the converter's last lines are quoted here; check the adapter, or use --adapter-format merge",
            cwd=self.root,
            on_line=on_line,
            writes_to=outfile.parent,
        )


def missing_converter_modules() -> list[str]:
    return [pkg for pkg, module in CONVERTER_MODULES.items() if importlib.util.find_spec(module) is None]


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------------
# Locating a toolchain


def _user_bin_dirs(root: Path) -> list[Path]:
    return [root / "build" / "bin", root / "bin", root]


def user_toolchain(directory: str | os.PathLike) -> Toolchain:
    """The user's own llama.cpp checkout and build; every missing piece is named in one error."""
    root = Path(directory).expanduser().resolve()
    if not root.is_dir():
        raise SmolconvError(
            f"--llama-cpp {directory} is not a directory",
            "point it at a llama.cpp checkout with a build, or leave it out to use `smolconv setup`",
        )
    bin_dirs = _user_bin_dirs(root)
    bin_dir = next((d for d in bin_dirs if all((d / t).is_file() for t in TOOLS)), None)
    missing: list[str] = []
    if bin_dir is None:
        present = max(bin_dirs, key=lambda d: sum((d / t).is_file() for t in TOOLS))
        missing += [t for t in TOOLS if not (present / t).is_file()]
    if not (root / "convert_hf_to_gguf.py").is_file():
        missing.append("convert_hf_to_gguf.py")
    if not (root / "gguf-py" / "gguf").is_dir():
        missing.append("gguf-py/")
    if missing:
        looked = ", ".join(str(d) for d in bin_dirs[:2])
        raise SmolconvError(
            f"llama.cpp at {root} lacks {', '.join(missing)} (tools looked for in {looked})",
            "build them with `cmake -B build && cmake --build build --target " + " ".join(TOOLS)
            + "`, or drop --llama-cpp/SMOLCONV_LLAMA_CPP to use smolconv's own build",
        )
    assert bin_dir is not None
    return Toolchain(root=root, bin_dir=bin_dir, origin="user")


def installed_toolchain(backend: str = "cpu") -> Toolchain | None:
    """The toolchain `smolconv setup` built for `backend`, or None when there is no complete one."""
    final = install_dir(backend)
    marker = final / MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if info.get("recipe") != RECIPE:
        return None  # made by an older build recipe: `setup` rebuilds it
    bin_dir = final / "bin"
    if not all((bin_dir / t).is_file() for t in TOOLS) or not (final / "src" / "convert_hf_to_gguf.py").is_file():
        return None
    return Toolchain(root=final / "src", bin_dir=bin_dir, origin="pinned", info=info)


def find_toolchain(llama_cpp: str | os.PathLike | None = None, backend: str | None = None) -> Toolchain:
    """The toolchain the pipeline uses: --llama-cpp / SMOLCONV_LLAMA_CPP, else the one setup built."""
    if llama_cpp:
        return user_toolchain(llama_cpp)
    # A GPU build, when the user made one, is what they want the pipeline to use.
    backends = [backend] if backend else [*_installed_cuda_backends(), "cpu"]
    for name in backends:
        found = installed_toolchain(name)
        if found:
            return found
    for name in backends:
        final = install_dir(name)
        missing = [t for t in TOOLS if not (final / "bin" / t).is_file()]
        if (final / MARKER).is_file() and missing:
            raise SmolconvError(f"the llama.cpp toolchain in {final} is missing {', '.join(missing)} "
                                "(deleted after setup?)", "run `smolconv setup --rebuild`")
    raise SmolconvError(
        "no llama.cpp toolchain is installed",
        "run `smolconv setup` (add --cuda for a GPU build) or pass --llama-cpp DIR with your own build",
    )


def toolchain_summary() -> str:
    """One line for `smolconv --version`: the llama.cpp commit the pipeline would use, without running a tool."""
    user = os.environ.get("SMOLCONV_LLAMA_CPP")
    if user:
        return f"your own build at {user} (SMOLCONV_LLAMA_CPP)"
    try:
        found = find_toolchain()
    except SmolconvError:
        return "not installed (run `smolconv setup`)"
    commit, backend = found.info.get("llama_cpp_commit", "unknown commit"), found.info.get("backend", "cpu")
    return f"{commit} ({backend} build in {found.bin_dir})"


def _installed_cuda_backends() -> list[str]:
    parent = cache_root() / "llama.cpp"
    prefix = f"{LLAMA_CPP_PYTHON_VERSION}-"
    if not parent.is_dir():
        return []
    return sorted(
        p.name.removeprefix(prefix) for p in parent.iterdir()
        if p.name.startswith(prefix + "cuda") and not p.name.endswith(".partial")
    )


# --------------------------------------------------------------------------------------------------
# Building the pinned toolchain


@dataclass
class SetupOptions:
    cuda: bool = False
    cuda_arch: str = DEFAULT_CUDA_ARCH
    jobs: int | None = None
    rebuild: bool = False
    # Where pip fetches the sdist from is pip's own business (index, proxy, find-links); a local copy of
    # the sdist can be named to skip the download. Its sha256 is checked either way.
    sdist: Path | None = None
    extra_cmake_args: tuple[str, ...] = ()


@dataclass
class SetupReport:
    toolchain: Toolchain
    built: bool  # False when an existing install was reused
    seconds: float = 0.0


def setup_toolchain(options: SetupOptions, progress: ProgressFn = no_progress) -> SetupReport:
    """Build (or reuse) the pinned llama.cpp toolchain. Safe to run twice, or twice at once."""
    started = time.monotonic()
    backend = backend_name(options.cuda, options.cuda_arch)
    if not options.rebuild:
        existing = installed_toolchain(backend)
        if existing:
            return SetupReport(existing, built=False, seconds=time.monotonic() - started)

    _check_build_tools(options)
    missing = missing_converter_modules()
    if missing:
        raise SmolconvError(
            f"the converter needs Python packages that are not installed: {', '.join(missing)}",
            f"run `{sys.executable} -m pip install {' '.join(missing)}` (or reinstall smolconv)",
        )

    final = install_dir(backend)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        # Another setup may have finished while we waited for the lock.
        if not options.rebuild:
            existing = installed_toolchain(backend)
            if existing:
                return SetupReport(existing, built=False, seconds=time.monotonic() - started)
        sdist = _fetch_sdist(options.sdist, progress)
        staging = final.with_name(final.name + ".partial")
        if staging.exists():
            shutil.rmtree(staging)  # a crashed earlier setup; we hold the lock, so nobody else uses it
        # The build directory outlives a failed attempt, so the next setup resumes the compile; the
        # staging tree does not (it is re-extracted, with the archive's mtimes, so nothing recompiles).
        build_dir = final.with_name(f"build-{final.name}")
        try:
            _assemble(sdist, staging, build_dir, backend, options, progress)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if final.exists():  # --rebuild: replace the old install only now that the new one is whole
            shutil.rmtree(final)
        os.replace(staging, final)
        shutil.rmtree(build_dir, ignore_errors=True)
    toolchain = installed_toolchain(backend)
    assert toolchain is not None
    return SetupReport(toolchain, built=True, seconds=time.monotonic() - started)


def _assemble(sdist: Path, staging: Path, build_dir: Path, backend: str, options: SetupOptions,
              progress: ProgressFn) -> None:
    """Fill `staging` with src/, bin/ and, last, the marker file."""
    progress("extracting llama.cpp from the sdist", None)
    commit = _extract_tree(sdist, staging / "src")
    _cmake_build(staging / "src", build_dir, _cmake_flags(options, commit), progress, options.jobs)
    (staging / "bin").mkdir()
    for tool in TOOLS:
        shutil.copy2(build_dir / "bin" / tool, staging / "bin" / tool)
    info = {
        "recipe": RECIPE,
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "sdist_sha256": LLAMA_CPP_SDIST_SHA256,
        "llama_cpp_commit": commit,
        "backend": backend,
        "cmake_flags": list(_cmake_flags(options, commit)),
        "tools": list(TOOLS),
    }
    info["version"] = Toolchain(staging / "src", staging / "bin", "pinned").version()
    (staging / MARKER).write_text(json.dumps(info, indent=2) + "\n")


def _check_build_tools(options: SetupOptions) -> None:
    needed = ["cmake", "cc", "c++"] + (["nvcc"] if options.cuda else [])
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        raise SmolconvError(
            f"building llama.cpp needs {', '.join(missing)} on PATH",
            "install them (Debian: `apt-get install cmake build-essential`"
            + (", plus the CUDA toolkit for --cuda" if options.cuda else "")
            + ") or pass --llama-cpp DIR with your own build",
        )


def _fetch_sdist(local: Path | None, progress: ProgressFn) -> Path:
    """The pinned sdist, from the download cache or fetched with pip, its sha256 checked."""
    downloads = cache_root() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    cached = downloads / LLAMA_CPP_SDIST
    if local is not None:
        _verify_sdist(Path(local))
        return Path(local)
    if cached.is_file():
        try:
            _verify_sdist(cached)
            return cached
        except SmolconvError:
            cached.unlink()  # a corrupt cached copy: fetch again
    progress(f"downloading llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist with pip", None)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        # --no-binary names the one package: with :all: pip also builds the sdist's build requirements from
        # source to read its metadata, minutes on 2 cores for a file it only saves.
        run_tool(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
             "--disable-pip-version-check", "-d", tmp, f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"],
            what=f"downloading llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} with pip",
            tree=True,  # pip's own subprocesses die with smolconv too
            fix="check that PyPI is reachable, or pass --sdist with a local copy of " + LLAMA_CPP_SDIST,
        )
        fetched = Path(tmp) / LLAMA_CPP_SDIST
        if not fetched.is_file():
            raise SmolconvError(f"pip did not produce {LLAMA_CPP_SDIST}", "pass --sdist with a local copy")
        _verify_sdist(fetched)
        os.replace(fetched, cached)
    return cached


def _verify_sdist(path: Path) -> None:
    if not path.is_file():
        raise SmolconvError(f"sdist {path} does not exist", f"pass the path of {LLAMA_CPP_SDIST}")
    digest = sha256_file(path)
    if digest != LLAMA_CPP_SDIST_SHA256:
        raise SmolconvError(
            f"{path.name} has sha256 {digest[:16]}…, expected {LLAMA_CPP_SDIST_SHA256[:16]}…",
            f"use the unmodified {LLAMA_CPP_SDIST} from PyPI",
        )


def _extract_tree(sdist: Path, dest: Path) -> str:
    """Extract vendor/llama.cpp into `dest`; return the llama.cpp commit the sdist vendors."""
    commit = "unknown"
    with tarfile.open(sdist, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            if member.name == _SDIST_COMMIT_FILE:
                commit = tar.extractfile(member).read().decode().strip()  # type: ignore[union-attr]
            elif member.name.startswith(_SDIST_TREE) and member.name != _SDIST_TREE:
                rel = member.name[len(_SDIST_TREE):]
                if rel == ".git" or rel.startswith(".git/"):
                    continue  # points into the sdist's own .git, which is not extracted
                member.name = rel
                members.append(member)
        dest.mkdir(parents=True)
        tar.extractall(dest, members=members, filter="data")
    return commit


def _cmake_flags(options: SetupOptions, commit: str) -> tuple[str, ...]:
    # The sdist carries no git history, so tell CMake which commit it is (llama.cpp's own version output).
    flags = [*_CMAKE_FLAGS, f"-DLLAMA_BUILD_COMMIT={commit[:7]}"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags += _X86_FLAGS
    if options.cuda:
        flags += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={options.cuda_arch}"]
    return (*flags, *options.extra_cmake_args)


_PERCENT = re.compile(r"^\[\s*(\d+)%\]")


def _cmake_build(
    src: Path, build_dir: Path, flags: Sequence[str], progress: ProgressFn, jobs: int | None = None
) -> None:
    fix = "read the CMake output above; `smolconv setup` retries from where it stopped"
    progress("configuring llama.cpp with CMake", None)
    run_tool(
        ["cmake", "-S", src, "-B", build_dir, *flags],
        what="configuring llama.cpp",
        tree=True,  # cmake's test compiles (make, cc) die with smolconv too
        fix=fix,
    )

    def on_line(line: str) -> None:
        match = _PERCENT.match(line)
        if match:
            progress(f"building {' '.join(TOOLS)}", int(match.group(1)) / 100)

    jobs = jobs or os.cpu_count() or 2
    progress(f"building {' '.join(TOOLS)}", 0.0)
    run_tool(
        ["cmake", "--build", build_dir, "--config", "Release", "-j", str(jobs), "--target", *TOOLS],
        what="building llama.cpp",
        tree=True,  # make and the compilers die with smolconv too
        fix=fix,
        on_line=on_line,
    )
