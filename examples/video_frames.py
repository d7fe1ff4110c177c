"""Ask about a video: frames sampled at 1 fps (up to a maximum), sent as one sequence of images.

    python examples/video_frames.py clip.mp4 "What happens in this video?"
    python examples/video_frames.py clip.mp4 --max-frames 4 --backend ollama --model smolvlm2:500m-video-instruct-q8_0

llama.cpp has no video input, so this does what SmolVLM2's own processor does with a video: sample frames
(1 per second; when there would be more than --max-frames, that many spread evenly over the video, as
transformers does), and write the prompt SmolVLM2 was trained on: "You are provided the following series
of four frames from a 0:00:04 [H:MM:SS] video." then "Frame from 00:01:" before each frame.

Token cost: transformers gives each frame one tile (64 tokens on 256M/500M), but llama.cpp, and so
Ollama, tiles every image: a 16:9 frame becomes 12 tiles and an overview, about 860 tokens on 256M/500M
and 1080 on 2.2B. Eight frames fill most of an 8192-token context; `smolconv plan` prints how many fit.
With --backend ollama the frames go in the message's `images` and Ollama puts them before the text, so
the per-frame timestamps lose their place; llama-server keeps each frame where it stands.

Needs PyAV (`pip install av`), which ships its own FFmpeg, and num2words.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import numpy as np
from _common import backend_parser, open_backend, run

from smolconv.chat import Message
from smolconv.errors import SmolconvError
from smolconv.images import ImageFile

VIDEO_INTRO = "You are provided the following series of {count} frames from a {duration} [H:MM:SS] video.\n"
FRAME_TIMESTAMP = "\nFrame from {minutes:02d}:{seconds:02d}:"
MEDIA_OUTTRO = "\n\n"


Frames = list[tuple[float, ImageFile]]


def sample_frames(path: Path, fps: float, max_frames: int, max_side: int) -> tuple[Frames, float]:
    """(timestamp, JPEG frame) pairs and the video's duration in seconds.

    Two passes, so a long video is never held in memory: the packets' timestamps say which frames to
    take, then only those frames are kept while decoding."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise SmolconvError(f"cannot read video {path} ({exc})", "pass an MP4, WebM, MKV or MOV file") from None
    with container:
        if not container.streams.video:
            raise SmolconvError(f"{path} has no video stream", "pass a video file")
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)
        if not pts:
            raise SmolconvError(f"{path} holds no video frames", "re-encode the video")
        time_base = float(stream.time_base)
        step = (pts[1] - pts[0]) * time_base if len(pts) > 1 else 1.0
        duration = (pts[-1] - pts[0]) * time_base + step
        # As transformers' SmolVLM sampler: round(fps × duration) frames, at most max_frames, spread evenly from
        # the first frame to the last (its optional skip of a long video's first and last second is left out).
        wanted = max(1, min(max_frames, round(fps * duration)))
        keep = {pts[i] for i in np.unique(np.linspace(0, len(pts) - 1, wanted).astype(int))}
        container.seek(0)
        picked = []
        for frame in container.decode(stream):
            if frame.pts not in keep:
                continue
            image = frame.to_image()
            image.thumbnail((max_side, max_side))
            data = io.BytesIO()
            image.convert("RGB").save(data, format="JPEG", quality=90)
            time = (frame.pts - pts[0]) * time_base
            picked.append((time, ImageFile(Path(f"frame-{time:.2f}s.jpg"), data.getvalue(), "JPEG", image.size)))
    return picked, duration


def video_message(frames: Frames, duration: float, question: str) -> Message:
    from num2words import num2words

    parts: list = [VIDEO_INTRO.format(count=num2words(len(frames)), duration=timedelta(seconds=int(duration)))]
    for time, image in frames:
        parts += [FRAME_TIMESTAMP.format(minutes=int(time // 60), seconds=int(time % 60)), image]
    parts.append(MEDIA_OUTTRO + question)
    return Message("user", tuple(parts))


def main() -> int:
    parser = backend_parser("Ask a question about a video, sent as a sequence of frames.")
    parser.add_argument("video", type=Path)
    parser.add_argument("question", nargs="?", default="Describe what happens in this video.")
    parser.add_argument("--fps", type=float, default=1.0, help="frames per second to sample (default 1)")
    parser.add_argument("--max-frames", type=int, default=8, help="at most this many frames (default 8)")
    parser.add_argument("--max-side", type=int, default=512, help="frames are scaled down to this (default 512)")
    args = parser.parse_args()

    if not args.video.is_file():
        raise SmolconvError(f"video {args.video} does not exist", "check the path")
    frames, duration = sample_frames(args.video, args.fps, args.max_frames, args.max_side)
    backend = open_backend(args)
    answer = backend.chat([video_message(frames, duration, args.question)], args.max_tokens)
    print(answer.text.strip())
    print(f"[{len(frames)} frames at {', '.join(f'{t:.1f}' for t, _ in frames)} s of {duration:.1f} s; "
          f"{answer.prompt_tokens} prompt tokens, {answer.completion_tokens} generated, {answer.wall_s:.1f} s]")
    return 0


if __name__ == "__main__":
    run(main)
