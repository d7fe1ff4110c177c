"""verify's gates and their defaults: one place for the numbers every format's verify and the CLI use."""

from __future__ import annotations

from dataclasses import dataclass, field

from smolconv.core.models import SHAPES

DEFAULT_MAX_NMSE = 1e-4


# A video prompt carries hundreds of image embeddings, each with the F16 projector's rounding, through the decoder:
# correct builds measure 5e-5 to 1e-4 (docs/video.md), so the text gate would fail them; a damaged projector is
# orders of magnitude above this.
DEFAULT_MAX_VIDEO_NMSE = 1e-3


# verify's default KLD gates per model size (the shape, known by the text model's width). A gate catches a broken
# quantization; it does not grade the quant type. scripts/kld_gates.py measured the 256M shape without real weights:
# the 256m fixture's Q4_1-derived text weights dithered back to continuous values (as a bf16 checkpoint's are),
# healthy quants against F16 (mean KLD, llama-perplexity on smolconv's KLD text, n_ctx 512), and the same quants
# damaged (one tensor's scales x1.25 or x2, two rows of one tensor swapped):
#
#                 healthy   scales x1.25   scales x2 (ffn_down, attn_v)   two rows swapped
#     Q8_0        0.0057    0.0156         0.155, 0.123                   0.0056-0.0061
#     Q5_K_M      0.0558    0.0693         0.222, 0.197                   0.0561-0.0563
#     Q4_K_M      0.1010    0.1135         0.264, 0.258                   0.1005-0.1016
#
# The 256M gates sit at about 1.8x the healthy score (margin for a real checkpoint scoring above this stand-in) and
# below every x2 scale damage (Q8_0's also below x1.25). Two swapped rows of one layer move the KLD by less than
# noise: no KLD gate can catch that, and what it changes in answers is eval's and smoke's to catch. The earlier
# defaults (8B-scale numbers) would fail a healthy 256M on all three types.
# 500M is not measurable here (its fixture's text is random): its rows fall back as 256M's do (960 is no multiple of
# 256) and a larger model loses less to quantization, so 256M's gates bound it from above. 2.2B keeps the 8B-scale
# numbers, not measured here either (`scripts/kld_gates.py --checkpoint DIR` measures a real checkpoint).
DEFAULT_MAX_KLD = {"Q8_0": 0.005, "Q5_K_M": 0.03, "Q4_K_M": 0.05}  # a size not listed below
DEFAULT_MAX_KLD_BY_SIZE = {
    "256m": {"Q8_0": 0.01, "Q5_K_M": 0.1, "Q4_K_M": 0.18},
    "500m": {"Q8_0": 0.01, "Q5_K_M": 0.1, "Q4_K_M": 0.18},
    "2.2b": DEFAULT_MAX_KLD,
}


@dataclass
class Gates:
    max_nmse: float = DEFAULT_MAX_NMSE
    max_vision_nmse: float = DEFAULT_MAX_NMSE
    max_video_nmse: float = DEFAULT_MAX_VIDEO_NMSE
    max_kld: dict[str, float] = field(default_factory=dict)  # given by the user; they win over the defaults
    # DEFAULT_MAX_KLD is for real checkpoints. verify turns it off for a smolconv fixture, whose text weights
    # were 4-bit before they were ever quantized here (or random): its KLD is measured and shown, not gated.
    default_kld: bool = True
    # Checks that may fail to run without failing verify (VerifyCheck values), because the user said so.
    allow_unchecked: tuple[str, ...] = ()
    size: str | None = None  # the model's size (256m, 500m, 2.2b): whose default KLD gates apply (verify sets it)

    def kld_gate(self, variant: str) -> float | None:
        if variant in self.max_kld:
            return self.max_kld[variant]
        return DEFAULT_MAX_KLD_BY_SIZE.get(self.size or "", DEFAULT_MAX_KLD).get(variant) if self.default_kld else None


def model_size(n_embd: int) -> str | None:
    """The known size (256m, 500m, 2.2b) whose text model is this wide; None for another model."""
    return next((shape.name for shape in SHAPES.values() if shape.repo_id and shape.text.hidden_size == n_embd), None)
