"""The reference as a chat backend: transformers in float32 on a checkpoint (an adapter unmerged through peft, as
verify's reference), answering through the same Backend seam as llama-server, Ollama, ONNX and MLX.

The prompt is smolconv.runtime.vlm's ConversationPrompt on the checkpoint (its chat template, tokenizer and
SmolVLMProcessor's tiles, `images="transformers"`: transformers' own image processor), and the decoding loop is the
one every in-process runtime shares (`runtime.vlm.decode`): the same end-of-turn tokens and the same greedy choice
as the ONNX and MLX runtimes, so a difference in an answer is a difference in the model's numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from smolconv.reference.transformers import _hf_model, _load_reference
from smolconv.runtime.preprocess import Tiles
from smolconv.runtime.vlm import ConversationPrompt, Generation, InProcessBackend, Sampling, decode


class TransformersChat(ConversationPrompt):
    def __init__(self, checkpoint: Path, adapter: Path | None = None):
        super().__init__(checkpoint, images="transformers")
        self.adapter = adapter
        self.tokenizer_hf, self.model = _load_reference(Path(checkpoint), adapter)

    def generate(self, ids: list[int], tiles: list[Tiles] = (), max_tokens: int = 256,
                 sampling: Sampling | None = None, stats: Generation | None = None) -> Iterator[int]:
        import inspect

        import torch

        # transformers 5.x renamed the KV cache argument and output (`past_key_values` to `cache`, the old name
        # deprecated): whichever this version's model takes.
        forward = inspect.signature(type(_hf_model(self.model)).forward).parameters
        cache_name = "cache" if "cache" in forward else "past_key_values"
        state: dict = {}

        def next_logits(token: int | None) -> np.ndarray:
            with torch.no_grad():
                if token is None:  # the prompt, the tiles' features over its <image> tokens
                    inputs = {"input_ids": torch.tensor([ids])}
                    if tiles:
                        pixels = torch.from_numpy(np.concatenate([t.pixels for t in tiles]))[None]
                        inputs |= {"pixel_values": pixels,
                                   "pixel_attention_mask": torch.ones((1, pixels.shape[1], *pixels.shape[-2:]),
                                                                      dtype=torch.bool)}
                    out = self.model(**inputs, use_cache=True)
                else:
                    out = self.model(input_ids=torch.tensor([[token]]), use_cache=True, **{cache_name: state["past"]})
            past = getattr(out, "cache", None)
            state["past"] = past if past is not None else out.past_key_values
            return out.logits[0, -1].double().numpy()

        return decode(next_logits, ids, self.eos_ids, max_tokens, sampling, stats)


class TransformersBackend(InProcessBackend):
    """The float32 reference as a runtime.chat Backend (what `eval` compares every runtime with)."""

    name = "transformers"

    def __init__(self, checkpoint: Path, adapter: Path | None = None, n_ctx: int | None = None,
                 sampling: dict | None = None):
        super().__init__(TransformersChat(checkpoint, adapter), n_ctx, sampling)

    def info(self) -> dict:
        return super().info() | {"dtype": "float32", "adapter": str(self.model.adapter) if self.model.adapter else None}
