"""Video files for the tests, written with PyAV (its own FFmpeg): a square moving across a plain background."""

from __future__ import annotations

from pathlib import Path


def write_clip(path: Path, seconds: float = 8, fps: int = 10, size: tuple[int, int] = (320, 180),
               codec: str = "mpeg4", gop: int = 12, audio: bool = False) -> Path:
    """`seconds` of video at `fps`: a red square that moves left to right, one step per frame."""
    from fractions import Fraction

    import av
    import numpy as np

    width, height = size
    frames = max(1, int(round(seconds * fps)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        side = max(4, height // 4)
        for n in range(frames):
            pixels = np.full((height, width, 3), (40, 90, 160), dtype=np.uint8)
            x = int((width - side) * n / max(1, frames - 1))
            pixels[height // 2 - side // 2: height // 2 + side // 2, x: x + side] = (220, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 2) -> Path:
    """A WAV file: a container FFmpeg reads, with no video stream."""
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * int(8000 * seconds))
    return path
