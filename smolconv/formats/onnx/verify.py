"""Verify an ONNX export: fp32 against transformers, each variant against fp32.

1. Text: the last-position logits of the fp32 graphs (embed_tokens + decoder, empty past) against
   transformers (float32) on the GGUF verify's prompts, same token ids on both sides: NMSE (gate 1e-5)
   and whether the top token agrees.
2. Vision: the fp32 vision_encoder's output for one full tile against the HF vision tower + connector
   (verify.reference_tile_embeddings, which uses the plain patch positions): cosine (gate 0.9999) and NMSE.
3. Each variant against fp32 on the text smolconv ships for the GGUF KLD: one prompt pass of its first 512
   tokens, mean KL divergence of the next-token distributions over every position and how often the top
   token is the same; and the cosine of its vision features against fp32's on the test tile.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from smolconv.core.errors import SmolconvError
from smolconv.formats.onnx.quantize import VARIANTS, suffix
from smolconv.formats.onnx.runtime import OnnxVLM
from smolconv.record.manifest import Manifest
from smolconv.record.reports import save_report
from smolconv.reference.metrics import cosine, log_softmax, next_token_kld, nmse
from smolconv.reference.prompts import DEFAULT_PROMPTS, KLD_TEXT, _test_tile
from smolconv.reference.transformers import _load_reference, reference_logits, reference_tile_embeddings
from smolconv.source.checkpoint import image_processor_config

MAX_NMSE = 1e-5
MIN_VISION_COSINE = 0.9999
KLD_TOKENS = 512


@dataclass
class TextResult:
    prompt: str
    n_tokens: int
    nmse: float
    top1_same: bool


@dataclass
class VariantResult:
    variant: str
    mean_kld: float
    same_top: float               # fraction of positions whose top token equals fp32's
    vision_cosine: float
    n_positions: int


@dataclass
class OnnxVerifyReport:
    text: list[TextResult]
    vision_cosine: float
    vision_nmse: float
    variants: list[VariantResult] = field(default_factory=list)
    max_nmse_gate: float = MAX_NMSE
    min_cosine_gate: float = MIN_VISION_COSINE
    kld_tokens: int = KLD_TOKENS
    seconds: float = 0.0
    path: Path | None = None

    @property
    def max_nmse(self) -> float:
        return max((r.nmse for r in self.text), default=math.nan)

    @property
    def failures(self) -> list[str]:
        checks = (
            (self.max_nmse < self.max_nmse_gate,
             f"fp32 logits NMSE {self.max_nmse:.2e} is over the gate {self.max_nmse_gate:.0e}"),
            (self.vision_cosine >= self.min_cosine_gate,
             f"vision features cosine {self.vision_cosine:.6f} is under {self.min_cosine_gate}"),
        )
        return [problem for passed, problem in checks if not passed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failures": self.failures, "seconds": round(self.seconds, 2),
                "gates": {"max_nmse": self.max_nmse_gate, "min_vision_cosine": self.min_cosine_gate},
                "text": {"max_nmse": self.max_nmse, "top1_agree": f"{sum(r.top1_same for r in self.text)}/"
                                                                  f"{len(self.text)}",
                         "prompts": [asdict(r) for r in self.text]},
                "vision": {"cosine": self.vision_cosine, "nmse": self.vision_nmse},
                "variants": {"text": KLD_TEXT.name, "tokens": self.kld_tokens,
                             "results": [asdict(v) for v in self.variants]}}




def last_logits(model: OnnxVLM, ids: list[int]) -> np.ndarray:
    logits, _ = model.step(model.embeddings(ids), np.ones((1, len(ids)), np.int64), model.empty_past())
    return logits[0].astype(np.float64)


def tile_features(model: OnnxVLM, tile: np.ndarray, checkpoint_processor: dict) -> np.ndarray:
    mean = np.array(checkpoint_processor.get("image_mean", [0.5] * 3), np.float32)
    std = np.array(checkpoint_processor.get("image_std", [0.5] * 3), np.float32)
    pixels = ((tile.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None, None]
    mask = np.ones((1, 1, *pixels.shape[-2:]), bool)
    return model.vision.run(["image_features"], {"pixel_values": pixels, "pixel_attention_mask": mask})[0][0]




def compare_variant(base_logprobs: np.ndarray, base_features: np.ndarray, model: OnnxVLM, ids: list[int],
                    tile: np.ndarray, processor: dict) -> VariantResult:
    logits, _ = model.step(model.embeddings(ids), np.ones((1, len(ids)), np.int64), model.empty_past())
    logprobs = log_softmax(logits[0].astype(np.float64))
    kld, same = next_token_kld(base_logprobs, logprobs)
    return VariantResult(model.variant, kld, same, cosine(base_features,
                                                                        tile_features(model, tile, processor)),
                         len(ids))


def verify_onnx(folder: Path, checkpoint: Path | None = None, variants: tuple[str, ...] | None = None,
                threads: int | None = None, tokens: int = KLD_TOKENS,
                progress=lambda stage, fraction=None: None) -> OnnxVerifyReport:

    started = time.monotonic()
    folder = Path(folder)
    manifest = Manifest.load(folder)
    checkpoint = Path(checkpoint or manifest.source.checkpoint or "")
    if not (checkpoint / "config.json").is_file():
        raise SmolconvError(f"the Hugging Face checkpoint of {folder} is not at {checkpoint}",
                            "pass the checkpoint directory it was exported from")
    if variants is None:
        variants = tuple(v for v in VARIANTS if v != "fp32"
                         and (folder / "onnx" / f"decoder_model_merged{suffix(v)}.onnx").is_file())
    base = OnnxVLM(folder, "fp32", threads)
    # An exported fine-tune is checked against base + adapter as peft applies it (unmerged).
    adapter = manifest.adapter.path if manifest.adapter else None
    progress("loading the Hugging Face reference (float32)" + (" with the adapter" if adapter else ""), None)
    tokenizer, model = _load_reference(checkpoint, Path(adapter) if adapter else None)
    text = []
    for n, prompt in enumerate(DEFAULT_PROMPTS):
        progress("fp32 logits against transformers", n / len(DEFAULT_PROMPTS))
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reference, candidate = reference_logits(model, ids), last_logits(base, ids)[-1]
        text.append(TextResult(prompt, len(ids), nmse(reference, candidate),
                               bool(np.argmax(reference) == np.argmax(candidate))))
    progress("vision features against the HF connector", None)
    processor = image_processor_config(checkpoint)
    tile = _test_tile(base.config["vision_config"]["image_size"])
    reference = reference_tile_embeddings(model, checkpoint, tile)
    features = tile_features(base, tile, processor)
    del model
    report = OnnxVerifyReport(text, cosine(reference, features), nmse(reference, features), kld_tokens=tokens)

    ids = tokenizer(KLD_TEXT.read_text(), add_special_tokens=False)["input_ids"][:tokens]
    base_logprobs = log_softmax(last_logits(base, ids))
    for n, variant in enumerate(variants):
        progress(f"{variant} against fp32", n / max(1, len(variants)))
        report.variants.append(compare_variant(base_logprobs, features, OnnxVLM(folder, variant, threads), ids,
                                               tile, processor))
    report.seconds = time.monotonic() - started
    data = report.to_dict()
    report.path = save_report(folder, data, {k: data["text"][k] for k in ("max_nmse", "top1_agree")})
    return report
