"""What smolconv knows about SmolVLM2 checkpoints without downloading them.

Dimensions are those of the published configs (see shared REFERENCE.md); the `tiny` shape is smolconv's own
test shape. These drive `smolconv synth` now and the VRAM planner later.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

VOCAB_SIZE = 49280  # SmolLM2's 49152 tokens plus SmolVLM2's 128 added tokens
BASE_VOCAB_SIZE = 49152

# SmolVLM2's added tokens and their ids (tokenizer.json of the Hub checkpoints).
GLOBAL_IMG_ID = 49152
FAKE_TOKEN_AROUND_IMAGE_ID = 49189
IMAGE_TOKEN_ID = 49190
END_OF_UTTERANCE_ID = 49279


def added_tokens() -> dict[int, str]:
    """Ids 49152..49279: `<global-img>`, the 36 `<row_R_col_C>` tile tokens, the image tokens, reserved ones."""
    tokens = {GLOBAL_IMG_ID: "<global-img>"}
    next_id = GLOBAL_IMG_ID + 1
    for row in range(1, 7):
        for col in range(1, 7):
            tokens[next_id] = f"<row_{row}_col_{col}>"
            next_id += 1
    assert next_id == FAKE_TOKEN_AROUND_IMAGE_ID
    tokens[FAKE_TOKEN_AROUND_IMAGE_ID] = "<fake_token_around_image>"
    tokens[IMAGE_TOKEN_ID] = "<image>"
    for n, token_id in enumerate(range(IMAGE_TOKEN_ID + 1, END_OF_UTTERANCE_ID)):
        tokens[token_id] = f"<|reserved_special_token_{n}|>"
    tokens[END_OF_UTTERANCE_ID] = "<end_of_utterance>"
    return tokens


class Layout(StrEnum):
    """Which transformers wrote a checkpoint's files: the Hub originals are 4.x's, fine-tunes made today 5.x's."""

    TRANSFORMERS4 = "transformers4"
    TRANSFORMERS5 = "transformers5"


# The chat template the Hub checkpoints ship (identical for 256M, 500M and 2.2B).
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


@dataclass(frozen=True)
class TextShape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int = 64
    max_position_embeddings: int = 8192
    rope_theta: float = 100000.0
    rms_norm_eps: float = 1e-5
    vocab_size: int = VOCAB_SIZE


@dataclass(frozen=True)
class VisionShape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    patch_size: int
    image_size: int
    layer_norm_eps: float = 1e-6


@dataclass(frozen=True)
class ModelShape:
    name: str            # smolconv's short name: tiny, 256m, 500m, 2.2b
    repo_id: str | None  # the Hub checkpoint this shape mirrors (None for tiny)
    text: TextShape
    vision: VisionShape
    scale_factor: int
    longest_edge: int    # preprocessor size.longest_edge: the image is resized to this before tiling
    max_image_size: int  # preprocessor max_image_size.longest_edge: the tile size
    real_text_weights: bool = False  # 256m: SmolLM2-135M-Instruct's weights rather than random ones
    tie_word_embeddings: bool = False

    @property
    def image_seq_len(self) -> int:
        """Tokens per tile: (image_size / patch_size)² / scale_factor²."""
        patches = self.vision.image_size // self.vision.patch_size
        return (patches * patches) // (self.scale_factor * self.scale_factor)


_SIGLIP_B16_512 = VisionShape(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, patch_size=16, image_size=512)

SHAPES: dict[str, ModelShape] = {
    # Smallest shape that still exercises every code path. Row sizes are multiples of 256 so every
    # K-quant applies without llama-quantize's fallbacks.
    "tiny": ModelShape(
        name="tiny",
        repo_id=None,
        text=TextShape(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048),
        vision=VisionShape(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, patch_size=16, image_size=128),
        scale_factor=2,
        longest_edge=256,
        max_image_size=128,
    ),
    "256m": ModelShape(
        name="256m",
        repo_id="HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
        text=TextShape(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3),
        vision=_SIGLIP_B16_512,
        scale_factor=4,
        longest_edge=2048,
        max_image_size=512,
        real_text_weights=True,
    ),
    "500m": ModelShape(
        name="500m",
        repo_id="HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
        text=TextShape(hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                       num_attention_heads=15, num_key_value_heads=5),
        vision=_SIGLIP_B16_512,
        scale_factor=4,
        longest_edge=2048,
        max_image_size=512,
    ),
    "2.2b": ModelShape(
        name="2.2b",
        repo_id="HuggingFaceTB/SmolVLM2-2.2B-Instruct",
        # The published config omits the head counts; the converter (and transformers) default to 32.
        # rope_theta is not confirmed from the published config; it does not change any size or timing.
        text=TextShape(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=8192,
                       rope_theta=130000.0),
        # SigLIP so400m/14 at 384 px.
        vision=VisionShape(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                           num_attention_heads=16, patch_size=14, image_size=384),
        scale_factor=3,
        longest_edge=1536,
        max_image_size=384,
    ),
}

ALIASES = {shape.name: shape.repo_id for shape in SHAPES.values() if shape.repo_id}


def get_shape(name: str) -> ModelShape:
    try:
        return SHAPES[name.lower()]
    except KeyError:
        raise KeyError(f"unknown shape {name!r}; choose one of {', '.join(SHAPES)}") from None
