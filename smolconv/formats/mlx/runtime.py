"""An export-mlx folder run in this process with MLX: `ask --backend mlx` and `smoke --backend mlx`.

The prompt is smolconv.runtime.vlm's (the folder's chat template and tokenizer, SmolVLMProcessor's image tiles, and a
video's frames one tile each in SmolVLM2's video prompt, as transformers gives them); the model is the export as
mlx-vlm loads it (on the CPU build, its quantized layers expanded: smolconv.formats.mlx.verify.load_export), run through
mlx-vlm's own SmolVLM embedding path and decoder with its KV cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from smolconv.core.errors import SmolconvError
from smolconv.formats.mlx import require_mlx
from smolconv.formats.mlx.verify import load_export
from smolconv.runtime.preprocess import Tiles
from smolconv.runtime.vlm import ConversationPrompt, Generation, InProcessBackend, Sampling, decode


class MlxVLM(ConversationPrompt):
    def __init__(self, folder: str | Path):
        require_mlx()
        folder = Path(folder)
        if not (folder / "config.json").is_file() or not list(folder.glob("*.safetensors")):
            raise SmolconvError(f"{folder} is not an MLX export (no config.json and weights)",
                                "pass a folder `smolconv export-mlx` wrote")
        super().__init__(folder, images="numpy")

        self.model, self.dequantized = load_export(folder)

    def generate(self, ids: list[int], tiles: list[Tiles] = (), max_tokens: int = 256,
                 sampling: Sampling | None = None, stats: Generation | None = None) -> Iterator[int]:
        import mlx.core as mx
        from mlx_vlm.models.cache import make_prompt_cache

        cache = make_prompt_cache(self.model.language_model)

        def next_logits(token: int | None) -> np.ndarray:
            if token is None:  # the prompt: mlx-vlm's embedding path writes the tiles' features over <image>
                input_ids = mx.array([ids])
                pixels = mx.array(np.concatenate([t.pixels for t in tiles])[None]) if tiles else None
                embeds = self.model.get_input_embeddings(input_ids, pixels).inputs_embeds
                logits = self.model.language_model(input_ids, inputs_embeds=embeds, cache=cache).logits
            else:
                logits = self.model.language_model(mx.array([[token]]), cache=cache).logits
            return np.array(logits[0, -1].astype(mx.float32), dtype=np.float64)

        return decode(next_logits, ids, self.eos_ids, max_tokens, sampling, stats)


class MlxBackend(InProcessBackend):
    """An export-mlx folder as smolconv.runtime.chat's Backend."""

    name = "mlx"

    def __init__(self, folder: str | Path, n_ctx: int | None = None, sampling: dict | None = None):
        super().__init__(MlxVLM(folder), n_ctx, sampling)

    def info(self) -> dict:
        return super().info() | {"dequantized": self.model.dequantized}
