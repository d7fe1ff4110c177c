"""The transformers reference: the source checkpoint in float32 (with an adapter unmerged through peft), its logits and
its projector output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smolconv.reference.metrics import kl_divergence
from smolconv.source.checkpoint import image_processor_config


def _load_reference(checkpoint: Path, adapter: Path | None = None):
    """transformers in float32 (the reference should carry no rounding of its own); with an adapter, peft's
    unmerged model on top of it: base + adapter as training saw it, not smolconv's merge."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return tokenizer, model


def _hf_model(model):
    """The SmolVLM model under a peft wrapper (its LoRA layers stay active), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def reference_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].double().numpy()


def adapter_effect(model, ids: list[int], adapted: np.ndarray) -> float | None:
    """KL(base + adapter ‖ base) at the last position, the adapter switched off in the same model."""
    if not hasattr(model, "disable_adapter"):
        return None
    with model.disable_adapter():
        return kl_divergence(adapted, reference_logits(model, ids))


def tile_pixel_values(checkpoint: Path, pixels: np.ndarray):
    """One tile (H×W×3 uint8) normalised as SmolVLM's image processor does, as a (1, 1, 3, H, W) tensor."""
    import torch

    processor = image_processor_config(checkpoint)
    mean = np.array(processor.get("image_mean", [0.5, 0.5, 0.5]), dtype=np.float32)
    std = np.array(processor.get("image_std", [0.5, 0.5, 0.5]), dtype=np.float32)
    values = (pixels.astype(np.float32) / 255.0 - mean) / std
    return torch.tensor(values).permute(2, 0, 1)[None, None]


def reference_tile_embeddings(model, checkpoint: Path, pixels: np.ndarray) -> np.ndarray:
    """transformers' projector output for one tile (H×W×3 uint8): `get_image_features`, the forward
    SmolVLMModel runs on an image, with the whole tile unpadded."""
    import torch

    pixel_values = tile_pixel_values(checkpoint, pixels)
    with torch.no_grad():
        features = _hf_model(model).model.get_image_features(pixel_values=pixel_values)
    return features.pooler_output[0].double().numpy()


def reference_prompt_logits(model, ids: list[int], pixels: np.ndarray) -> np.ndarray:
    """transformers' last-position logits for ids whose `<image>` tokens take the tiles' features in order."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), pixel_values=torch.from_numpy(pixels)[None],
                    pixel_attention_mask=torch.ones((1, len(pixels), *pixels.shape[-2:]), dtype=torch.bool))
    return out.logits[0, -1].double().numpy()
