"""The planner: the largest num_ctx (or the offload) that fits each variant on the GPU."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from smolconv.core.errors import SmolconvError
from smolconv.core.models import SHAPES, ModelShape, get_shape
from smolconv.plan.memory import (
    OLLAMA_IMAGE_TOKENS_BUDGET,
    OLLAMA_MMPROJ_HEADROOM,
    VIDEO_MAX_FRAMES,
    MemoryEstimate,
    PlanSettings,
    estimate,
    format_bytes,
)
from smolconv.plan.quant_rules import estimated_variant
from smolconv.record.variants import Variant, build_variants

# --------------------------------------------------------------------------------------------------
# Planning

# Prompt tokens kept for the question and the chat template's wrapping beside the media a context holds.
TEXT_RESERVE = 256


@dataclass
class VariantPlan:
    variant: Variant
    settings: PlanSettings
    memory: MemoryEstimate
    fits: bool                 # every layer and the projector on the GPU
    notes: list[str] = field(default_factory=list)

    @property
    def num_ctx(self) -> int:
        return self.memory.n_ctx

    @property
    def num_gpu(self) -> int:
        return self.memory.n_gpu_layers

    @property
    def budget(self) -> int:
        return self.settings.vram - self.settings.reserve

    @property
    def free(self) -> int:
        return self.budget - self.memory.total

    @property
    def images_per_context(self) -> int:
        return max(0, (self.num_ctx - TEXT_RESERVE) // self.variant.projector.max_image_tokens)

    @property
    def video_frames(self) -> int:
        """Frames of a video that fit num_ctx through the video projector (`smolconv ask` refuses more)."""
        return min(VIDEO_MAX_FRAMES, max(0, (self.num_ctx - TEXT_RESERVE) // self.variant.projector.video_frame_tokens))

    def to_dict(self) -> dict:
        v = self.variant
        return {
            "variant": v.name, "model": v.model, "estimated_from_config": v.estimated,
            "text_file": str(v.text_path) if v.text_path else None,
            "projector_file": str(v.projector_path) if v.projector_path else None,
            "vram": self.settings.vram, "reserve": self.settings.reserve, "kv_type": self.settings.kv_type,
            "fits": self.fits, "num_ctx": self.num_ctx, "num_gpu": self.num_gpu,
            "layers": v.text.n_layer + 1, "projector_on_gpu": self.memory.projector_on_device,
            "memory": {**asdict(self.memory), "overhead": self.memory.overhead, "total": self.memory.total},
            "free_after_load": self.free,
            "file_weights": {"text": v.text.weight_bytes, "projector": v.projector.weight_bytes},
            "image": {
                "tokens_per_tile": v.projector.tokens_per_tile, "max_tiles": v.projector.max_tiles,
                "max_image_tokens": v.projector.max_image_tokens,
                "full_size_images_per_context": self.images_per_context,
                "video_frames_per_context": self.video_frames,
                "video_frame_tokens": v.projector.video_frame_tokens,
            },
            "notes": self.notes,
        }


def _projector_allowed(variant: Variant, settings: PlanSettings) -> bool:
    # Ollama keeps the projector on the CPU when free VRAM is under its weights + 1 GiB.
    return settings.vram - settings.reserve >= variant.projector.weight_bytes + OLLAMA_MMPROJ_HEADROOM


def _contexts(variant: Variant, settings: PlanSettings) -> list[int]:
    if settings.num_ctx:
        return [settings.num_ctx]
    top = min(settings.max_ctx or variant.text.n_ctx_train, variant.text.n_ctx_train)
    step = settings.ctx_step
    candidates = list(range(top - top % step, settings.min_ctx - 1, -step))
    if top not in candidates:
        candidates.insert(0, top)
    return candidates or [settings.min_ctx]


def plan_variant(variant: Variant, settings: PlanSettings) -> VariantPlan:
    budget = settings.vram - settings.reserve
    contexts = _contexts(variant, settings)
    projector_ok = _projector_allowed(variant, settings)
    notes: list[str] = []
    if not projector_ok:
        notes.append(f"the projector ({format_bytes(variant.projector.weight_bytes)}) runs on the CPU: Ollama "
                     "needs its weights + 1 GiB free to put it on the GPU")
    for n_ctx in contexts:
        memory = estimate(variant, n_ctx, settings, projector_on_device=projector_ok)
        if memory.total <= budget:
            plan = VariantPlan(variant, settings, memory, fits=projector_ok, notes=notes)
            break
    else:
        # Not every layer fits even at the smallest context: offload as many layers as fit; Ollama then keeps
        # the projector on the CPU.
        n_ctx = contexts[-1]
        n_gpu = 0
        for layers in range(variant.text.n_layer, -1, -1):
            if estimate(variant, n_ctx, settings, layers, projector_on_device=False).total <= budget:
                n_gpu = layers
                break
        memory = estimate(variant, n_ctx, settings, n_gpu, projector_on_device=False)
        plan = VariantPlan(variant, settings, memory, fits=False, notes=notes)
        if n_gpu == 0:
            plan.notes.append("nothing fits on the GPU: this runs on the CPU")
        else:
            plan.notes.append(f"{variant.text.n_layer - n_gpu} of {variant.text.n_layer} layers and the output "
                              "layer run on the CPU; the projector too")
    image_tokens = variant.projector.max_image_tokens
    if image_tokens > OLLAMA_IMAGE_TOKENS_BUDGET:
        plan.notes.append(f"a full-size image is about {image_tokens} tokens; Ollama budgets "
                          f"{OLLAMA_IMAGE_TOKENS_BUDGET} per image when it trims a long chat")
    if plan.num_ctx < image_tokens + TEXT_RESERVE:
        plan.notes.append(f"num_ctx {plan.num_ctx} leaves little room beside a full-size image ({image_tokens} tokens)")
    return plan


# --------------------------------------------------------------------------------------------------
# Targets: a build directory, or a known model before anything is downloaded


@dataclass
class PlanOptions:
    target: str                      # a build directory, or 256m / 500m / 2.2b / a Hub id smolconv knows
    types: tuple[str, ...] = ()      # default: every variant in the build, or Q4_K_M Q5_K_M Q8_0
    settings: PlanSettings = field(default_factory=PlanSettings)


def known_shape(target: str) -> ModelShape | None:
    key = target.strip().lower()
    for shape in SHAPES.values():
        if shape.repo_id and key in (shape.name, shape.repo_id.lower(), shape.repo_id.split("/")[-1].lower()):
            return shape
    return None



def plan(options: PlanOptions) -> list[VariantPlan]:
    target = Path(options.target)
    if target.is_dir():
        variants = build_variants(target, options.types)
    else:
        shape = known_shape(options.target)
        if shape is None:
            raise SmolconvError(f"{options.target} is neither a build directory nor a model smolconv knows",
                                "pass a directory `smolconv build` wrote, or one of 256m, 500m, 2.2b")
        types = options.types or ("Q4_K_M", "Q5_K_M", "Q8_0")
        variants = [estimated_variant(shape, t) for t in types]
    return [plan_variant(v, options.settings) for v in variants]


def plan_for_shape(name: str, qtype: str, settings: PlanSettings | None = None) -> VariantPlan:
    return plan_variant(estimated_variant(get_shape(name), qtype), settings or PlanSettings())
