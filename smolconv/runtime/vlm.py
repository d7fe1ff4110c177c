"""What smolconv's in-process runtimes (ONNX, MLX) share: a SmolVLM folder's chat template, tokenizer and image
preprocessing turning a conversation into token ids and image tiles, sampling, and the chat Backend over them.

A conversation's images are expanded as SmolVLMProcessor expands them: each `<image>` the chat template places
becomes its tiles' tokens (smolconv.runtime.preprocess.image_prompt); the frames of a video message
(`Message.video`) are one squared tile each, as its video processor gives them, so the prompt is transformers'
video prompt token for token.
"""

from __future__ import annotations

import functools
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smolconv.core.errors import SmolconvError
from smolconv.plan import Projector
from smolconv.runtime.chat import SAMPLING, Answer, BackendError
from smolconv.runtime.preprocess import (
    NumpyImageProcessor,
    Tiles,
    TransformersImageProcessor,
    frame_tiles,
    image_prompt,
)
from smolconv.source.checkpoint import find_chat_template, image_processor_config

END_OF_TURN = ("<end_of_utterance>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>")


@dataclass
class Sampling:
    temperature: float = 0.0   # 0: greedy
    seed: int = 0
    top_k: int = 40
    top_p: float = 0.95
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64    # llama.cpp's window for repeat_penalty

    @classmethod
    def from_dict(cls, settings: dict) -> Sampling:
        return cls(**{k: v for k, v in settings.items() if k in cls.__dataclass_fields__})


@dataclass
class Generation:
    """Counts and timings of one generate() call, filled in as it runs."""
    prompt_tokens: int = 0
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    image_encode_s: float = 0.0
    prompt_s: float = 0.0
    decode_s: float = 0.0


class ConversationPrompt:
    """A SmolVLM folder (config, tokenizer, chat template, image processor): conversations to ids and tiles."""

    def __init__(self, folder: str | Path, images: str = "transformers"):
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        for name in ("config.json", "tokenizer.json"):
            if not (self.folder / name).is_file():
                raise SmolconvError(f"{self.folder} has no {name}", "pass a folder smolconv exported")
        self.config = json.loads((self.folder / "config.json").read_text())
        self.image_token_id = int(self.config.get("image_token_id", 49190))
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.eos_ids = self._eos_ids()
        self.template = self._chat_template()
        self.image_seq_len = self._image_seq_len()
        self._images_kind = images
        self._images = None

    # -- configuration ---------------------------------------------------------------------------------

    def _json(self, name: str) -> dict:
        path = self.folder / name
        return json.loads(path.read_text()) if path.is_file() else {}

    def _eos_ids(self) -> set[int]:
        """generation_config's eos, plus the end-of-turn tokens llama.cpp also ends generation on: the same
        rule as llama-server, so that smoke judges both runtimes alike (SmolLM2's `<|im_end|>` is one)."""
        eos = self._json("generation_config.json").get("eos_token_id", 49279)
        ids = set(eos if isinstance(eos, list) else [eos])
        for text in END_OF_TURN:
            token = self.tokenizer.token_to_id(text)
            if token is not None:
                ids.add(token)
        return ids

    def _chat_template(self):
        import jinja2

        found = find_chat_template(self.folder)  # wherever the folder keeps it: .jinja, chat_template.json, …
        if found is None:
            raise SmolconvError(f"{self.folder} has no chat template", "copy chat_template.json from the checkpoint")
        return jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(found.text)

    def _image_seq_len(self) -> int:
        seq_len = self._json("processor_config.json").get("image_seq_len") or self.config.get("image_seq_len")
        if seq_len:
            return int(seq_len)
        vision = self.config["vision_config"]
        side = vision["image_size"] // vision["patch_size"]
        return side * side // self.config.get("scale_factor", 2) ** 2

    @property
    def images(self):
        if self._images is None:
            kind = {"numpy": NumpyImageProcessor, "transformers": TransformersImageProcessor}[self._images_kind]
            self._images = kind(self.folder)
        return self._images

    def frame(self, image) -> Tiles:
        """A video frame as the video processor gives it: squared to the tile (LANCZOS), normalised, one tile."""
        return frame_tiles(image, self.tile_size, self.processor_config)

    @functools.cached_property
    def processor_config(self) -> dict:
        """The image processor's settings (read once: a video's frames each need them)."""
        return image_processor_config(self.folder)

    @property
    def tile_size(self) -> int:
        return int(self.config["vision_config"]["image_size"])

    @property
    def n_ctx(self) -> int:
        return int(self.config.get("text_config", {}).get("max_position_embeddings", 8192))

    # -- prompt ----------------------------------------------------------------------------------------

    def prompt(self, messages) -> tuple[list[int], list[Tiles]]:
        """Token ids and image tiles of a conversation (smolconv.runtime.chat.Message list), ready for the assistant."""
        text, tiles = self.render(messages)
        return self.encode(self.expand(text, [image_prompt(t, self.image_seq_len) for t in tiles])), tiles

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    @staticmethod
    def expand(text: str, blocks: list[str]) -> str:
        """The rendered text with its n-th `<image>` mark replaced by blocks[n]."""
        pieces = text.split("<image>")
        if len(pieces) - 1 != len(blocks):
            raise SmolconvError("the chat template placed a different number of <image> marks than images",
                                "check chat_template.json")
        return pieces[0] + "".join(block + rest for block, rest in zip(blocks, pieces[1:], strict=True))

    def render(self, messages) -> tuple[str, list[Tiles]]:
        """The chat template's text for a conversation, ready for the assistant, with an `<image>` mark where
        each image goes, and each image's tiles."""
        from PIL import Image

        rendered, tiles = [], []
        for message in messages:
            content = []
            for part in message.parts:
                if isinstance(part, str):
                    if part:
                        content.append({"type": "text", "text": part})
                    continue
                with Image.open(io.BytesIO(part.data)) as image:
                    # A video's frame is one tile, squared, never split (SmolVLMVideoProcessor).
                    tiles.append(self.frame(image) if message.video else self.images(image))
                content.append({"type": "image"})
            rendered.append({"role": message.role, "content": content or [{"type": "text", "text": ""}]})
        return self.template.render(messages=rendered, add_generation_prompt=True), tiles

    def generate(self, ids: list[int], tiles: list[Tiles] = (), max_tokens: int = 256,
                 sampling: Sampling | None = None, stats: Generation | None = None) -> Iterator[int]:
        """Yield generated token ids (not the end-of-turn token), filling `stats`: each runtime's decoder loop."""
        raise NotImplementedError

    def stream(self, messages, max_tokens: int = 256, sampling: Sampling | None = None,
               stats: Generation | None = None) -> Iterator[str]:
        """Yield the answer's text as it is generated (whole characters only). Special tokens are not shown,
        as llama-server does not show them."""
        ids, tiles = self.prompt(messages)
        shown, tokens = "", []
        for token in self.generate(ids, tiles, max_tokens, sampling, stats):
            tokens.append(token)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if not text.endswith("\ufffd") and len(text) > len(shown):
                yield text[len(shown):]
                shown = text


def choose(logits: np.ndarray, history: list[int], sampling: Sampling, rng) -> int:
    """The next token: llama.cpp's repeat penalty, then greedy, or top-k / top-p / temperature sampling."""
    if sampling.repeat_penalty != 1.0 and history:
        recent = np.unique(history[-sampling.repeat_last_n:])
        values = logits[recent]
        logits[recent] = np.where(values > 0, values / sampling.repeat_penalty, values * sampling.repeat_penalty)
    if sampling.temperature <= 0:
        return int(np.argmax(logits))
    order = np.argsort(-logits)[: sampling.top_k or None]
    scaled = logits[order] / sampling.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    keep = np.searchsorted(np.cumsum(probs), sampling.top_p) + 1
    probs = probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(len(probs), p=probs)])


def decode(next_logits: Callable[[int | None], np.ndarray], ids: list[int], eos_ids: set[int], max_tokens: int,
           sampling: Sampling | None = None, stats: Generation | None = None) -> Iterator[int]:
    """The decoding loop every in-process runtime shares: `next_logits(None)` runs the prompt, `next_logits(token)`
    one more position; each returns the last position's logits. Yields tokens until an end-of-turn token (not
    yielded) or max_tokens, filling `stats` (prompt time includes encoding the images)."""
    sampling = sampling or Sampling()
    stats = stats if stats is not None else Generation()
    stats.prompt_tokens = len(ids)
    rng = np.random.default_rng(sampling.seed)
    history = list(ids)
    token = None
    t0 = time.monotonic()
    while True:
        logits = next_logits(token)
        now = time.monotonic()
        if not stats.tokens:
            stats.prompt_s = now - t0
        else:
            stats.decode_s += now - t0
        t0 = now
        token = choose(logits, history, sampling, rng)
        if token in eos_ids:
            stats.finish_reason = "stop"
            return
        stats.tokens.append(token)
        history.append(token)
        yield token
        if len(stats.tokens) >= max_tokens:
            stats.finish_reason = "length"
            return


class InProcessBackend:
    """smolconv.runtime.chat's Backend interface over a model run in this process (ONNX, MLX): a ConversationPrompt with
    `generate(ids, tiles, max_tokens, sampling, stats)` yielding token ids."""

    name = "in-process"
    # A video's frames go in as transformers gives them (one tile each): smoke and ask send video here as they are.
    native_video = True

    def __init__(self, model: ConversationPrompt, n_ctx: int | None = None, sampling: dict | None = None):
        self.model = model
        self.n_ctx = n_ctx or min(model.n_ctx, 2048)
        self.sampling = Sampling.from_dict(SAMPLING if sampling is None else sampling)
        self.requests = 0

    def info(self) -> dict:
        return {"folder": str(self.model.folder), "n_ctx": self.n_ctx, "vision": True}

    def chat(self, messages, max_tokens: int, on_text=None):
        self.requests += 1
        stats = Generation()
        start = time.monotonic()
        first = None
        pieces = []
        try:
            ids, tiles = self.model.prompt(messages)
            if len(ids) + max_tokens > self.n_ctx:
                raise BackendError(f"the prompt is {len(ids)} tokens; with {max_tokens} to generate it is over "
                                   f"the context of {self.n_ctx}")
            for token in self.model.generate(ids, tiles, max_tokens, self.sampling, stats):
                first = first or time.monotonic()
                pieces.append(token)
                if on_text:
                    on_text(self.model.tokenizer.decode([token], skip_special_tokens=True))
        except SmolconvError as exc:
            raise BackendError(exc.one_line()) from None
        wall = time.monotonic() - start
        n = len(stats.tokens)
        return Answer(
            text=self.model.tokenizer.decode(pieces, skip_special_tokens=True), finish_reason=stats.finish_reason,
            prompt_tokens=stats.prompt_tokens, completion_tokens=n, wall_s=wall,
            ttft_s=((first or time.monotonic()) - start),
            prompt_tps=stats.prompt_tokens / stats.prompt_s if stats.prompt_s else None,
            decode_tps=(n - 1) / stats.decode_s if n > 1 and stats.decode_s else None,
            image_encode_s=stats.image_encode_s or None,
            stats={"prompt_s": stats.prompt_s, "decode_s": stats.decode_s, "image_encode_s": stats.image_encode_s})


def folder_projector(folder: Path):
    """The tiling facts smoke's image-token bound needs, from the folder's configs (there is no mmproj GGUF)."""

    config = json.loads((Path(folder) / "config.json").read_text())
    vision = config["vision_config"]
    processor = image_processor_config(Path(folder))
    return Projector(weight_bytes=0, image_size=vision["image_size"], patch_size=vision["patch_size"],
                     scale_factor=config.get("scale_factor", 2), preproc_image_size=processor["size"]["longest_edge"],
                     n_embd=vision["hidden_size"], n_ff=vision.get("intermediate_size", 0))
