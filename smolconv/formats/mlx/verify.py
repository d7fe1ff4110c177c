"""Verify an MLX export: against transformers (float32), and a quantized export against the unquantized one.

1. Text: the last-position logits of the export (mlx-vlm's model, loaded as `mlx_vlm.load` loads it) against
   transformers in float32 on the GGUF verify's prompts, same token ids on both sides: NMSE and whether the top
   token agrees.
2. An image prompt: the chat template's user turn with one tile of the test image (verify._test_tile) and a
   question, the same ids and pixels on both sides: NMSE of the last-position logits.
3. Vision: the connector's output for that tile, read from the image prompt's pass through mlx-vlm, against
   transformers' vision tower + connector with the plain patch positions (verify.reference_tile_embeddings):
   NMSE and cosine.
4. A quantized export against the unquantized export in the same dtype, which is built in memory from the same
   staged checkpoint (what `--bits none` would write): over the first 512 tokens of the GGUF verify's KLD text,
   the mean KL divergence of the next-token distributions and how often the top token is the same; and the
   cosine of the vision features.

Gates: float32 and not quantized, every NMSE under 1e-6 (text, image prompt, vision). float16 and bfloat16
exports and quantized ones are measured and reported, not gated. On MLX's CPU build a quantized export's layers
are expanded to its dtype for the checks (load_export). A rerun whose export, reference and gates are unchanged
reuses verify.json.
"""

from __future__ import annotations

import gc
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from smolconv.core.choices import MlxDtype
from smolconv.core.errors import SmolconvError
from smolconv.formats.mlx import require_mlx
from smolconv.formats.mlx.staging import fixed_checkpoint
from smolconv.record.manifest import Manifest
from smolconv.record.reports import save_report
from smolconv.record.views import Section, StepRecord
from smolconv.reference.metrics import cosine, log_softmax, next_token_kld, nmse
from smolconv.reference.prompts import DEFAULT_PROMPTS, KLD_TEXT, _test_tile
from smolconv.reference.transformers import (
    _load_reference,
    reference_logits,
    reference_prompt_logits,
    reference_tile_embeddings,
)
from smolconv.runtime.preprocess import Tiles, image_prompt
from smolconv.source.checkpoint import image_processor_config, inspect_checkpoint

MAX_NMSE = 1e-6
KLD_TOKENS = 512
IMAGE_QUESTION = "What is in this image?"
STEP = "mlx:verify"


@dataclass
class PromptCheck:
    prompt: str
    n_tokens: int
    nmse: float
    top1_same: bool


@dataclass
class QuantCheck:
    """A quantized export against the unquantized one."""

    mean_kld: float
    same_top: float      # fraction of positions whose top token is the unquantized export's
    n_positions: int
    vision_cosine: float


@dataclass
class MlxVerifyReport:
    dtype: str
    bits: str
    text: list[PromptCheck]
    image: PromptCheck
    vision_nmse: float
    vision_cosine: float
    quantized: QuantCheck | None = None
    dequantized: bool = False  # quantized layers expanded for the check (MLX's CPU build, see load_export)
    max_nmse_gate: float = MAX_NMSE
    seconds: float = 0.0
    reused: bool = False
    path: Path | None = None

    @property
    def gated(self) -> bool:
        """Only a float32, unquantized export is held to the NMSE gate; the rest carry their own rounding."""
        return self.dtype == "fp32" and self.bits == "none"

    @property
    def max_nmse(self) -> float:
        return max((r.nmse for r in (*self.text, self.image)), default=math.nan)

    @property
    def failures(self) -> list[str]:
        if not self.gated:
            return []
        checks = ((self.max_nmse < self.max_nmse_gate,
                   f"logits NMSE {self.max_nmse:.2e} against transformers is over the gate {self.max_nmse_gate:.0e}"),
                  (self.vision_nmse < self.max_nmse_gate,
                   f"vision features NMSE {self.vision_nmse:.2e} is over the gate {self.max_nmse_gate:.0e}"))
        return [problem for passed, problem in checks if not passed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failures": self.failures, "gated": self.gated, "dtype": self.dtype,
                "bits": self.bits, "dequantized": self.dequantized, "seconds": round(self.seconds, 2),
                "gates": {"max_nmse": self.max_nmse_gate},
                "text": {"max_nmse": max(r.nmse for r in self.text),
                         "top1_agree": f"{sum(r.top1_same for r in self.text)}/{len(self.text)}",
                         "prompts": [asdict(r) for r in self.text]},
                "image": asdict(self.image),
                "vision": {"nmse": self.vision_nmse, "cosine": self.vision_cosine},
                "quantized": None if self.quantized is None else
                {"text": KLD_TEXT.name, **asdict(self.quantized)}}

    @classmethod
    def from_dict(cls, data: dict) -> MlxVerifyReport:
        quantized = data.get("quantized")
        return cls(data["dtype"], data["bits"], [PromptCheck(**r) for r in data["text"]["prompts"]],
                   PromptCheck(**data["image"]), data["vision"]["nmse"], data["vision"]["cosine"],
                   None if quantized is None else QuantCheck(**{k: v for k, v in quantized.items() if k != "text"}),
                   data["dequantized"], data["gates"]["max_nmse"], data["seconds"])






# --------------------------------------------------------------------------------------------------
# The inputs both sides get


@dataclass
class ImageInput:
    prompt: str
    ids: list[int]
    pixels: np.ndarray   # [1, 1, 3, size, size] float32, normalised as the image processor does
    tile: np.ndarray     # the test tile, H×W×3 uint8
    seq_len: int         # image tokens per tile
    token_id: int        # the `<image>` token


def image_input(checkpoint: Path, config: dict, tokenizer) -> ImageInput:
    """The chat template's user turn with one tile and a question, as SmolVLMProcessor writes it for an image that
    is one tile (no splitting: the overview tile alone, `<global-img>` and its image tokens)."""

    vision = config["vision_config"]
    size, patch = int(vision["image_size"]), int(vision["patch_size"])
    seq_len = int(config.get("image_seq_len") or (size // patch) ** 2 // int(config["scale_factor"]) ** 2)
    tile = _test_tile(size)
    processor = image_processor_config(checkpoint)
    mean = np.array(processor.get("image_mean", [0.5] * 3), np.float32)
    std = np.array(processor.get("image_std", [0.5] * 3), np.float32)
    pixels = ((tile.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None, None]
    prompt = (f"<|im_start|>User:{image_prompt(Tiles(pixels[0], 0, 0), seq_len)}{IMAGE_QUESTION}"
              "<end_of_utterance>\nAssistant:")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ImageInput(prompt, ids, pixels.astype(np.float32), tile, seq_len, int(config["image_token_id"]))


# --------------------------------------------------------------------------------------------------
# Each side


@dataclass
class Outputs:
    """What one model gives for verify's inputs."""

    text: list[np.ndarray]                 # last-position logits per prompt
    image: np.ndarray                      # last-position logits of the image prompt
    vision: np.ndarray                     # the connector's output for the test tile
    kld_logprobs: np.ndarray | None = None  # log-probabilities at every position of the KLD text


def reference_outputs(checkpoint: Path, adapter: Path | None, prompts: list[list[int]],
                      image: ImageInput) -> Outputs:

    _, model = _load_reference(checkpoint, adapter)
    text = [reference_logits(model, ids) for ids in prompts]
    image_logits = reference_prompt_logits(model, image.ids, image.pixels[0])  # its one image's tiles
    vision = reference_tile_embeddings(model, checkpoint, image.tile)
    return Outputs(text, image_logits, vision)


def mlx_outputs(model, prompts: list[list[int]], image: ImageInput, kld_ids: list[int] | None) -> Outputs:
    """The export's side. The image prompt goes through mlx-vlm's own path (get_input_embeddings: the vision
    tower with its patch positions, the connector, the features scattered over the image tokens, then the
    decoder), and the vision features are read from that same pass: the tower runs once."""
    import mlx.core as mx

    def as_numpy(array) -> np.ndarray:
        return np.array(array.astype(mx.float32), dtype=np.float64)

    text = [as_numpy(model.language_model(mx.array([ids])).logits[0, -1]) for ids in prompts]
    ids = mx.array([image.ids])
    mask = mx.ones((1, 1, *image.pixels.shape[-2:]), dtype=mx.bool_)
    embeds = model.get_input_embeddings(ids, mx.array(image.pixels), pixel_attention_mask=mask).inputs_embeds
    logits = model.language_model(ids, inputs_embeds=embeds).logits
    positions = mx.array(np.flatnonzero(np.array(image.ids) == image.token_id))
    vision = as_numpy(embeds[0][positions])
    kld = None
    if kld_ids is not None:
        kld = log_softmax(as_numpy(model.language_model(mx.array([kld_ids])).logits[0]))
    return Outputs(text, as_numpy(logits[0, -1]), vision, kld)


def load_export(folder: Path) -> tuple[object, bool]:
    """The export as mlx-vlm loads it, and whether its quantized layers were expanded to its float dtype.

    MLX's CPU build (Linux) has no fast quantized matrix product (docs/mlx.md), so on the CPU the
    quantized layers are dequantized (mlx-vlm's own dequantize_model, into the dtype of their scales): the same
    weights, summed in another order. On Apple silicon's GPU the export runs as it is."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_vlm.quant_utils import dequantize_model
    from mlx_vlm.utils import load_model

    model = load_model(Path(folder), lazy=False)
    quantized = any(isinstance(m, nn.QuantizedLinear | nn.QuantizedEmbedding) for _, m in model.named_modules())
    if quantized and mx.default_device().type == mx.DeviceType.cpu:
        return dequantize_model(model), True
    return model, False


def load_unquantized(checkpoint: Path, dtype: str):
    """The model `--bits none --dtype <dtype>` would export, built in memory from the same staged checkpoint:
    mlx-vlm's loader on the fixed copy, then every floating-point weight cast to the dtype (as its converter
    does before it quantizes)."""
    import tempfile

    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_vlm.utils import load_model

    target = getattr(mx, MlxDtype(dtype).mlx_name)
    with tempfile.TemporaryDirectory(prefix="smolconv-mlx-verify-") as tmp, \
            fixed_checkpoint(inspect_checkpoint(checkpoint), Path(tmp) / "checkpoint") as (fixed, _):
        model = load_model(fixed, lazy=False)
        model.update(tree_map(lambda v: v.astype(target) if mx.issubdtype(v.dtype, mx.floating) else v,
                              model.parameters()))
        mx.eval(model.parameters())
    return model


# --------------------------------------------------------------------------------------------------




def verify_mlx(folder: Path, checkpoint: Path | None = None, *, kld_tokens: int = KLD_TOKENS, force: bool = False,
               progress=lambda stage, fraction=None: None) -> MlxVerifyReport:
    """Check an export smolconv wrote (its build.json says what it was made from and how); `checkpoint` is the
    Hugging Face reference when it is no longer where build.json says."""

    require_mlx()

    started = time.monotonic()
    folder = Path(folder)
    manifest = Manifest.load(folder)
    settings, exported_step = manifest.section(Section.MLX), manifest.step("mlx:convert")
    if not settings or exported_step is None:
        raise SmolconvError(f"{folder} has no MLX export that smolconv wrote (no mlx entry in build.json)",
                            "export it with `smolconv export-mlx` first")
    source = Path(checkpoint or manifest.source.checkpoint or "")
    if not (source / "config.json").is_file():
        raise SmolconvError(f"the Hugging Face checkpoint of {folder} is not at {source}",
                            "pass the checkpoint directory it was exported from")
    adapter_record = manifest.adapter
    adapter = Path(adapter_record.path) if adapter_record and adapter_record.path else None
    # The unquantized export is built from what was exported: the merged fine-tune, or the checkpoint itself.
    exported = Path(settings["checkpoint"]) if checkpoint is None else source
    dtype, bits = settings["dtype"], settings["bits"]

    outputs = exported_step.outputs
    inputs = {name: manifest.sha256(folder / name) for name in outputs if (folder / name).is_file()}
    inputs |= {f"reference/{p.name}": manifest.sha256(p) for p in sorted(source.glob("*")) if p.is_file()
               and not p.name.startswith(".")}
    params = {"max_nmse": MAX_NMSE, "kld_tokens": kld_tokens, "prompts": list(DEFAULT_PROMPTS),
              "image_question": IMAGE_QUESTION, "adapter": str(adapter) if adapter else None,
              "convert_key": exported_step.key}
    key = manifest.step_key(inputs, params)
    saved = folder / "verify.json"
    if not force and (previous := manifest.step(STEP)) is not None and previous.key == key and saved.is_file():
        with_reuse = MlxVerifyReport.from_dict(json.loads(saved.read_text()))
        with_reuse.reused, with_reuse.path = True, saved
        if with_reuse.passed:
            return with_reuse

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    config = json.loads((source / "config.json").read_text())
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in DEFAULT_PROMPTS]
    image = image_input(source, config, tokenizer)
    kld_ids = tokenizer(KLD_TEXT.read_text(), add_special_tokens=False)["input_ids"][:kld_tokens] \
        if bits != "none" else None

    progress("transformers (float32)" + (" with the adapter" if adapter else ""), None)
    reference = reference_outputs(source, adapter, prompts, image)
    gc.collect()  # the reference's memory before the export's
    progress("the MLX export", None)
    model, report_dequantized = load_export(folder)
    candidate = mlx_outputs(model, prompts, image, kld_ids)
    del model
    gc.collect()

    text = [PromptCheck(p, len(ids), nmse(r, c), bool(np.argmax(r) == np.argmax(c)))
            for p, ids, r, c in zip(DEFAULT_PROMPTS, prompts, reference.text, candidate.text, strict=True)]
    image_check = PromptCheck(image.prompt.replace("<image>" * image.seq_len, f"<image>×{image.seq_len}"),
                              len(image.ids), nmse(reference.image, candidate.image),
                              bool(np.argmax(reference.image) == np.argmax(candidate.image)))
    report = MlxVerifyReport(dtype, bits, text, image_check, nmse(reference.vision, candidate.vision),
                             cosine(reference.vision, candidate.vision), dequantized=report_dequantized)
    if kld_ids is not None:
        progress(f"{bits} against the unquantized export ({dtype})", None)
        base = mlx_outputs(load_unquantized(exported, dtype), [], image, kld_ids)
        kld, same = next_token_kld(base.kld_logprobs, candidate.kld_logprobs)
        report.quantized = QuantCheck(kld, same, len(kld_ids), cosine(base.vision, candidate.vision))
    report.seconds = time.monotonic() - started
    data = report.to_dict()
    # Into the manifest loaded above: the summary and the step's record, one load and two saves.
    report.path = save_report(folder, data, {k: data["text"][k] for k in ("max_nmse", "top1_agree")}, manifest)
    manifest.set_step(STEP, StepRecord(key=key, params=params, passed=report.passed,
                                       seconds=round(report.seconds, 3)))
    manifest.save()
    return report
