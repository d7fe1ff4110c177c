"""Video the way SmolVLM2 was trained on it: frames sampled as transformers samples them, each squared to the
model's frame size, and the prompt its processor writes (`SmolVLMProcessor.replace_video_token`).

Sampling (transformers' `SmolVLMVideoProcessor.sample_frames`): round(fps × duration) frames, at most
max_frames, spread evenly from the first frame to the last; when the video is longer than max_frames / fps plus
two seconds, its first and last second are skipped. Frames are read by seeking to each one in order, so a long
video costs the frames it gives, never a decode of the whole file, and only the sampled frames are kept.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from smolconv.core.errors import SmolconvError
from smolconv.media.images import ImageFile

INSTALL = "pip install av num2words (smolconv's own dependencies: reinstall smolconv)"
# The processor's words (transformers' processing_smolvlm.py), byte for byte.
VIDEO_INTRO = "You are provided the following series of {count} frames from a {duration} [H:MM:SS] video.\n"
FRAME_TIMESTAMP = "\nFrame from {minutes:02d}:{seconds:02d}:"
MEDIA_OUTTRO = "\n\n"
# video_sampling in the SmolVLM2 checkpoints' processor config.
DEFAULT_FPS = 1.0
DEFAULT_MAX_FRAMES = 64
SKIP_SECONDS = 1
# A sampled frame more than this far ahead of the decoder is reached by seeking, not by decoding the way there.
SEEK_AHEAD_S = 2.0


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    duration: float          # seconds: frames / fps, as transformers' PyAV reader computes it
    fps: float
    total_frames: int
    width: int
    height: int


@dataclass(frozen=True)
class Frame:
    time: float              # seconds from the start (the sampled index / fps)
    image: ImageFile         # PNG, size × size


@dataclass
class SampledVideo:
    info: VideoInfo
    frames: list[Frame]
    decoded: int             # frames the decoder produced to get them (bounded: never the whole file)


def require_av():
    try:
        import av
    except ImportError:
        raise SmolconvError("video needs the Python package av (PyAV)", f"run {INSTALL}") from None
    return av


def probe(path: str | Path) -> VideoInfo:
    """The video stream's length and rate from the container's header; one-line errors for what is not a video."""
    av = require_av()
    path = Path(path)
    if not path.is_file():
        raise SmolconvError(f"video {path} does not exist" if not path.exists() else f"video {path} is not a file",
                            "check the path")
    try:
        container = av.open(str(path))
    except PermissionError:
        raise SmolconvError(f"cannot read video {path} (permission denied)", "check its permissions") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise SmolconvError(f"{path} is not a video FFmpeg can read ({type(exc).__name__})",
                            "pass an MP4, WebM, MKV or MOV file") from None
    with container:
        if not container.streams.video:
            raise SmolconvError(f"{path} has no video stream", "pass a file with video in it (this one may be audio)")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        total = int(stream.frames or 0)
        if not total and fps:
            seconds = float(stream.duration * stream.time_base) if stream.duration else \
                (container.duration or 0) / 1_000_000
            total = int(round(seconds * fps))
        if fps <= 0 or total <= 0:
            raise SmolconvError(f"{path} holds no video frames", "re-encode the video, or pass another file")
        return VideoInfo(path, total / fps, fps, total, stream.width, stream.height)


def frame_indices(info: VideoInfo, fps: float = DEFAULT_FPS, max_frames: int = DEFAULT_MAX_FRAMES) -> list[int]:
    """The indices transformers' SmolVLM video processor samples (its rule, written out; a test compares)."""
    import numpy as np

    if fps <= 0 or max_frames < 1:
        raise SmolconvError(f"--fps {fps} and --max-frames {max_frames} sample nothing",
                            "use a positive --fps and --max-frames of 1 or more")
    wanted = max(1, min(int(round(fps * info.duration)), max_frames))
    start, end = 0, info.total_frames - 1
    if SKIP_SECONDS > 0 and info.duration - 2 * SKIP_SECONDS > max_frames * fps:
        start, end = int(SKIP_SECONDS * info.fps), int(info.total_frames - SKIP_SECONDS * info.fps)
    start, end = max(0, start), min(end, info.total_frames - 1)
    if start >= end:
        start, end = 0, info.total_frames - 1
    return [int(i) for i in np.unique(np.linspace(start, end, wanted, dtype=int))]


def sample(video: str | Path | VideoInfo, fps: float = DEFAULT_FPS, max_frames: int = DEFAULT_MAX_FRAMES,
           frame_size: int = 512) -> SampledVideo:
    """The sampled frames of a video (its path, or what `probe` read of it), each squared to frame_size ×
    frame_size as the video processor's last resize does (the aspect ratio is not kept, as in training)."""
    info = video if isinstance(video, VideoInfo) else probe(video)
    indices = frame_indices(info, fps, max_frames)
    av = require_av()
    frames: list[Frame] = []
    decoded = 0
    with av.open(str(info.path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = float(stream.time_base)
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        position = None  # time of the last decoded frame
        half = 0.5 / info.fps
        decoder = None
        for index in indices:
            target = index / info.fps
            if decoder is None or position is None or target - position > SEEK_AHEAD_S:
                container.seek(int((start + target) / time_base), stream=stream, backward=True, any_frame=False)
                decoder = container.decode(stream)
            picked = None
            try:
                for frame in decoder:
                    decoded += 1
                    position = (frame.pts * time_base - start) if frame.pts is not None else (position or 0) + half * 2
                    if position >= target - half:
                        picked = frame
                        break
            except av.error.FFmpegError as exc:
                raise SmolconvError(f"{info.path} is damaged near {target:.1f} s ({type(exc).__name__})",
                                    "re-encode the video, or pass another file") from None
            if picked is None:
                break  # the header promised more frames than the file holds: keep what there is
            frames.append(Frame(target, _square_png(picked.to_image(), frame_size, info.path, target)))
    if not frames:
        raise SmolconvError(f"{info.path} holds no video frames that decode",
                            "re-encode the video, or pass another file")
    return SampledVideo(info, frames, decoded)


def _square_png(image, size: int, path: Path, time: float) -> ImageFile:
    from PIL import Image

    image = image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    data = io.BytesIO()
    image.save(data, format="PNG")
    return ImageFile(Path(f"{path.stem}-{time:.2f}s.png"), data.getvalue(), "PNG", (size, size))


def prompt_parts(video: SampledVideo, question: str) -> tuple:
    """A user message's parts: the processor's intro, then `Frame from MM:SS:` and the frame for each, then the
    question. The image parts stand where transformers puts each frame's image tokens."""
    try:
        from num2words import num2words
    except ImportError:
        raise SmolconvError("video needs the Python package num2words", f"run {INSTALL}") from None
    parts: list = [VIDEO_INTRO.format(count=num2words(len(video.frames)),
                                      duration=timedelta(seconds=int(video.info.duration)))]
    for frame in video.frames:
        parts += [FRAME_TIMESTAMP.format(minutes=int(frame.time // 60), seconds=int(frame.time % 60)), frame.image]
    parts.append(MEDIA_OUTTRO + question)
    return tuple(parts)


