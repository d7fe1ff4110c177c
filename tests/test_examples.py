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
from smolconv.serve import free_port
from tests.conftest import wait_for_http, write_test_image
from tests.fake_ollama import FakeOllama

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


def _write_video(path: Path, seconds: int, fps: int = 10, size: tuple[int, int] = (384, 96)) -> Path:
    """An MPEG-4 clip whose colour changes every second (PyAV bundles FFmpeg's encoder)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(seconds * fps):
            pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            pixels[..., i // fps % 3] = 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_video_frames_samples_one_per_second_up_to_the_maximum(served, projector, tmp_path):
    video = _write_video(tmp_path / "clip.mp4", seconds=6)
    result = run_example("video_frames.py", str(video), "What changes?", "--url", served, "--max-frames", "3",
                         "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    summary = re.search(r"\[(\d+) frames at ([\d., ]+) s of ([\d.]+) s; (\d+) prompt tokens", result.stdout)
    assert summary, result.stdout
    count, times, duration, prompt_tokens = summary.groups()
    # six seconds at 1 fps is six frames; at most three, spread over the whole clip as transformers does
    assert int(count) == 3 and [float(t) for t in times.split(", ")] == [0.0, 2.9, 5.9]
    assert float(duration) == pytest.approx(6.0)
    # every frame reached the model as an image, tiled as plan counts it (a 4:1 clip: 4 tiles and an overview)
    assert int(prompt_tokens) >= 3 * projector.image_tokens((384, 96))


def test_video_frames_takes_one_frame_per_second_spread_over_the_clip_as_transformers_does(tmp_path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        from video_frames import sample_frames, video_message
    finally:
        sys.path.remove(str(EXAMPLES))
    frames, duration = sample_frames(_write_video(tmp_path / "clip.mp4", seconds=4), 1.0, 8, 128)
    # 4 s at 1 fps is 4 frames; transformers' SmolVLM sampler spaces them from the first frame to the last
    # (np.linspace over the 40 frame indices: 0, 13, 26, 39)
    assert [round(t, 1) for t, _ in frames] == [0.0, 1.3, 2.6, 3.9] and duration == pytest.approx(4.0)
    assert all(max(image.size) == 128 for _, image in frames)
    parts = video_message(frames, duration, "What happens?").parts
    # SmolVLM2's video prompt: the intro, then a timestamp before each frame, then the question
    assert parts[0] == "You are provided the following series of four frames from a 0:00:04 [H:MM:SS] video.\n"
    assert list(parts[1::2][:4]) == ["\nFrame from 00:00:", "\nFrame from 00:01:", "\nFrame from 00:02:",
                                     "\nFrame from 00:03:"]
    assert parts[-1] == "\n\nWhat happens?"


def test_video_frames_refuses_a_file_that_is_no_video(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video")
    result = run_example("video_frames.py", str(bad), "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot read video" in lines[0], result.stderr
