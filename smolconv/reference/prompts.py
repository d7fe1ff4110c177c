"""What verify feeds both sides: the prompts, the KL-divergence text, the test tile."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smolconv.media.drawn import draw_scene

KLD_TEXT = Path(__file__).resolve().parents[1] / "data" / "kld-text.txt"  # smolconv/data


# Plain text, code and SmolVLM2's chat format (its special tokens included).
DEFAULT_PROMPTS = (
    "The capital of France is",
    "<|im_start|>User: What is the capital of France?<end_of_utterance>\nAssistant:",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village by the sea, there lived",
    "<|im_start|>User: Write a haiku about autumn leaves.<end_of_utterance>\nAssistant: Crimson",
)


def _test_tile(size: int) -> np.ndarray:
    """A tile with structure at every scale: the smoke scene plus colour gradients and fine stripes."""

    scene = np.asarray(draw_scene((size, size)), dtype=np.float32)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    texture = np.stack([40 * np.sin(x / 7 + y / 11), 40 * np.cos(x / 13 - y / 5), 30 * np.sin((x + 2 * y) / 3)], -1)
    return np.clip(scene * 0.7 + texture, 0, 255).astype(np.uint8)
