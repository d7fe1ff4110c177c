"""Video the way SmolVLM2 was trained: transformers' sampling and prompt, the video projector, Ollama's [img] path.

transformers' own code is the reference where it runs without torchvision (its PyPI wheel does not import beside
the CPU torch here): `SmolVLMVideoProcessor.sample_frames` (the indices), `SmolVLMProcessor.replace_video_token`
(the prompt, with `_prompt_single_image` for each frame) and the processor's chat template. Both are called
unbound, on the attributes they read, because the processor objects cannot be built without torchvision.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from smolconv.core.errors import SmolconvError
from smolconv.media.images import ImageFile
from smolconv.media.video import frame_indices, probe, prompt_parts, sample
from smolconv.runtime.chat import Message, OllamaBackend
from tests.fake_ollama import FakeOllama
from tests.helpers import assert_one_line_error, invoke, run_cli, write_test_image
from tests.videos import (
    IMAGE_SEQ_LEN,
    transformers_frame,
    transformers_indices,
    transformers_video_prompt,
    write_audio_only,
    write_clip,
)

pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("video") / "square.mp4", seconds=8, fps=10)


@pytest.mark.parametrize(("total", "rate", "fps", "max_frames"), [
    (80, 10.0, 1.0, 64),        # 8 s: 8 frames
    (300, 30.0, 1.0, 64),       # 10 s at 30 fps
    (18000, 30.0, 1.0, 64),     # 10 min: 64 frames, the first and last second skipped
    (5, 25.0, 1.0, 64),         # a fifth of a second: one frame
    (600, 24.0, 2.0, 16),       # --fps 2 --max-frames 16
    (7200, 0.2, 1.0, 64),       # 10 hours at one frame every 5 s
])
def test_frame_indices_are_transformers(tmp_path, total, rate, fps, max_frames):
    from smolconv.media.video import VideoInfo

    info = VideoInfo(tmp_path, total / rate, rate, total, 320, 180)
    assert frame_indices(info, fps, max_frames) == transformers_indices(info, fps, max_frames)


def _square_x(image: ImageFile) -> float:
    """Where the red square is, as a fraction of the frame's width."""
    import io

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 2] < 100)
    return float(np.nonzero(red)[1].mean()) / pixels.shape[1]


def test_the_sampled_frames_are_the_sampled_indices(clip):
    video = sample(clip, frame_size=512)
    info = video.info
    indices = transformers_indices(info, 1.0, 64)
    assert info.total_frames == 80 and info.fps == 10 and info.duration == 8
    assert [f.time for f in video.frames] == [i / info.fps for i in indices]
    for frame, index in zip(video.frames, indices, strict=True):
        assert frame.image.size == (512, 512) and frame.image.format == "PNG"
        # The square moves one step a frame: its place says which frame was decoded.
        side = (180 // 4) / 320
        expected = (1 - side) * index / (info.total_frames - 1) + side / 2
        assert abs(_square_x(frame.image) - expected) < 0.02, (index, _square_x(frame.image), expected)


def test_the_video_prompt_is_the_processors(clip):
    video = sample(clip)
    parts = prompt_parts(video, "What moves?")
    ours = "".join(p if isinstance(p, str) else transformers_frame() for p in parts)
    indices = transformers_indices(video.info, 1.0, 64)
    assert ours == transformers_video_prompt(video.info, indices) + "What moves?"
    assert ours.startswith("You are provided the following series of eight frames from a 0:00:08 [H:MM:SS] video.\n")


def test_a_long_video_costs_the_frames_it_gives(tmp_path):
    """Ten hours: 64 frames by seeking, not a decode of the whole file."""
    long = write_clip(tmp_path / "ten-hours.mp4", seconds=36000, fps=0.2, size=(64, 48), gop=25)
    video = sample(long)
    assert video.info.duration == 36000 and len(video.frames) == 64
    assert video.decoded <= 64 * 25 < video.info.total_frames / 4, video.decoded


def test_frames_of_an_8k_video_are_squared_to_the_tile(tmp_path):
    big = write_clip(tmp_path / "8k.mp4", seconds=2, fps=1, size=(7680, 4320))
    video = sample(big, frame_size=512)
    assert len(video.frames) == 2 and {f.image.size for f in video.frames} == {(512, 512)}


def _refusal(call) -> str:
    with pytest.raises(SmolconvError) as caught:
        call()
    line = caught.value.one_line()
    assert "\n" not in line
    return line


def test_bad_videos_are_one_line_each(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    assert "is not a video FFmpeg can read" in _refusal(lambda: probe(text))
    assert "has no video stream" in _refusal(lambda: probe(write_audio_only(tmp_path / "sound.wav")))
    assert "does not exist" in _refusal(lambda: probe(tmp_path / "missing.mp4"))
    assert "is not a file" in _refusal(lambda: probe(tmp_path))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert "is not a video" in _refusal(lambda: probe(empty))
    info = probe(write_clip(tmp_path / "ok.mp4", seconds=1, fps=5))
    assert "sample nothing" in _refusal(lambda: frame_indices(info, 1.0, 0))


def test_the_ollama_request_marks_each_frame_where_it_stands(clip):
    video = sample(clip)
    message = Message("user", prompt_parts(video, "What moves?"))
    with FakeOllama() as fake:
        fake.state.models["smolvlm2:256m-q8_0-video"] = {"parameters": "num_ctx 8192", "capabilities": ["vision"]}
        backend = OllamaBackend("smolvlm2:256m-q8_0-video", fake.host)
        backend.chat([message], 16)
    [request] = fake.state.chats
    [sent] = request["messages"]
    assert sent["content"].count("[img]") == len(video.frames) == len(sent["images"]) == 8
    # In order: each marker right after its frame's timestamp.
    stamps = re.findall(r"Frame from (\d\d:\d\d):\[img\]", sent["content"])
    assert stamps == [f"{int(f.time // 60):02d}:{int(f.time % 60):02d}" for f in video.frames]
    # The frames are the sampled ones, in that order (Ollama matches markers and images by position).
    import base64

    assert [base64.b64decode(i) for i in sent["images"]] == [f.image.data for f in video.frames]
    # An ordinary image question keeps Ollama's own placement (images first, no markers).
    assert OllamaBackend.content(Message.of("user", "What is this?", [video.frames[0].image])) == "What is this?"


def test_the_go_template_renders_the_video_prompt_as_transformers(go_renderer, clip):
    """Ollama turns each [img] into [img-N] (server/prompt.go); the TEMPLATE renders the message, and llama.cpp
    puts the frame's tokens at each [img-N]: with transformers' frame there, the text is the processor's."""
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE
    from transformers.utils.chat_template_utils import render_jinja_template

    from smolconv.core.templates import chat_template
    from tests.helpers import render_with_go

    video = sample(clip)
    content = OllamaBackend.content(Message("user", prompt_parts(video, "What moves?")))
    count = iter(range(len(video.frames)))
    content = re.sub(r"\[img\]", lambda _m: f"[img-{next(count)}]", content)
    messages = [{"role": "user", "content": content, "images": ["aGk="] * len(video.frames)}]
    rendered = render_with_go(go_renderer, chat_template(), messages)
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    [hf], _ = render_jinja_template(conversations=[conversation], chat_template=DEFAULT_CHAT_TEMPLATE,
                                    add_generation_prompt=True)
    hf = hf.replace("<video>", transformers_video_prompt(video.info, transformers_indices(video.info, 1.0, 64)))
    assert re.sub(r"\[img-\d+\]", transformers_frame(), rendered) == hf


# --------------------------------------------------------------------------------------------------
# smolconv ask on real builds


def test_ask_refuses_frames_that_do_not_fit_and_the_number_it_names_fits(build_tiny_q4, tmp_path):
    """plan's per-frame bound, on llama-server: the refusal's --max-frames N is a prompt that really fits."""
    long = write_clip(tmp_path / "long.mp4", seconds=600, fps=1, size=(64, 48), gop=30)
    refused = invoke("ask", str(build_tiny_q4), "What moves?", "--video", str(long), "--max-tokens", "8")
    line = assert_one_line_error(refused, "frames of long.mp4", "--max-frames")
    fits = int(re.search(r"--max-frames (\d+)", line).group(1))
    assert 0 < fits < 64
    done = run_cli("ask", str(build_tiny_q4), "What moves?", "--video", str(long), "--max-frames", str(fits),
                   "--max-tokens", "8", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert len(answer["frames"]) == fits and answer["completion_tokens"] >= 1
    assert answer["backend"]["n_ctx"] - 8 >= answer["prompt_tokens"]
    # The plan's tokens per frame are llama-server's (bounded above, and tight: within the text reserve).
    assert answer["prompt_tokens"] <= fits * answer["frame_tokens"] + 256
    assert answer["prompt_tokens"] >= fits * answer["frame_tokens"]


def test_ask_streams_an_answer_about_images(build_tiny_q4, tmp_path):
    image = write_test_image(tmp_path / "scene.png")
    result = run_cli("ask", str(build_tiny_q4), "Describe it.", "--image", str(image), "--max-tokens", "6")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and "prompt tokens, 6 generated" in result.stderr


def test_ask_refuses_a_video_and_images_together_in_one_line(tmp_path):
    args = ["--video", str(tmp_path / "v.mp4"), "--image", str(tmp_path / "i.png")]
    assert_one_line_error(invoke("ask", str(tmp_path), "Q", *args), "--image or --video", "separately")


def test_ask_on_onnx_sends_a_video_as_transformers_does(onnx_256m, clip):
    """In process, a frame is transformers' one tile: the prompt is its video prompt, token for token."""
    from transformers import AutoTokenizer
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE
    from transformers.utils.chat_template_utils import render_jinja_template

    result = run_cli("ask", str(onnx_256m), "What moves?", "--video", str(clip), "--backend", "onnx",
                     "--variant", "q4", "--max-tokens", "2", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    [hf], _ = render_jinja_template(conversations=[conversation], chat_template=DEFAULT_CHAT_TEMPLATE,
                                    add_generation_prompt=True)
    info = probe(clip)
    hf = hf.replace("<video>", transformers_video_prompt(info, transformers_indices(info, 1.0, 64)))
    assert answer["prompt_tokens"] == len(AutoTokenizer.from_pretrained(onnx_256m)(hf, add_special_tokens=False)
                                          ["input_ids"])
    assert len(answer["frames"]) == 8 and answer["frame_tokens"] == IMAGE_SEQ_LEN + 3 + 10


def test_ask_on_something_that_is_not_a_build_is_one_line(tmp_path):
    assert_one_line_error(invoke("ask", str(tmp_path), "Q"), "is not a build directory", "--out folder")
