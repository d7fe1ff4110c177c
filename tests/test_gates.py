"""Every gate of verify, smoke and build failing on real files, with the exit code the user sees.

The files are the shared `build_256m_q4_q8` (real SmolLM2 text weights, random vision tower) where a check needs
real text (the tiny fixture's random text is no stand-in for a language), else the shared `build_tiny_q4`, linked
into each test's own folder; the one file a test damages is a copy. Damages: a Q8_0 GGUF whose " Paris" token
reads " LYONS" (the model answers the capital of France wrongly), a projector with one tensor scaled, an HF
tokenizer with two ids swapped, a llama.cpp whose llama-mtmd-cli cannot show the projector's output.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from typer.testing import CliRunner

from smolconv.cli import app
from smolconv.core.hashing import sha256_file
from tests.helpers import DAMAGED_PROJECTOR_TENSOR, linked_build, run_cli, tool_threads

pytestmark = pytest.mark.slow
NAME = "smolvlm2-256m"
REPO = "someone/smolvlm2-256m-GGUF"


def record_as_built(out: Path, name: str) -> None:
    """build.json records `name` as it is now: the damage stands for a converter or quantizer that wrote a bad
    file, which build then takes as its own instead of redoing the step."""
    manifest = json.loads((out / "build.json").read_text())
    manifest["outputs"][name].update(sha256=sha256_file(out / name), size=(out / name).stat().st_size)
    (out / "build.json").write_text(json.dumps(manifest))


def rename_token(path: Path, old: str, new: str) -> None:
    """Give a GGUF vocabulary entry other text of the same length (length-prefixed strings, patched in place)."""
    old_entry = struct.pack("<Q", len(old.encode())) + old.encode()
    assert len(new.encode()) == len(old.encode())
    with open(path, "r+b") as f:
        head = f.read(32 << 20)  # the metadata, vocabulary included, comes first
        assert head.count(old_entry) == 1
        f.seek(head.index(old_entry) + 8)
        f.write(new.encode())


def scale_tensor(path: Path, name: str, factor: float) -> None:
    reader = GGUFReader(path, "r+")
    tensor = next(t for t in reader.tensors if t.name == name)
    tensor.data[...] = (tensor.data.astype(np.float32) * factor).astype(tensor.data.dtype)
    reader.data.flush()


@pytest.fixture
def wrong_answer_build(build_256m_q4_q8, tmp_path) -> Path:
    """Q8_0 answers "The capital of France is LYONS." (F16, which verify compares with transformers, is intact)."""
    out = linked_build(build_256m_q4_q8, tmp_path / NAME, damaged=f"{NAME}-Q8_0.gguf")
    rename_token(out / f"{NAME}-Q8_0.gguf", "ĠParis", "ĠLYONS")
    return out


def test_smoke_strict_fails_a_wrong_answer_and_plain_smoke_only_notes_it(toolchain, wrong_answer_build):
    common = ("smoke", str(wrong_answer_build), "--type", "Q8_0", "--case", "text_fact", "--threads", tool_threads())
    strict = run_cli(*common, "--strict")
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "smoke failed" in strict.stderr + strict.stdout and "text_fact" in strict.stderr + strict.stdout
    report = json.loads((wrong_answer_build / "smoke" / "Q8_0.llama-server.json").read_text())
    [case] = report["cases"]
    assert "LYONS" in case["answer"]["text"] and "does not match" in case["reason"]
    lenient = run_cli(*common)
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr


def _hub_calls(monkeypatch) -> list:
    """Hub calls recorded instead of made (a token is set, so only a failed check can stop the upload)."""
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: calls.append(("create_repo", a, k)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, *a, **k: calls.append(("upload_folder", a, k)))
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return calls


@pytest.mark.parametrize("damage", ["wrong answer", "KLD over --max-kld", "damaged projector"])
def test_build_exits_1_and_does_not_publish_when_a_gate_fails(toolchain, tmp_path, monkeypatch, request, damage):
    import smolconv.checks.smoke

    # The answer and the KL divergence need SmolLM2's real text weights (256m); the projector's check reads the
    # same on the tiny fixture, whose build verifies in a third of the time.
    real_text = damage != "damaged projector"
    fixture = request.getfixturevalue("fixture_256m" if real_text else "fixture_tiny")
    shared = request.getfixturevalue("build_256m_q4_q8" if real_text else "build_tiny_q4")
    variant = "Q8_0" if real_text else "Q4_K_M"
    model = f"{fixture.name}-{variant}.gguf"
    projector = f"mmproj-{fixture.name}-f16.gguf"
    out = linked_build(shared, tmp_path / fixture.name,
                       damaged={"wrong answer": model, "damaged projector": projector}.get(damage))
    # verify runs the check each damage is for (none for the wrong answer, which is smoke's) with the F16 text
    # check, which always runs; the others are left out (`--skip-check`), each proven elsewhere on a whole build.
    if damage == "wrong answer":
        rename_token(out / model, "ĠParis", "ĠLYONS")
        record_as_built(out, model)
        extra = ["--skip-check", "vision", "--skip-check", "video", "--skip-check", "kld"]
    elif damage == "damaged projector":
        scale_tensor(out / projector, DAMAGED_PROJECTOR_TENSOR, 1.5)
        record_as_built(out, projector)
        extra = ["--skip-check", "video", "--skip-check", "kld"]
    else:
        extra = ["--max-kld", "Q8_0=0.0001",  # measured about 0.005 on this fixture
                 "--skip-check", "vision", "--skip-check", "video"]
    # The text cases only (the image cases take minutes here; the fixture's vision is random, so not judged).
    monkeypatch.setattr(smolconv.checks.smoke, "CASES", tuple(c for c in smolconv.checks.smoke.CASES
                                                       if c.name in ("text_hello", "text_fact")))
    calls = _hub_calls(monkeypatch)
    result = CliRunner().invoke(app, ["build", str(fixture), "--out", str(out), "--type", variant,
                                      "--preset", "general", "--threads", tool_threads(), "--publish", REPO, *extra])
    assert result.exit_code == 1, result.output
    assert calls == []  # nothing created or uploaded
    expected = {"wrong answer": "smoke Q8_0: text_fact failed", "KLD over --max-kld": "Q8_0 mean KLD",
                "damaged projector": "projector NMSE"}[damage]
    assert expected in result.output, result.output
    assert json.loads((out / "build.json").read_text())["last_build"]["passed"] is False


def test_verify_fails_when_the_gguf_tokenizes_differently(toolchain, build_256m_q4_q8, fixture_256m, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(fixture_256m, checkpoint, copy_function=os.link, ignore=shutil.ignore_patterns("tokenizer.json"))
    tokenizer = json.loads((fixture_256m / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["Ġof"], vocab["Ġis"] = vocab["Ġis"], vocab["Ġof"]  # "The capital of France is" gets other ids
    (checkpoint / "tokenizer.json").write_text(json.dumps(tokenizer))
    out = linked_build(build_256m_q4_q8, tmp_path / NAME)

    result = run_cli("verify", str(out), "--checkpoint", str(checkpoint), "--type", "Q8_0", "--no-vision",
                     "--skip-check", "kld", "--threads", tool_threads())

    assert result.returncode == 1, result.stdout + result.stderr
    assert "tokenizes" in result.stderr and "differently" in result.stderr, result.stderr
    report = json.loads((out / "verify.json").read_text())
    assert report["passed"] is False
    # What was left out says so: in the report, and on the screen.
    assert report["skipped"] == ["vision", "video", "kld"] and report["kld"]["variants"] == []
    assert report["vision"]["reason"] == "not checked (--skip-check vision)"
    assert "KL divergence of the variants: not measured (--skip-check kld)" in result.stdout
    assert report["text"]["max_nmse"] < 1e-4  # the same ids went to both sides: only the tokenizer differs


def test_a_vision_check_that_cannot_run_fails_unless_allowed(toolchain, build_tiny_q4, tmp_path):
    """A llama.cpp whose llama-mtmd-cli never writes MTMD_DEBUG_EMBEDDINGS: the real tools, that one wrapped. On
    the tiny build: the check is the same at any size, and verify runs twice."""
    fake = tmp_path / "llama.cpp"
    (fake / "build" / "bin").mkdir(parents=True)
    (fake / "convert_hf_to_gguf.py").symlink_to(toolchain.converter)
    (fake / "gguf-py").symlink_to(toolchain.root / "gguf-py")
    for tool in toolchain.bin_dir.iterdir():
        (fake / "build" / "bin" / tool.name).symlink_to(tool)
    wrapper = fake / "build" / "bin" / "llama-mtmd-cli"
    wrapper.unlink()
    wrapper.write_text(f"#!/bin/sh\nunset MTMD_DEBUG_EMBEDDINGS\nexec {toolchain.tool('llama-mtmd-cli')} \"$@\"\n")
    wrapper.chmod(0o755)
    out = linked_build(build_tiny_q4, tmp_path / build_tiny_q4.name)
    args = ("verify", str(out), "--type", "Q4_K_M", "--threads", tool_threads(), "--llama-cpp", str(fake),
            "--skip-check", "video", "--skip-check", "kld")

    refused = run_cli(*args)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "MTMD_DEBUG_EMBEDDINGS" in refused.stderr and "--allow-unchecked vision" in refused.stderr
    assert json.loads((out / "verify.json").read_text())["unchecked"] == ["vision"]

    allowed = run_cli(*args, "--allow-unchecked", "vision")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "allowed by --allow-unchecked vision" in allowed.stdout
    report = json.loads((out / "verify.json").read_text())
    assert report["passed"] is True and report["unchecked"] == ["vision"]
