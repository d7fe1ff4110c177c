"""Shared fixtures. The llama.cpp toolchain is the real one `smolconv setup` builds (once, cached)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from smolconv.models import Layout
from smolconv.plan import PlanSettings
from smolconv.serve import free_port
from smolconv.synth import SynthOptions, synth_checkpoint
from smolconv.toolchain import SetupOptions, Toolchain, setup_toolchain


# A test that uses one of these builds llama.cpp, converts, or runs a model: it is `slow`, and `make check`
# (the tier that needs no llama.cpp build and no model run) leaves it out. Fixtures defined in a test module
# that need one of these are covered too: pytest lists a test's whole fixture closure.
SLOW_FIXTURES = frozenset({"toolchain", "llama_servers", "fixture_256m", "fixture_256m_t5", "built_256m",
                           "build_256m_q4_q8", "build_tiny_q4"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    # A no-op when `make setup` already built it; otherwise this builds it (several minutes).
    return setup_toolchain(SetupOptions()).toolchain


# The 256m fixtures' random vision tower has 2 of SigLIP's 12 layers: every check reads it the same way at any
# depth, and encoding the images is most of what an image prompt costs on these CPUs.
FIXTURE_VISION_LAYERS = 2


@pytest.fixture(scope="session")
def fixture_256m(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixtures") / "smolvlm2-256m"
    return synth_checkpoint(SynthOptions(shape="256m", out=out, vision_layers=FIXTURE_VISION_LAYERS)).path


@pytest.fixture(scope="session")
def fixture_tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixtures") / "smolvlm2-tiny"
    return synth_checkpoint(SynthOptions(shape="tiny", out=out)).path


@pytest.fixture(scope="session")
def fixture_tiny_t5(tmp_path_factory) -> Path:
    """The tiny fixture (untied embeddings) loaded and saved again by transformers 5, as a fine-tune is today."""
    out = tmp_path_factory.mktemp("fixtures") / "smolvlm2-tiny-t5"
    return synth_checkpoint(SynthOptions(shape="tiny", out=out, layout=Layout.TRANSFORMERS5)).path


@pytest.fixture(scope="session")
def fixture_256m_t5(tmp_path_factory) -> Path:
    """The 256m fixture (real SmolLM2 text, tied embeddings) saved by transformers 5."""
    out = tmp_path_factory.mktemp("fixtures") / "smolvlm2-256m-t5"
    return synth_checkpoint(SynthOptions(shape="256m", out=out, layout=Layout.TRANSFORMERS5, tied=True,
                                         vision_layers=FIXTURE_VISION_LAYERS)).path


# The shared default build plans at most this context. Its smoke fills num_ctx with the long prompt, whose cost
# grows with the square of the context on a CPU (8192 tokens: over a minute here); every check runs the same at 2048.
SHARED_BUILD_SETTINGS = PlanSettings(max_ctx=2048)


@dataclass
class CountedBuild:
    """A build and what it read: every Manifest.load (by directory) and each GGUF header read (by file name)."""

    result: object
    manifest_loads: list[Path]
    header_reads: Counter


@pytest.fixture(scope="session")
def counted_build_256m(toolchain, fixture_256m, tmp_path_factory) -> CountedBuild:
    """`smolconv build` of the 256m fixture with its defaults (F16, Q4_K_M, Q5_K_M, Q8_0, every preset, verify
    and smoke on llama-server) but SHARED_BUILD_SETTINGS, once per test run, counting its reads of the build
    directory as it goes."""
    from smolconv import builddir
    from smolconv.manifest import Manifest
    from smolconv.pipeline import BuildOptions, build

    loads: list[Path] = []
    reads: Counter = Counter()
    load = Manifest.load.__func__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Manifest, "load", classmethod(lambda cls, out_dir: loads.append(Path(out_dir))
                                                      or load(cls, out_dir)))
        for name in ("read_text_model", "read_projector"):
            real = getattr(builddir, name)
            patch.setattr(builddir, name, lambda path, real=real: reads.update([Path(path).name]) or real(path))
        result = build(BuildOptions(model=str(fixture_256m), out_dir=tmp_path_factory.mktemp("build") / "out",
                                    settings=SHARED_BUILD_SETTINGS), toolchain)
    return CountedBuild(result, loads, reads)


@pytest.fixture(scope="session")
def built_256m(counted_build_256m):
    """The 256m fixture's default build (a BuildResult): test_build.py checks it; others read it, or link its
    files into a folder of their own to change."""
    return counted_build_256m.result


@pytest.fixture(scope="session")
def build_256m_q4_q8(toolchain, fixture_256m, tmp_path_factory) -> Path:
    """A build of the 256m fixture with two variants, for plan and package tests (their own copy to change)."""
    from smolconv.pipeline import BuildOptions, build

    out = tmp_path_factory.mktemp("build-q4-q8") / "smolvlm2-256m"
    build(BuildOptions(model=str(fixture_256m), out_dir=out, types=("Q4_K_M", "Q8_0"), presets=("general",),
                       verify=False, smoke=False), toolchain)
    return out


@pytest.fixture(scope="session")
def build_tiny_q4(toolchain, fixture_tiny, tmp_path_factory) -> Path:
    """A build of the tiny fixture, Q4_K_M only, no verify or smoke: the cheapest real build (read-only users).

    Made the way scripts/chaos.py builds, so the chaos test can compare its reruns with it byte for byte.
    """
    out = tmp_path_factory.mktemp("build-tiny-q4") / "tiny"
    result = run_cli("build", str(fixture_tiny), "--out", str(out), "--preset", "general", "--type", "Q4_K_M",
                     "--no-verify", "--no-smoke")
    assert result.returncode == 0, result.stderr
    return out


# What the shared ONNX export holds: every variant (test_onnx.py measures them; the transformers.js test loads q4).
ONNX_VARIANTS = ("fp32", "fp16", "quantized", "q4", "q4f16")


@pytest.fixture(scope="session")
def onnx_256m(fixture_256m, tmp_path_factory) -> Path:
    """`export-onnx` of the 256m fixture, once per test run: test_onnx.py and test_transformers_js.py use it."""
    from smolconv.onnx.export import ExportOptions, export_onnx

    out = tmp_path_factory.mktemp("onnx") / "smolvlm2-256m-onnx"
    export_onnx(ExportOptions(str(fixture_256m), out, variants=ONNX_VARIANTS))
    return out


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "smolconv", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=1800)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The CLI refused with exit 2 and one line on stderr that holds every needle; returns the line."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def wait_for_http(url: str, timeout: float = 120, process: subprocess.Popen | None = None) -> None:
    """Wait until `url` answers 200; fail at once if `process` (the server) has died."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class LlamaServers:
    """The real llama-server on loopback, one per text model and projector for the whole test run: tests that
    only ask questions share it (each question sets its own sampling, so none depends on another)."""

    def __init__(self, toolchain: Toolchain) -> None:
        self.toolchain = toolchain
        self.running: dict[tuple[Path, Path], tuple[subprocess.Popen, str]] = {}

    def url(self, model: Path, mmproj: Path) -> str:
        key = (Path(model).resolve(), Path(mmproj).resolve())
        if key not in self.running:
            port = free_port()
            server = subprocess.Popen(
                [self.toolchain.tool("llama-server"), "-m", model, "--mmproj", mmproj, "--host", "127.0.0.1",
                 "--port", str(port), "-c", "2048", "--threads", "2"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            self.running[key] = (server, f"http://127.0.0.1:{port}")
            wait_for_http(f"{self.running[key][1]}/health", process=server)
        server, url = self.running[key]
        assert server.poll() is None, f"llama-server for {model.name} exited with {server.returncode}"
        return url

    def close(self) -> None:
        for server, _ in self.running.values():
            server.terminate()
        for server, _ in self.running.values():
            server.wait(timeout=30)


@pytest.fixture(scope="session")
def llama_servers(toolchain):
    servers = LlamaServers(toolchain)
    yield servers
    servers.close()


def chat_with_llama_server(servers: LlamaServers, model: Path, mmproj: Path, question: str,
                           max_tokens: int = 48, **request: object) -> dict:
    """Ask `model` + `mmproj` one question on the test run's llama-server for them."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{servers.url(model, mmproj)}/v1/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": question}],
                         "max_tokens": max_tokens, "temperature": 0, **request}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def write_test_image(path: Path, size: tuple[int, int] = (320, 240)) -> Path:
    """A small picture with shapes and colours (PIL ships with transformers' dependencies)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, size[1] * 2 // 3, size[0], size[1]], fill=(60, 140, 60))
    draw.ellipse([size[0] // 10, size[1] // 10, size[0] // 4, size[1] // 4 + size[0] // 8], fill=(250, 210, 40))
    draw.rectangle([size[0] // 2, size[1] // 3, size[0] * 3 // 4, size[1] * 2 // 3], fill=(200, 40, 40))
    image.save(path)
    return path


def child_pids(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc), whichever of its threads started them."""
    import os

    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []  # the process ended (or was reaped) after the caller saw it: it has no children now
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found += [int(child) for child in listing.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended while we looked
    return found


def descendants(pid: int) -> list[int]:
    """Every process under `pid`, children's children too: a test's own process tree, never the machine's."""
    found = []
    for child in child_pids(pid) if pid_is_running(pid) else []:
        found += [child, *descendants(child)]
    return found


def cmdline(pid: int) -> str:
    """The command line of `pid`, arguments joined by spaces; "" once it has gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def runs_program(pid: int, program: str) -> bool:
    """`pid` runs `program` itself, not smolconv's launcher (`python -I -S …/launcher.py`), whose command line
    names the program too until it execs it."""
    from smolconv.process.children import LAUNCHER, SUPERVISOR

    line = cmdline(pid)
    return program in line and str(LAUNCHER) not in line and str(SUPERVISOR) not in line


def pid_is_running(pid: int) -> bool:
    """The process exists and has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between the open and the read
        return False


@pytest.fixture(scope="session")
def go_renderer(tmp_path_factory) -> Path:
    """tests/go/render.go built with Go's own toolchain: Ollama's text/template renders a TEMPLATE as Ollama does."""
    go = shutil.which("go")
    if go is None:
        if os.environ.get("SMOLCONV_REQUIRE_GO"):
            pytest.fail("Go is not installed (apt-get install golang-go); CI requires this test")
        pytest.skip("Go is not installed (apt-get install golang-go)")
    out = tmp_path_factory.mktemp("go") / "render"
    env = {**os.environ, "GOCACHE": str(out.parent / "cache"), "GO111MODULE": "off"}
    program = Path(__file__).parent / "go" / "render.go"
    subprocess.run([go, "build", "-o", str(out), str(program)], check=True, env=env, capture_output=True)
    return out
