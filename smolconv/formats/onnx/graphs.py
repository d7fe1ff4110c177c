"""The three graphs of the published SmolVLM ONNX layout, as torch modules over a loaded transformers model.

Each wrapper reuses the model's own modules (projections, norms, MLPs, connector, rotary embedding, and
transformers' `apply_rotary_pos_emb` / `repeat_kv`) and spells out only what export needs to be explicit:
the key/value cache as plain tensors in and out, the attention mask, and the vision patch positions.

- vision encoder: padding images (all-zero pixels, as the processor pads a batch) are dropped, as
  transformers does. Patch positions are floor(i·side/n) computed in integers: the plain 0..N-1 sequence for
  a full tile, which is what SmolVLM was trained with and llama.cpp uses (transformers 4.55-4.57 compute
  them one bucket low in float32, huggingface/transformers#41190; see verify.reference_tile_embeddings).
- decoder: causal attention over past + new tokens, with the int64 `attention_mask` covering the whole
  history (0 = padding); `position_ids` are given by the caller.
"""

from __future__ import annotations

import torch
from torch import nn


class TransposedLinear(nn.Module):
    """An nn.Linear whose weight is kept transposed ([in, out]): the exporter then writes MatMul on the parameter
    itself. From a plain Linear it writes Transpose(weight), which constant folding turns into a new initializer:
    a second copy of every projection held in memory during the export (7 GB more for the 2.2B decoder)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight_t)
        return y if self.bias is None else y + self.bias


def transpose_linears(module: nn.Module) -> None:
    """Replace every nn.Linear under `module` by a TransposedLinear, one at a time (one extra matrix at most)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, TransposedLinear(child))
                child.weight = None  # the original goes now, not when the whole model does


class VisionEncoder(nn.Module):
    """pixel_values [B, N, 3, H, W] f32, pixel_attention_mask [B, N, H, W] bool → image_features [images, T, D]."""

    def __init__(self, model):
        super().__init__()
        core = model.model
        self.embeddings = core.vision_model.embeddings
        self.encoder = core.vision_model.encoder
        self.post_layernorm = core.vision_model.post_layernorm
        self.connector = core.connector
        self.patch = core.config.vision_config.patch_size
        self.side = core.config.vision_config.image_size // self.patch

    def forward(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = pixel_values.shape
        pixels = pixel_values.reshape(b * n, c, h, w)
        mask = pixel_attention_mask.reshape(b * n, h, w)
        real = (pixels != 0).flatten(1).any(1)
        pixels, mask = pixels[real], mask[real]

        rows, cols = h // self.patch, w // self.patch
        # A patch takes part when any of its pixels is real (as transformers decides it). Pixels past the last
        # whole patch are dropped, as the patch convolution drops them (2.2B: 384 px in 14 px patches).
        mask = mask[:, : rows * self.patch, : cols * self.patch]
        patches = mask.reshape(-1, rows, self.patch, cols, self.patch).to(torch.int32).amax(dim=(2, 4)) > 0
        n_rows = patches[:, :, 0].to(torch.int64).sum(1).clamp(min=1)[:, None, None]
        n_cols = patches[:, 0, :].to(torch.int64).sum(1).clamp(min=1)[:, None, None]
        row = torch.arange(rows, dtype=torch.int64)[None, :, None]
        col = torch.arange(cols, dtype=torch.int64)[None, None, :]
        positions = (row * self.side // n_rows) * self.side + col * self.side // n_cols
        positions = torch.where(patches, positions, torch.zeros_like(positions)).flatten(1)

        embeds = self.embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)
        hidden = embeds + self.embeddings.position_embedding(positions)
        keys = patches.flatten(1)[:, None, None, :]
        bias = torch.where(keys, 0.0, torch.finfo(hidden.dtype).min).to(hidden.dtype)
        hidden = self.encoder(inputs_embeds=hidden, attention_mask=bias).last_hidden_state
        return self.connector(self.post_layernorm(hidden))


class EmbedTokens(nn.Module):
    """input_ids [B, S] int64 → inputs_embeds [B, S, D]."""

    def __init__(self, model):
        super().__init__()
        self.embed_tokens = model.model.text_model.embed_tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)


class Decoder(nn.Module):
    """inputs_embeds, attention_mask, position_ids, past k/v per layer → logits, present k/v per layer."""

    def __init__(self, model):
        super().__init__()
        text = model.model.text_model
        config = text.config
        self.layers = text.layers
        self.norm = text.norm
        self.rotary_emb = text.rotary_emb
        self.lm_head = model.lm_head
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

        hidden = inputs_embeds
        b, seq, _ = hidden.shape
        past_len = past[0].shape[2]
        cos, sin = self.rotary_emb(hidden, position_ids)
        query_pos = torch.arange(seq, dtype=torch.int64)[:, None] + past_len
        key_pos = torch.arange(seq + past_len, dtype=torch.int64)[None, :]
        allowed = (key_pos <= query_pos)[None, None] & (attention_mask[:, None, None, :] > 0)
        bias = torch.where(allowed, 0.0, torch.finfo(hidden.dtype).min).to(hidden.dtype)
        groups = self.n_heads // self.n_kv_heads
        presents = []
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(b, seq, self.n_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(b, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(b, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            scores = torch.matmul(q, repeat_kv(k, groups).transpose(2, 3)) * self.scaling + bias
            probs = torch.softmax(scores, dim=-1)
            out = torch.matmul(probs, repeat_kv(v, groups)).transpose(1, 2).reshape(b, seq, -1)
            hidden = hidden + attn.o_proj(out)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        logits = self.lm_head(self.norm(hidden))
        return (logits, *presents)
