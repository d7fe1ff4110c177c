"""A small onnxruntime runner for an `export-onnx` folder (or any folder in the published SmolVLM layout).

What transformers.js's SmolVLM model does, in numpy: the chat template, each `<image>` expanded into its
tiles' tokens, image features written over the `<image>` rows of the token embeddings (the counts must
match), position ids from the attention mask starting at 0, the mask covering the whole history, and one
decoder graph for the prompt (empty past) and for each generated token (the past it returned).

Nothing here imports torch: with `images="numpy"` (smolconv/runtime/preprocess.py) the runner needs only
onnxruntime, tokenizers, jinja2, numpy and Pillow. `images="transformers"` uses transformers' processor.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from smolconv.core.errors import SmolconvError
from smolconv.formats.onnx import require_onnx
from smolconv.runtime.preprocess import Tiles
from smolconv.runtime.vlm import ConversationPrompt, Generation, InProcessBackend, Sampling, decode

__all__ = ["Generation", "OnnxBackend", "OnnxVLM", "Sampling", "folder_variants"]

GRAPHS = ("vision_encoder", "embed_tokens", "decoder_model_merged")
VARIANT_SUFFIX = {"fp32": "", "fp16": "_fp16", "quantized": "_quantized", "q4": "_q4", "q4f16": "_q4f16"}
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class OnnxVLM(ConversationPrompt):
    """The three graphs of an export-onnx folder in onnxruntime, the conversation prompt from the same folder."""

    def __init__(self, folder: str | Path, variant: str = "fp32", threads: int | None = None,
                 images: str = "transformers"):

        require_onnx()
        import onnxruntime as ort

        folder = Path(folder)
        if variant not in VARIANT_SUFFIX:
            raise SmolconvError(f"unknown ONNX variant {variant!r}", f"choose from {', '.join(VARIANT_SUFFIX)}")
        paths = [folder / "onnx" / f"{g}{VARIANT_SUFFIX[variant]}.onnx" for g in GRAPHS]
        missing = [p for p in [*paths, folder / "config.json", folder / "tokenizer.json"] if not p.is_file()]
        if missing:
            raise SmolconvError(f"{folder} is not an ONNX SmolVLM folder with the {variant} variant "
                                f"({missing[0].relative_to(folder)} is missing)",
                                "pass a directory `smolconv export-onnx` wrote, and a variant it made")
        super().__init__(folder, images)
        self.variant = variant
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.vision, self.embed, self.decoder = (
            ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths)
        self.past = [i for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self.present = [o.name for o in self.decoder.get_outputs() if o.name.startswith("present.")]

    # -- graphs ----------------------------------------------------------------------------------------

    def image_features(self, tiles: list[Tiles]) -> np.ndarray:
        """[tokens, hidden]: every tile of every image, in order."""
        pixels = np.concatenate([t.pixels for t in tiles])[None]
        mask = np.ones((1, pixels.shape[1], pixels.shape[3], pixels.shape[4]), dtype=bool)
        features = self.vision.run(["image_features"], {"pixel_values": pixels, "pixel_attention_mask": mask})[0]
        return features.reshape(-1, features.shape[-1]).astype(np.float32)

    def embeddings(self, ids: list[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        return self.embed.run(["inputs_embeds"], {"input_ids": ids})[0]

    def empty_past(self, batch: int = 1) -> dict[str, np.ndarray]:
        return {i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), dtype=_NUMPY_TYPES.get(i.type, np.float32))
                for i in self.past}

    def step(self, embeds: np.ndarray, mask: np.ndarray, past: dict) -> tuple[np.ndarray, dict]:
        """One decoder call: logits of every new position, and the past to pass next time."""
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)[:, -embeds.shape[1]:]
        dtype = _NUMPY_TYPES.get(self.decoder.get_inputs()[0].type, np.float32)
        outputs = self.decoder.run(None, {"inputs_embeds": embeds.astype(dtype), "attention_mask": mask,
                                          "position_ids": positions.astype(np.int64), **past})
        return outputs[0], dict(zip((i.name for i in self.past), outputs[1:], strict=True))

    def prompt_embeddings(self, ids: list[int], tiles: list[Tiles], stats: Generation | None = None) -> np.ndarray:
        embeds = self.embeddings(ids)
        rows = np.flatnonzero(np.asarray(ids) == self.image_token_id)
        if tiles:
            t0 = time.monotonic()
            features = self.image_features(tiles)
            if stats is not None:
                stats.image_encode_s = time.monotonic() - t0
            if len(features) != len(rows):
                raise SmolconvError(f"the prompt has {len(rows)} <image> tokens but the images gave {len(features)} "
                                    "features", "check image_seq_len in processor_config.json")
            embeds[0, rows] = features.astype(embeds.dtype)
        elif len(rows):
            raise SmolconvError("the prompt has <image> tokens but no image", "send the image with the message")
        return embeds

    # -- generation ------------------------------------------------------------------------------------

    def generate(self, ids: list[int], tiles: list[Tiles] = (), max_tokens: int = 256,
                 sampling: Sampling | None = None, stats: Generation | None = None) -> Iterator[int]:
        """Yield generated token ids (the end-of-utterance token is not yielded); `stats` is filled in."""
        stats = stats if stats is not None else Generation()
        state: dict = {}

        def next_logits(token: int | None) -> np.ndarray:
            if token is None:  # the prompt: its embeddings with the image features written in, an empty past
                state.update(embeds=self.prompt_embeddings(ids, list(tiles), stats),
                             mask=np.ones((1, len(ids)), dtype=np.int64), past=self.empty_past())
            else:
                state.update(embeds=self.embeddings([token]),
                             mask=np.ones((1, state["mask"].shape[1] + 1), dtype=np.int64))
            logits, state["past"] = self.step(state["embeds"], state["mask"], state["past"])
            return logits[0, -1].astype(np.float64)

        return decode(next_logits, ids, self.eos_ids, max_tokens, sampling, stats)


class OnnxBackend(InProcessBackend):
    """An export-onnx folder as a runtime.chat Backend: what `smoke --backend onnx` and `ask --backend onnx` use."""

    name = "onnx"

    def __init__(self, folder: str | Path, variant: str = "fp32", n_ctx: int | None = None, threads: int | None = None,
                 sampling: dict | None = None):
        super().__init__(OnnxVLM(folder, variant, threads), n_ctx, sampling)

    def info(self) -> dict:
        return super().info() | {"variant": self.model.variant}


def folder_variants(folder: Path) -> list[str]:
    """The variants whose three graphs are all in `folder`/onnx."""
    return [v for v, s in VARIANT_SUFFIX.items() if all((Path(folder) / "onnx" / f"{g}{s}.onnx").is_file()
                                                         for g in GRAPHS)]


