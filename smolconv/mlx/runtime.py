"""An export-mlx folder run in this process with MLX: `ask --backend mlx` and `smoke --backend mlx`.

The prompt is smolconv.vlm's (the folder's chat template and tokenizer, SmolVLMProcessor's image tiles, and a
video's frames one tile each in SmolVLM2's video prompt, as transformers gives them); the model is the export as
mlx-vlm loads it (on the CPU build, its quantized layers expanded: smolconv.mlx.verify.load_export), run through
mlx-vlm's own SmolVLM embedding path and decoder with its KV cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from smolconv.errors import SmolconvError
from smolconv.onnx.preprocess import Tiles
from smolconv.vlm import ConversationPrompt, Generation, InProcessBackend, Sampling, choose


class MlxVLM(ConversationPrompt):
    def __init__(self, folder: str | Path):
        from smolconv.mlx import require_mlx

        require_mlx()
        folder = Path(folder)
        if not (folder / "config.json").is_file() or not list(folder.glob("*.safetensors")):
            raise SmolconvError(f"{folder} is not an MLX export (no config.json and weights)",
                                "pass a folder `smolconv export-mlx` wrote")
        super().__init__(folder, images="numpy")
        from smolconv.mlx.verify import load_export

        self.model, self.dequantized = load_export(folder)

    def generate(self, ids: list[int], tiles: list[Tiles] = (), max_tokens: int = 256,
                 sampling: Sampling | None = None, stats: Generation | None = None) -> Iterator[int]:
        import mlx.core as mx
        from mlx_vlm.models.cache import make_prompt_cache

        sampling = sampling or Sampling()
        stats = stats if stats is not None else Generation()
        stats.prompt_tokens = len(ids)
        rng = np.random.default_rng(sampling.seed)
        t0 = time.monotonic()
        input_ids = mx.array([ids])
        pixels = None
        if tiles:
            pixels = mx.array(np.concatenate([t.pixels for t in tiles])[None])
        embeds = self.model.get_input_embeddings(input_ids, pixels).inputs_embeds
        cache = make_prompt_cache(self.model.language_model)
        logits = self.model.language_model(input_ids, inputs_embeds=embeds, cache=cache).logits[0, -1]
        history = list(ids)
        while True:
            values = np.array(logits.astype(mx.float32), dtype=np.float64)
            now = time.monotonic()
            if not stats.tokens:
                stats.prompt_s = now - t0
            else:
                stats.decode_s += now - t0
            t0 = now
            token = choose(values, history, sampling, rng)
            if token in self.eos_ids:
                stats.finish_reason = "stop"
                return
            stats.tokens.append(token)
            history.append(token)
            yield token
            if len(stats.tokens) >= max_tokens:
                stats.finish_reason = "length"
                return
            logits = self.model.language_model(mx.array([[token]]), cache=cache).logits[0, -1]


class MlxBackend(InProcessBackend):
    """An export-mlx folder as smolconv.chat's Backend."""

    name = "mlx"

    def __init__(self, folder: str | Path, n_ctx: int | None = None, sampling: dict | None = None):
        super().__init__(MlxVLM(folder), n_ctx, sampling)

    def info(self) -> dict:
        return super().info() | {"dequantized": self.model.dequantized}
