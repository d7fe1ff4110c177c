"""Video files for the tests: smolconv's own clip writer (a square moving across a plain background), and a
container with no video in it."""

from __future__ import annotations

from pathlib import Path

from smolconv.video import write_clip

__all__ = ["write_audio_only", "write_clip"]


def write_audio_only(path: Path, seconds: float = 2) -> Path:
    """A WAV file: a container FFmpeg reads, with no video stream."""
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * int(8000 * seconds))
    return path
