"""PEFT adapters for the tests, made with peft on a fixture checkpoint as a fine-tune would save them.

A freshly initialised LoRA has lora_B = 0 and changes nothing; these draw lora_B from a seeded normal so
that the adapted model is measurably not the base.
"""

from __future__ import annotations

from pathlib import Path

# Hugging Face's SmolVLM fine-tuning recipe. The names also match SigLIP's attention, so such an adapter
# changes the vision tower too.
RECIPE_TARGETS = ["down_proj", "o_proj", "k_proj", "q_proj", "gate_proj", "up_proj", "v_proj"]
# The same projections, in the text model only (a regex, as peft takes it).
TEXT_ONLY_TARGETS = r".*text_model.*\.(down_proj|o_proj|k_proj|q_proj|gate_proj|up_proj|v_proj)"


def make_adapter(base: Path, out: Path, *, targets=RECIPE_TARGETS, seed: int = 0, r: int = 8, alpha: int = 16,
                 std: float = 0.05, **config) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, **config))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, std)
    peft_model.save_pretrained(out)
    return out
