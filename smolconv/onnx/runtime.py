"""A small onnxruntime runner for an `export-onnx` folder (or any folder in the published SmolVLM layout).

What transformers.js's SmolVLM model does, in numpy: the chat template, each `<image>` expanded into its
tiles' tokens, image features written over the `<image>` rows of the token embeddings (the counts must
match), position ids from the attention mask starting at 0, the mask covering the whole history, and one
decoder graph for the prompt (empty past) and for each generated token (the past it returned).

Nothing here imports torch: with `images="numpy"` (smolconv/onnx/preprocess.py) the runner needs only
onnxruntime, tokenizers, jinja2, numpy and Pillow. `images="transformers"` uses transformers' processor.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smolconv.errors import SmolconvError
from smolconv.onnx.preprocess import NumpyImageProcessor, Tiles, TransformersImageProcessor, image_prompt

GRAPHS = ("vision_encoder", "embed_tokens", "decoder_model_merged")
VARIANT_SUFFIX = {"fp32": "", "fp16": "_fp16", "quantized": "_quantized", "q4": "_q4", "q4f16": "_q4f16"}
END_OF_TURN = ("<end_of_utterance>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>")
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


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


class OnnxVLM:
    def __init__(self, folder: str | Path, variant: str = "fp32", threads: int | None = None,
                 images: str = "transformers"):
        from smolconv.onnx import require_onnx

        require_onnx()
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        if variant not in VARIANT_SUFFIX:
            raise SmolconvError(f"unknown ONNX variant {variant!r}", f"choose from {', '.join(VARIANT_SUFFIX)}")
        paths = [self.folder / "onnx" / f"{g}{VARIANT_SUFFIX[variant]}.onnx" for g in GRAPHS]
        missing = [p for p in [*paths, self.folder / "config.json", self.folder / "tokenizer.json"] if not p.is_file()]
        if missing:
            raise SmolconvError(f"{self.folder} is not an ONNX SmolVLM folder with the {variant} variant "
                                f"({missing[0].relative_to(self.folder)} is missing)",
                                "pass a directory `smolconv export-onnx` wrote, and a variant it made")
        self.variant = variant
        self.config = json.loads((self.folder / "config.json").read_text())
        self.image_token_id = int(self.config.get("image_token_id", 49190))
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.eos_ids = self._eos_ids()
        self.template = self._chat_template()
        self.image_seq_len = self._image_seq_len()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.vision, self.embed, self.decoder = (
            ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths)
        self.past = [i for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self.present = [o.name for o in self.decoder.get_outputs() if o.name.startswith("present.")]
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

        source = (self._json("chat_template.json").get("chat_template")
                  or self._json("tokenizer_config.json").get("chat_template"))
        if not source and (self.folder / "chat_template.jinja").is_file():
            source = (self.folder / "chat_template.jinja").read_text()
        if not source:
            raise SmolconvError(f"{self.folder} has no chat template", "copy chat_template.json from the checkpoint")
        return jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(source)

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

    @property
    def n_ctx(self) -> int:
        return int(self.config.get("text_config", {}).get("max_position_embeddings", 8192))

    # -- prompt ----------------------------------------------------------------------------------------

    def prompt(self, messages) -> tuple[list[int], list[Tiles]]:
        """Token ids and image tiles of a conversation (smolconv.chat.Message list), ready for the assistant."""
        from PIL import Image

        rendered, tiles = [], []
        for message in messages:
            content = []
            for part in message.parts:
                if isinstance(part, str):
                    if part:
                        content.append({"type": "text", "text": part})
                    continue
                with Image.open(part.path) as image:
                    tiles.append(self.images(image))
                content.append({"type": "image"})
            rendered.append({"role": message.role, "content": content or [{"type": "text", "text": ""}]})
        text = self.template.render(messages=rendered, add_generation_prompt=True)
        pieces = text.split("<image>")
        if len(pieces) - 1 != len(tiles):
            raise SmolconvError("the chat template placed a different number of <image> marks than images",
                                "check chat_template.json")
        text = pieces[0] + "".join(image_prompt(t, self.image_seq_len) + rest for t, rest in zip(tiles, pieces[1:],
                                                                                                     strict=True))
        return self.tokenizer.encode(text, add_special_tokens=False).ids, tiles

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
        sampling = sampling or Sampling()
        stats = stats if stats is not None else Generation()
        stats.prompt_tokens = len(ids)
        rng = np.random.default_rng(sampling.seed)
        t0 = time.monotonic()
        embeds = self.prompt_embeddings(ids, list(tiles), stats)
        mask = np.ones((1, len(ids)), dtype=np.int64)
        past = self.empty_past()
        history = list(ids)
        while True:
            logits, past = self.step(embeds, mask, past)
            now = time.monotonic()
            if not stats.tokens:
                stats.prompt_s = now - t0
            else:
                stats.decode_s += now - t0
            t0 = now
            token = choose(logits[0, -1].astype(np.float64), history, sampling, rng)
            if token in self.eos_ids:
                stats.finish_reason = "stop"
                return
            stats.tokens.append(token)
            history.append(token)
            yield token
            if len(stats.tokens) >= max_tokens:
                stats.finish_reason = "length"
                return
            embeds = self.embeddings([token])
            mask = np.ones((1, mask.shape[1] + 1), dtype=np.int64)

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


class OnnxBackend:
    """smolconv.chat's Backend interface over OnnxVLM: what `smoke --backend onnx` talks to."""

    name = "onnx"

    def __init__(self, folder: str | Path, variant: str = "fp32", n_ctx: int | None = None, threads: int | None = None,
                 sampling: dict | None = None):
        from smolconv.chat import SAMPLING

        self.model = OnnxVLM(folder, variant, threads)
        self.n_ctx = n_ctx or min(self.model.n_ctx, 2048)
        self.sampling = Sampling.from_dict(SAMPLING if sampling is None else sampling)
        self.requests = 0

    def info(self) -> dict:
        return {"folder": str(self.model.folder), "variant": self.model.variant, "n_ctx": self.n_ctx, "vision": True}

    def chat(self, messages, max_tokens: int, on_text=None):
        from smolconv.chat import Answer, BackendError

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


def folder_variants(folder: Path) -> list[str]:
    """The variants whose three graphs are all in `folder`/onnx."""
    return [v for v, s in VARIANT_SUFFIX.items() if all((Path(folder) / "onnx" / f"{g}{s}.onnx").is_file()
                                                         for g in GRAPHS)]


def folder_projector(folder: Path):
    """The tiling facts smoke's image-token bound needs, from the folder's configs (there is no mmproj GGUF)."""
    from smolconv.plan import Projector

    config = json.loads((Path(folder) / "config.json").read_text())
    vision = config["vision_config"]
    processor = json.loads((Path(folder) / "preprocessor_config.json").read_text())
    return Projector(weight_bytes=0, image_size=vision["image_size"], patch_size=vision["patch_size"],
                     scale_factor=config.get("scale_factor", 2), preproc_image_size=processor["size"]["longest_edge"],
                     n_embd=vision["hidden_size"], n_ff=vision.get("intermediate_size", 0))
