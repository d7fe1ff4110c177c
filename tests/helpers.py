"""Helpers the tests share: running the command line, servers and processes, files to test with, and checks
used by more than one test module. conftest.py holds only the fixtures and the hooks; they import from here too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from smolconv.llamacpp.toolchain import Toolchain
from smolconv.plan import PlanSettings, Projector
from smolconv.runtime.serve import free_port

__all__ = [
    "CONVERSATIONS", "DAMAGED_PROJECTOR_TENSOR", "FIXTURE_VISION_LAYERS", "ONNX_VARIANTS", "PROJECTOR_256M",
    "SHARED_BUILD_SETTINGS", "CliResult", "LlamaServers", "assert_one_line_error", "chat_with_llama_server",
    "check_published_folder", "child_pids", "cmdline", "descendants", "free_port", "hub_error", "invoke",
    "linked_build", "tool_threads",
    "ollama_messages", "pid_is_running", "render_with_go", "run_cli", "runs_program", "wait_for_http",
    "write_test_image",
]

# -- settings the shared fixtures are made with --------------------------------------------------------

# The 256m fixtures' random vision tower has 2 of SigLIP's 12 layers: every check reads it the same way at any
# depth, and encoding the images is most of what an image prompt costs on these CPUs.
FIXTURE_VISION_LAYERS = 2

# The shared default build plans at most this context. Its smoke fills num_ctx with the long prompt, whose cost
# grows with the square of the context on a CPU (8192 tokens: over a minute here); every check runs the same at 2048.
SHARED_BUILD_SETTINGS = PlanSettings(max_ctx=2048)


def tool_threads() -> str:
    """The --threads a test gives llama.cpp's tools: a pytest-xdist worker's share of the cores under `make test`
    (tests/conftest.py sets LLAMA_ARG_THREADS: two spinning 2-thread processes on 2 cores crawl), else 2."""
    return os.environ.get("LLAMA_ARG_THREADS", "2")


# What the shared ONNX export holds: every variant (test_onnx.py measures them; the transformers.js test loads q4).
ONNX_VARIANTS = ("fp32", "fp16", "quantized", "q4", "q4f16")

# SmolVLM2-256M's projector: 512-pixel tiles of 16-pixel patches, pixel shuffle 4, images resized to 2048.
PROJECTOR_256M = Projector(weight_bytes=0, image_size=512, patch_size=16, scale_factor=4, preproc_image_size=2048,
                           n_embd=768, n_ff=3072)


# -- the command line ----------------------------------------------------------------------------------


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a subprocess.

    For what needs a process of its own: signals, child processes, a working directory, environment variables
    read when a module is imported (huggingface_hub's HF_*), a long build. A test that only reads the output and
    the exit code uses `invoke`."""
    return subprocess.run([sys.executable, "-m", "smolconv", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=1800)


@dataclass(frozen=True)
class CliResult:
    """A run of the command line in this process, with what tests read from subprocess.CompletedProcess."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def invoke(*args: str, env: dict | None = None) -> CliResult:
    """Run the command line in this process, through typer's CliRunner, as `python -m smolconv` runs it.

    `smolconv.cli.run` is what `python -m smolconv` calls: smolconv.cli.app under run_program, whose mapping
    makes click's own usage errors (an unknown option, a value outside the choices) and a full disk the same
    one-line error as a command's SmolconvError. CliRunner.invoke would run the app in click's standalone mode,
    which prints usage errors its own way, so only CliRunner's isolation is used: stdin, stdout and stderr
    captured apart, the environment set. `env`, as for run_cli, is the whole environment of the run (a variable
    not in it is unset meanwhile).

    What a process of its own would print, this prints too: a warning as Python shows one by default, a log
    record that would reach logging's last resort, and a command that raises as the traceback with exit 1.
    What run_program sets up for a process (its stop-signal handlers and hooks) is put back afterwards."""
    import logging
    import traceback
    import warnings

    from typer.testing import CliRunner

    from smolconv.cli import run

    overrides = None
    if env is not None:
        overrides = {**dict.fromkeys(set(os.environ) - set(env)), **env}
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    handlers = {signum: signal.getsignal(signum) for signum in stop_signals}
    hooks, argv = (sys.excepthook, sys.unraisablehook), sys.argv
    with CliRunner().isolation(env=overrides) as (stdout, stderr, _output), warnings.catch_warnings():
        _warn_as_a_new_process_does()
        last_resort = logging.StreamHandler()  # on this run's stderr, as logging.lastResort, its level and format
        last_resort.setLevel(logging.WARNING)
        logging.getLogger().addHandler(last_resort)
        sys.argv = ["smolconv", *args]
        try:
            run()
            code = 0  # run() always exits; should it return, a process would end with 0
        except SystemExit as exit_:
            code = exit_.code
            if code is None:
                code = 0
            elif not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        except Exception:
            traceback.print_exc(file=sys.stderr)
            code = 1
        finally:
            logging.getLogger().removeHandler(last_resort)
            sys.argv = argv
            sys.excepthook, sys.unraisablehook = hooks
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            sys.stdout.flush()
            sys.stderr.flush()
        out, err = stdout.getvalue(), stderr.getvalue()
    return CliResult(tuple(args), code, out.decode("utf-8", "replace").replace("\r\n", "\n"),
                     err.decode("utf-8", "replace").replace("\r\n", "\n"))


def _warn_as_a_new_process_does() -> None:
    """Python's default warning filters (not pytest's), each warning shown on stderr once per place it is raised."""
    import warnings

    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__", append=True)
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category, append=True)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show


def assert_one_line_error(result: subprocess.CompletedProcess | CliResult, *needles: str) -> str:
    """The CLI refused with exit 2 and one line on stderr that holds every needle; returns the line."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


# -- servers -------------------------------------------------------------------------------------------


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
                 "--port", str(port), "-c", "2048", "--threads", tool_threads()],
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


def chat_with_llama_server(servers: LlamaServers, model: Path, mmproj: Path, question: str,
                           max_tokens: int = 48, **request: object) -> dict:
    """Ask `model` + `mmproj` one question on the test run's llama-server for them."""
    import urllib.request

    request = urllib.request.Request(
        f"{servers.url(model, mmproj)}/v1/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": question}],
                         "max_tokens": max_tokens, "temperature": 0, **request}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


# -- files to test with --------------------------------------------------------------------------------


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


# The projector tensor the gate tests scale (test_gates.py, test_verify.py).
DAMAGED_PROJECTOR_TENSOR = "mm.model.fc.weight"


def linked_build(build: Path, dest: Path, *, damaged: str | None = None) -> Path:
    """The build's files as hard links (the shared fixture stays untouched), `damaged` a real copy to change."""
    shutil.copytree(build, dest, copy_function=os.link, ignore=shutil.ignore_patterns("build.json", "smoke"))
    shutil.copyfile(build / "build.json", dest / "build.json")
    if damaged:
        (dest / damaged).unlink()
        shutil.copyfile(build / damaged, dest / damaged)
    return dest


# -- processes (Linux /proc) ---------------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc), whichever of its threads started them."""
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


# -- chat templates: Ollama's Go rendering against HF's (test_template.py, test_publish.py, test_video.py) ----

# Conversations in HF's form: content parts of type text or image.
CONVERSATIONS = {
    "single turn": [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}],
    "system prompt": [
        {"role": "system", "content": [{"type": "text", "text": "Answer in one word."}]},
        {"role": "user", "content": [{"type": "text", "text": "Capital of Italy?"}]},
    ],
    "multi-turn": [
        {"role": "user", "content": [{"type": "text", "text": "Hi!"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello. How can I help?"}]},
        {"role": "user", "content": [{"type": "text", "text": "Name a colour.\nJust one."}]},
    ],
    "image turn": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this."}]}],
    "empty system": [
        {"role": "system", "content": [{"type": "text", "text": ""}]},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
    ],
    "two images, then a follow-up": [
        {"role": "system", "content": [{"type": "text", "text": "You compare pictures."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Differences?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The second is darker."}]},
        {"role": "user", "content": [{"type": "text", "text": "Which is bigger?"}]},
    ],
    "text that looks like markup": [
        {"role": "user", "content": [{"type": "text", "text": "Explain {{ .Content }} and <image> and [img-3"}]},
    ],
}


def ollama_messages(conversation: list[dict]) -> list[dict]:
    """What Ollama hands the template: content strings, images as base64 data, and an [img-N] marker per
    image in front of the message's text (server/prompt.go)."""
    messages, n = [], 0
    for message in conversation:
        texts = [p["text"] for p in message["content"] if p["type"] == "text"]
        images = [p for p in message["content"] if p["type"] == "image"]
        prefix = "".join(f"[img-{n + i}]" for i in range(len(images)))
        n += len(images)
        messages.append({"role": message["role"], "content": prefix + "".join(texts), "images": ["aGk="] * len(images)})
    return messages


def render_with_go(renderer: Path, template: str, messages: list[dict]) -> str:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    payload = json.dumps({"template": template, "system": system, "messages": messages})
    return subprocess.run([str(renderer)], input=payload, capture_output=True, text=True, check=True).stdout


# -- a published folder (test_publish.py's dry run, test_build.py's publish of the checked build) ------------

# ggml-org's names (ggml-org/SmolVLM2-2.2B-Instruct-GGUF): <Name>-<TYPE>.gguf and mmproj-<Name>-<f16|Q8_0>.gguf.
GGUF_NAME = re.compile(r"^(?P<name>.+)-(?P<type>(?:[IT]?Q\d\w*)|F16|BF16|F32)\.gguf$")
MMPROJ_NAME = re.compile(r"^mmproj-(?P<name>.+)-(?:f16|bf16|f32|Q8_0)\.gguf$")
# A number standing on its own in the card (not part of Q4_K, SmolVLM2-256M, a commit or a file name).
NUMBER = re.compile(r"(?<![\w.\-/:])\d+(?:\.\d+)?(?:e[-+]\d+)?(?![\w\-/:]|\.\d)")


def _rows(body: str, header: str) -> list[list[str]]:
    """The cells of the markdown table whose header row starts with `| header |`."""
    lines = body.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def check_published_folder(build: Path, folder: Path, repo: str, base: str, types: tuple[str, ...]) -> None:
    """Everything in a publish folder against the build it came from; every number in the card against build.json."""
    import tomllib

    from huggingface_hub import ModelCard

    from smolconv.core.hashing import sha256_file
    from smolconv.core.templates import templates_dir
    from tests.modelfile_parser import parse

    manifest = json.loads((build / "build.json").read_text())
    name = base.split("/")[1]
    presets = tomllib.loads((templates_dir() / "presets.toml").read_text())
    files = sorted(p.name for p in folder.iterdir())
    ggufs = [f"{name}-{t}.gguf" for t in types]
    # size-vs-kld.png: the card's picture of the variants verify measured (file size against KL divergence).
    measured = bool(((manifest.get("verify") or {}).get("kld") or {}).get("variants"))
    assert files == sorted([*ggufs, f"mmproj-{name}-f16.gguf", "template", "params", "README.md", "smolconv.json",
                            *(f"{name}-{t}.Modelfile" for t in types), *(["size-vs-kld.png"] if measured else [])])
    # smolconv.json: what the repo was built from, and each of its files (what `smolconv batch` compares).
    record = json.loads((folder / "smolconv.json").read_text())
    assert record["format"] == "gguf" and record["types"] == sorted(types) and record["adapter"] is None
    assert record["smolconv"] == manifest["smolconv"] and record["llama_cpp"] == manifest["llama_cpp"]["commit"]
    source = manifest["source"]
    assert record["source"]["repo_id"] == source["repo_id"]
    assert record["source"]["commit"] == source["revision"] if source["repo_id"] else \
        record["source"]["commit"].startswith("sha256:")
    assert record["files"] == {f: sha256_file(folder / f) for f in files if f != "smolconv.json"}
    for file in files:
        if file.endswith(".gguf"):
            match = GGUF_NAME.match(file) or MMPROJ_NAME.match(file)
            assert match and match["name"] == name, file

    # The GGUF files are the build's, byte for byte.
    build_files = {t: f"smolvlm2-256m-{t}.gguf" for t in types}
    for t in types:
        assert sha256_file(folder / f"{name}-{t}.gguf") == manifest["outputs"][build_files[t]]["sha256"]
    assert sha256_file(folder / f"mmproj-{name}-f16.gguf") == manifest["outputs"]["mmproj-smolvlm2-256m-f16.gguf"][
        "sha256"]

    # template: the TEMPLATE of the build's own Modelfile, and of the Modelfiles in the repo.
    template = (folder / "template").read_text()
    for modelfile in [build / "smolvlm2-256m-q4_K_M.Modelfile", *(folder / f"{name}-{t}.Modelfile" for t in types)]:
        commands = parse(modelfile.read_text())
        assert dict(c for c in commands if c[0] == "template")["template"] == template
    for t in types:
        froms = [v for n, v in parse((folder / f"{name}-{t}.Modelfile").read_text()) if n == "model"]
        assert froms == [f"./{name}-{t}.gguf", f"./mmproj-{name}-f16.gguf"]

    # params: what Ollama reads from the repo (JSON), the general preset and the plan's smallest context.
    params = json.loads((folder / "params").read_text())
    plans = manifest["package"]["plans"]
    assert params == {"stop": ["<end_of_utterance>"], **presets["general"]["parameters"],
                      "num_ctx": min(plans[t]["num_ctx"] for t in types)}

    # The card's YAML header, as the Hub reads it.
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == base and card.data.base_model_relation == "quantized"
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "image-text-to-text"
    assert set(card.data.tags) == {"gguf", "llama.cpp", "ollama", "smolvlm2"}
    body = card.text
    for command in (f"ollama run hf.co/{repo}:Q4_K_M", f"llama-server -hf {repo}:Q4_K_M",
                    f"ollama create {name.lower().split('-')[0]}:", f"-f {name}-Q4_K_M.Modelfile"):
        assert command in body
    if source_revision := manifest["source"].get("revision"):
        assert source_revision in body
    assert manifest["source"]["path"] not in body  # a local checkpoint is named, its place on disk stays private

    # Every number in the card body, against build.json.
    accounted = {"99"}  # the "99% KLD" column header
    steps = manifest["steps"]
    for row in _rows(body, "file"):
        file = row[0].strip("`").split("`")[0]
        if file.startswith("mmproj-"):
            size = manifest["outputs"]["mmproj-smolvlm2-256m-f16.gguf"]["size"]
            assert row[1] == f"{size / 2**20:.1f}"
            accounted.add(row[1])
            continue
        qtype = GGUF_NAME.match(file)["type"]
        report = steps[f"quantize:{qtype}"]["report"]
        assert row[1] == f"{report['size'] / 2**20:.1f}" and row[2] == f"{report['bits_per_weight']:.2f}"
        mix = re.findall(r"(\w+) ([\d.]+)% \((\d+) tensors\)", row[3])
        assert {t for t, _, _ in mix} == set(report["weight_share"])
        for kind, share, count in mix:
            assert abs(float(share) - 100 * report["weight_share"][kind]) < 0.051
            assert int(count) == report["tensor_types"][kind]
            accounted |= {share, count}
        accounted |= {row[1], row[2]}
        assert report["summary"] in body  # the honest sentence: what fell back, what most of it really is
        accounted |= set(NUMBER.findall(report["summary"]))
    for row in _rows(body, "variant | num_ctx"):
        plan = plans[row[0]]
        assert row[1] == str(plan["num_ctx"]) and row[2] == f"{plan['num_gpu']} of {plan['layers']}"
        assert row[3] == ("GPU" if plan["projector_on_gpu"] else "CPU")
        assert row[5] == ("yes" if plan["fits"] else "partly")
        total = plan["memory"]["total"]
        assert row[4] in (f"{total / 2**30:.2f} GiB", f"{total / 2**20:.0f} MiB")
        accounted |= {row[1], str(plan["num_gpu"]), str(plan["layers"]), row[4].split()[0]}
    assert f"sets num_ctx {params['num_ctx']}" in body
    settings = manifest["package"]["settings"]
    assert f"for {settings['vram'] / 2**30:.2f} GiB of VRAM ({settings['reserve'] / 2**20:.0f} MiB kept free" in body
    accounted |= {f"{settings['vram'] / 2**30:.2f}", f"{settings['reserve'] / 2**20:.0f}", manifest["smolconv"]}
    verify = manifest.get("verify")
    if verify:
        assert f"largest NMSE {verify['text']['max_nmse']:.2e}, same top-1 token on {verify['text']['top1_agree']}" \
            in body
        assert f"one tile: NMSE {verify['vision']['nmse']:.2e}" in body
        accounted |= {f"{verify['text']['max_nmse']:.2e}", f"{verify['vision']['nmse']:.2e}"}
        kld = {k["variant"]: k for k in verify["kld"]["variants"]}
        assert ("](size-vs-kld.png)" in body) == bool(kld)
        rows = _rows(body, "variant | mean KLD against F16")
        assert {row[0] for row in rows} == set(kld)
        for row in rows:
            k = kld[row[0]]
            assert row[1:4] == [f"{k['mean_kld']:.4f}", f"{k['kld_p99']:.4f}", f"{100 * k['same_top']:.1f}"]
            accounted |= set(row[1:4]) | set(NUMBER.findall(row[4]))
            assert row[4] == ("not gated" if k["gate"] is None else f"≤ {k['gate']}")
    else:
        assert "`smolconv verify` was not run on this build." in body
    # The published variants' smoke records (a build's video case ran on its video projector, which is not
    # published: the repo's mmproj is the image projector).
    smoke = {key: record for key, record in manifest.get("smoke", {}).items() if key.partition(":")[0] in types}
    if smoke:
        rows = _rows(body, "variant | backend")
        assert {f"{row[0]}:{row[1]}" for row in rows} == set(smoke)
        for row in rows:
            record = smoke[f"{row[0]}:{row[1]}"]
            assert row[2] == ("passed" if record["passed"] else f"failed: {', '.join(record['failed'])}")
            assert row[3] == ("" if record["decode_tps"] is None else f"{record['decode_tps']:.1f}")
            assert row[4] == ("" if record["ttft_s"] is None else f"{record['ttft_s']:.2f}")
            accounted |= set(row[3:5])
    else:
        assert "`smolconv smoke` was not run on this build." in body
    found = set(NUMBER.findall(body))
    assert found <= accounted, f"numbers in the card that build.json does not account for: {found - accounted}"


# -- the Hub's answers ---------------------------------------------------------------------------------


def hub_error(status: int, url: str, secret: str, method: str = "POST") -> Exception:
    """The error huggingface_hub raises for this answer of the Hub, made from a real response of its transport (httpx
    since huggingface_hub 1.0), for a request that carried `secret` as its token."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import hf_raise_for_status

    request = httpx.Request(method, url, headers={"authorization": f"Bearer {secret}"})
    response = httpx.Response(status, request=request, headers={"X-Request-Id": "test-request"},
                              content=json.dumps({"error": f"denied ({secret} is not shown by smolconv)"}).encode())
    try:
        hf_raise_for_status(response)
    except (HfHubHTTPError, httpx.HTTPStatusError) as exc:  # whichever huggingface_hub raises for this answer
        return exc
    raise AssertionError("hf_raise_for_status did not raise")
