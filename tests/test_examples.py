"""The programs in examples/, run as a user runs them, against `smolconv serve` on the 256m fixture.

The fixture's vision tower is random, so answers about images are noise: the tests check what the programs
do (what they send, what they write, how they resume), not what the model says. interactive_chat also runs
against the fake Ollama daemon, to check that its turns go through the ollama client with their images.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from smolconv.plan import build_variants
from smolconv.runtime.serve import free_port
from tests.fake_ollama import FakeOllama
from tests.helpers import wait_for_http, write_test_image
from tests.videos import write_clip

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROMPT_TOKENS = re.compile(r"(\d+) prompt tokens")


def run_example(name: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], input=stdin, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def served(build_256m_q4_q8):
    """`smolconv serve` on the Q8_0 variant; yields its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "smolconv", "serve", str(build_256m_q4_q8), "--type", "Q8_0",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", timeout=300, process=proc)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # test_serve covers Ctrl-C; SIGTERM is never inherited as ignored
        proc.communicate(timeout=60)


@pytest.fixture(scope="module")
def projector(build_256m_q4_q8):
    return build_variants(build_256m_q4_q8, ("Q8_0",))[0].projector


def test_analyze_image_sends_the_image_and_prints_the_answer(served, projector, tmp_path):
    image = write_test_image(tmp_path / "scene.png", (960, 240))
    result = run_example("analyze_image.py", str(image), "What colour is the box?", "--url", served,
                         "--max-tokens", "16")
    assert result.returncode == 0, result.stderr
    prompt_tokens = int(PROMPT_TOKENS.search(result.stdout).group(1))
    # the image reached the model: the prompt holds at least its tiles, as plan counts them
    assert prompt_tokens >= projector.image_tokens((960, 240))


def test_analyze_image_refuses_a_corrupt_file_before_sending(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    closed_port = free_port()  # nothing listens: a request would fail differently
    result = run_example("analyze_image.py", str(bad), "--url", f"http://127.0.0.1:{closed_port}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "broken.jpg" in lines[0], result.stderr


def test_an_example_with_no_server_says_so_in_one_line(tmp_path):
    image = write_test_image(tmp_path / "scene.png")
    result = run_example("analyze_image.py", str(image), "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


def test_batch_process_writes_json_lines_and_resumes(served, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    # 4:1 and 1:4 pictures: the fewest tiles llama.cpp cuts (4 and an overview), so the fewest seconds
    write_test_image(folder / "a.png", (800, 200))
    write_test_image(folder / "sub" / "b.jpg", (150, 600))
    (folder / "c.webp").write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 broken")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "answers.jsonl"
    args = (str(folder), "--out", str(out), "--url", served, "--max-tokens", "8")

    first = run_example("batch_process.py", *args)
    assert first.returncode == 0, first.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"] for r in records] == ["a.png", "c.webp", "sub/b.jpg"]
    for record in records:
        assert record["sha256"] == hashlib.sha256((folder / record["image"]).read_bytes()).hexdigest()
    assert "answer" in records[0] and records[0]["prompt_tokens"] > 0 and "answer" in records[2]
    assert "error" in records[1] and "c.webp" in records[1]["error"]
    assert "2 answered, 0 already done, 1 not usable" in first.stdout

    # An interruption: the last answer lost, and half a line left behind.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + '{"image": "sub/b.jpg", "sha2')
    again = run_example("batch_process.py", *args)
    assert again.returncode == 0, again.stderr
    assert "1 answered, 2 already done, 0 not usable" in again.stdout
    resumed = [json.loads(line) for line in out.read_text().splitlines()]  # every line is whole JSON
    assert [r["image"] for r in resumed] == ["a.png", "c.webp", "sub/b.jpg"]

    # A changed image is asked again; the old line stays as the record of the old file.
    write_test_image(folder / "a.png", (600, 150))
    third = run_example("batch_process.py", *args)
    assert "1 answered, 2 already done" in third.stdout
    assert [json.loads(line)["image"] for line in out.read_text().splitlines()][-1] == "a.png"


def test_interactive_chat_keeps_the_conversation_and_its_images(served, tmp_path):
    image = write_test_image(tmp_path / "scene.png", (960, 240))
    script = f"/image {image}\nWhat is in the picture?\nAnd what colour is it?\n/image {tmp_path}/missing.png\n" \
             "/reset\nHello!\n/quit\n"
    result = run_example("interactive_chat.py", "--url", served, "--max-tokens", "8", stdin=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("assistant>") == 3
    assert "(attached scene.png, 960x240)" in result.stdout and "(conversation cleared)" in result.stdout
    assert "missing.png" in result.stderr  # a bad path is reported and the chat goes on
    first, second, after_reset = (int(n) for n in PROMPT_TOKENS.findall(result.stdout))
    assert second > first > after_reset  # the second turn carries the first (and its image); /reset drops it


def test_interactive_chat_goes_through_the_ollama_client(tmp_path):
    image = write_test_image(tmp_path / "scene.png")
    with FakeOllama() as fake:
        fake.state.models["smolvlm2:test"] = {"parameters": "num_ctx 4096", "capabilities": ["completion", "vision"]}
        result = run_example("interactive_chat.py", "--backend", "ollama", "--model", "smolvlm2:test",
                             "--url", fake.host, stdin=f"/image {image}\nDescribe it.\nWhy?\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("assistant> The house is red.") == 2
    first, second = fake.state.chats
    assert first["messages"] == [{"role": "user", "content": "Describe it.",
                                  "images": [base64.b64encode(image.read_bytes()).decode()]}]
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert second["messages"][0]["images"] == first["messages"][0]["images"]
    assert second["messages"][1]["content"] == "The house is red."


def test_video_frames_asks_a_build_in_smolvlm2s_video_prompt(build_256m_q4_q8, tmp_path):
    video = write_clip(tmp_path / "clip.mp4", seconds=6, size=(384, 96))
    result = run_example("video_frames.py", str(build_256m_q4_q8), str(video), "What changes?", "--max-frames", "3",
                         "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    summary = re.search(r"\[(\d+) frames at ([\d., ]+) s; (\d+) prompt tokens", result.stdout)
    assert summary, result.stdout
    count, times, prompt_tokens = summary.groups()
    # six seconds at 1 fps is six frames; at most three, spread as transformers does: the clip is longer than
    # 3 frames at 1 fps plus two seconds, so its first and last second are skipped (frames 10, 30 and 50 of 60)
    assert int(count) == 3 and [float(t) for t in times.split(", ")] == [1.0, 3.0, 5.0]
    # every frame reached the model through the video projector: one tile and an overview, whatever its shape
    tile = 64
    assert 3 * 2 * tile <= int(prompt_tokens) < 3 * 2 * tile + 200


def test_video_frames_refuses_a_file_that_is_no_video(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video")
    result = run_example("video_frames.py", "smolvlm2:x", str(bad), "--backend", "ollama",
                         "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not a video FFmpeg can read" in lines[0], result.stderr
