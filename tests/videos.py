"""Video for the tests: smolconv's own clip writer (a square moving across a plain background), a container with
no video in it, and transformers' frame sampling and video prompt, the reference smolconv's are checked against."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from smolconv.media.drawn import write_clip

__all__ = ["IMAGE_SEQ_LEN", "transformers_frame", "transformers_indices", "transformers_video_prompt",
           "write_audio_only", "write_clip"]

IMAGE_SEQ_LEN = 64  # the 256m/500m processor's image_seq_len


def write_audio_only(path: Path, seconds: float = 2) -> Path:
    """A WAV file: a container FFmpeg reads, with no video stream."""
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * int(8000 * seconds))
    return path


# transformers' own video code, the reference (test_video.py, test_mlx.py): called unbound on the attributes it
# reads, because the processor objects cannot be built without torchvision.


def transformers_indices(info, fps: float, max_frames: int) -> list[int]:
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor
    from transformers.video_utils import VideoMetadata

    metadata = VideoMetadata(total_num_frames=info.total_frames, fps=info.fps, duration=info.duration,
                             width=info.width, height=info.height)
    return [int(i) for i in SmolVLMVideoProcessor.sample_frames(SimpleNamespace(num_frames=max_frames, fps=fps),
                                                                 metadata)]


def transformers_video_prompt(info, indices: list[int]) -> str:
    """What SmolVLMProcessor puts in place of <video> for these frames (its own code)."""
    from transformers.models.smolvlm.processing_smolvlm import SmolVLMProcessor
    from transformers.video_utils import VideoMetadata

    metadata = VideoMetadata(total_num_frames=info.total_frames, fps=info.fps, duration=info.duration,
                             width=info.width, height=info.height, frames_indices=np.array(indices))
    processor = SimpleNamespace(image_seq_len=IMAGE_SEQ_LEN, image_token="<image>",
                                fake_image_token="<fake_token_around_image>", global_image_token="<global-img>")
    inputs = {"pixel_values": np.zeros((1, len(indices), 3, 2, 2)), "video_metadata": [metadata]}
    return SmolVLMProcessor.replace_video_token(processor, inputs, 0)


def transformers_frame() -> str:
    from transformers.models.smolvlm.processing_smolvlm import _prompt_single_image

    return _prompt_single_image(IMAGE_SEQ_LEN, fake_token_around_image="<fake_token_around_image>",
                                image_token="<image>", global_image_token="<global-img>")
