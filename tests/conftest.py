"""Shared fixtures and the collection hook. The llama.cpp toolchain is the real one `smolconv setup` builds (once,
cached). Helpers the tests share (running the CLI, servers, processes, files) are in tests/helpers.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from smolconv.core.models import Layout
from smolconv.fixtures.synth import SynthOptions, synth_checkpoint
from smolconv.llamacpp.toolchain import SetupOptions, Toolchain, setup_toolchain
from tests.helpers import FIXTURE_VISION_LAYERS, ONNX_VARIANTS, SHARED_BUILD_SETTINGS, LlamaServers, run_cli

# `make test` runs two pytest-xdist workers. ggml's threads wait for each other by spinning, so two llama.cpp
# processes with a thread per core each spend the cores spinning: each worker's llama.cpp tools
# (LLAMA_ARG_THREADS), torch (OMP_NUM_THREADS) and BLAS take their share of the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = str(max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "2"))))
    os.environ.setdefault("LLAMA_ARG_THREADS", _share)
    os.environ.setdefault("OMP_NUM_THREADS", _share)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", _share)

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
    from smolconv.pipeline import BuildOptions, build
    from smolconv.record import builddir
    from smolconv.record.manifest import Manifest

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
    """The 256m fixture's default build (a BuildResult). Only test_build.py uses it: `make test` hands each test
    file to one of two pytest-xdist workers (--dist loadfile), and a second file would build it again."""
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


@pytest.fixture(scope="session")
def onnx_256m(fixture_256m, tmp_path_factory) -> Path:
    """`export-onnx` of the 256m fixture, once per test run: test_onnx.py and test_transformers_js.py use it."""
    from smolconv.formats.onnx.export import ExportOptions, export_onnx

    out = tmp_path_factory.mktemp("onnx") / "smolvlm2-256m-onnx"
    export_onnx(ExportOptions(str(fixture_256m), out, variants=ONNX_VARIANTS))
    return out


@pytest.fixture(scope="session")
def llama_servers(toolchain):
    servers = LlamaServers(toolchain)
    yield servers
    servers.close()


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
