"""`smolconv package`: Modelfiles rendered from the Jinja templates in templates/, then `ollama create`.

One Modelfile per variant and preset, written next to the GGUF files it names (so `FROM ./file.gguf`
works wherever the build directory goes). num_ctx and num_gpu come from `smolconv plan`.

Ollama's Modelfile grammar has no escape characters (parser/parser.go): a value is bare up to the end of
the line, or wrapped in "…" or \"\"\"…\"\"\", and ends at the first line end where the text so far
(trimmed) both starts and ends with the quote. `modelfile_quote` picks a form that reads back exactly, or
refuses with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import ensure_writable_dir
from smolconv.core.models import SHAPES, ModelShape
from smolconv.core.names import model_tag, output_names
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.core.templates import MODELFILE_TEMPLATE, Preset, chat_template, load_presets, templates_dir
from smolconv.plan import PlanSettings, VariantPlan, estimated_variant, format_bytes, plan_variant
from smolconv.process.runner import command_line
from smolconv.record.builddir import BuildDir
from smolconv.record.lock import hold_folder
from smolconv.record.manifest import Manifest
from smolconv.record.origin import DEFAULT_LICENSE, build_source
from smolconv.record.views import Section
from smolconv.runtime.ollama_api import (
    MIN_VERSION_TEXT,
    NO_ADAPTER_CREATE_VERSION_TEXT,
    CreateReport,
    CreateRequest,
    create_models,
)

STOP = "<end_of_utterance>"


# --------------------------------------------------------------------------------------------------
# Templates and presets










# --------------------------------------------------------------------------------------------------
# The Modelfile grammar


def _ollama_unquote(text: str) -> tuple[str, bool]:
    """What Ollama's parser does with a trimmed value: strip its quotes, or say it is not closed yet."""
    if text.startswith('"""'):
        return (text[3:-3], True) if len(text) >= 6 and text.endswith('"""') else ("", False)
    if text.startswith('"'):
        return (text[1:-1], True) if len(text) >= 2 and text.endswith('"') else ("", False)
    return text, True


def _reads_back(quoted: str, value: str) -> bool:
    # The parser ends a value at the first line end where the trimmed text so far unquotes.
    for i, ch in enumerate(quoted):
        if ch in "\r\n":
            _, closed = _ollama_unquote(quoted[:i].strip())
            if closed:
                return False
    text, closed = _ollama_unquote(quoted.strip())
    return closed and text == value


_BARE = re.compile(r"^[A-Za-z0-9._+\-/:]+$")


def modelfile_quote(value, what: str = "a Modelfile value") -> str:
    """`value` written so that Ollama reads back exactly `value`; a SmolconvError when no form can."""
    if isinstance(value, bool):
        value = str(value).lower()
    value = str(value)
    dropped = [ch for ch in value if not (ch.isprintable() or ch in "\t\r\n")]
    if dropped:
        raise SmolconvError(f"{what} contains a character Ollama's Modelfile reader drops (U+{ord(dropped[0]):04X})",
                            "remove it")
    if _BARE.match(value) and not value.startswith('"'):
        return value
    multiline = "\n" in value or "\r" in value
    for quote in ('"""', '"') if multiline else ('"', '"""'):
        quoted = quote + value + quote
        if _reads_back(quoted, value):
            return quoted
    raise SmolconvError(f"{what} cannot be written in a Modelfile: a line of it ends in a quote mark, which ends "
                        "the value early in both of the Modelfile's quoting forms",
                        "Ollama's Modelfile has no escapes; end that line with another character")


# --------------------------------------------------------------------------------------------------
# Names








# --------------------------------------------------------------------------------------------------
# Rendering


@dataclass
class ModelfileSpec:
    tag: str
    modelfile_name: str
    text_file: str
    projector_file: str
    plan: VariantPlan
    preset: Preset
    source: str
    license: str = DEFAULT_LICENSE
    notes: list[str] = field(default_factory=list)
    adapter_file: str | None = None    # a GGUF LoRA (--adapter-format gguf)

    def api_parameters(self) -> dict:
        return api_parameters(self.parameters())

    def parameters(self) -> list[tuple[str, object]]:
        return modelfile_parameters(self.plan, self.preset)


def modelfile_parameters(plan: VariantPlan, preset: Preset) -> list[tuple[str, object]]:
    """The PARAMETER lines of a Modelfile: stop, num_ctx and num_gpu from the plan, then the preset's sampling."""
    params: list[tuple[str, object]] = [("stop", STOP), ("num_ctx", plan.num_ctx), ("num_gpu", plan.num_gpu)]
    return params + sorted(preset.parameters.items())


def api_parameters(parameters: list[tuple[str, object]]) -> dict:
    """Parameters as /api/create (and a Hub repo's `params` file) take them: stop is a list, numbers are numbers."""
    params: dict = {}
    for name, value in parameters:
        if name == "stop":
            params.setdefault("stop", []).append(value)
        else:
            params[name] = value
    return params


def jinja_environment(directory: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(directory), trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters["modelfile_quote"] = modelfile_quote
    return env


def render_modelfile(spec: ModelfileSpec, directory: Path | None = None) -> str:
    directory = directory or templates_dir()
    plan = spec.plan
    plan_view = {
        "vram": format_bytes(plan.settings.vram), "reserve": format_bytes(plan.settings.reserve),
        "num_ctx": plan.num_ctx, "num_gpu": plan.num_gpu, "layers": plan.variant.text.n_layer + 1,
        "projector": "GPU" if plan.memory.projector_on_device else "CPU", "total": format_bytes(plan.memory.total),
    }
    notes = [" ".join(n.split()) for n in spec.notes + plan.notes]  # comments are one line each
    for label, text in (("system prompt", spec.preset.system), ("license", spec.license)):
        if text is not None:
            modelfile_quote(text, f"the {label}")  # name the field in the error, not "a Modelfile value"
    return jinja_environment(directory).get_template(MODELFILE_TEMPLATE).render(
        tag=spec.tag, modelfile_name=spec.modelfile_name, text_file=spec.text_file,
        projector_file=spec.projector_file, adapter_file=spec.adapter_file, template=chat_template(directory),
        preset=spec.preset, min_ollama=MIN_VERSION_TEXT, no_adapter_ollama=NO_ADAPTER_CREATE_VERSION_TEXT,
        parameters=spec.parameters(), license=spec.license, source=spec.source, plan=plan_view, notes=notes,
    )


def modelfile_name(tag: str) -> str:
    return tag.replace(":", "-").replace("/", "-") + ".Modelfile"


def _relative(path: Path) -> str:
    return f"./{path.name}"


# --------------------------------------------------------------------------------------------------
# Packaging a build


@dataclass
class PackageOptions:
    out_dir: Path
    types: tuple[str, ...] = ()        # default: every quantized variant the build holds
    presets: tuple[str, ...] = ()      # default: every preset in templates/presets.toml
    name: str | None = None            # the Ollama model name before ':' (default: from the checkpoint)
    settings: PlanSettings = field(default_factory=PlanSettings)
    force: bool = False
    create: bool = False               # also create the models in Ollama
    via: str = "auto"                  # auto (CLI if on PATH, else HTTP API), cli or api
    wait: bool = False                # another smolconv writing the folder: wait for it (else refuse)


@dataclass
class PackagedModel:
    tag: str
    modelfile: Path
    plan: VariantPlan
    preset: str
    request: CreateRequest


@dataclass
class PackageResult:
    models: list[PackagedModel]
    created: CreateReport | None = None

    def create_commands(self) -> list[str]:
        return [command_line(["ollama", "create", m.tag, "-f", str(m.modelfile)]) for m in self.models]


def _select_presets(names: tuple[str, ...], presets: dict[str, Preset]) -> list[Preset]:
    if not names or names == ("all",):
        return list(presets.values())
    unknown = [n for n in names if n not in presets]
    if unknown:
        raise SmolconvError(f"unknown preset {unknown[0]!r}", f"choose from {', '.join(presets)} or all")
    return [presets[n] for n in names]


def quantize_reports(manifest: Manifest) -> dict[str, dict]:
    """What quantize recorded of each variant it made (size, bits per weight, tensor types, the summary)."""
    return {step.params["type"].upper(): step.extra.get("report", {})
            for step in manifest.steps("quantize:").values()}


def quantized_types(manifest: Manifest, out_dir: Path) -> tuple[str, ...]:
    """The quantized variants still on disk: what package and publish take by default (the converted F16 is
    an intermediate; ask for it with --type F16)."""
    return tuple(step.params["type"] for step in manifest.steps("quantize:").values()
                 if (out_dir / step.outputs[0]).is_file())




def package(options: PackageOptions, progress: ProgressFn = no_progress,
            build: BuildDir | None = None) -> PackageResult:
    out_dir = Path(options.out_dir)
    with hold_folder(out_dir, wait=options.wait, on_wait=lambda text: progress(text, None)):
        directory = templates_dir()
        all_presets = load_presets(directory)
        presets = _select_presets(options.presets, all_presets)
        progress("planning", None)
        build = build or BuildDir.open(out_dir)
        manifest = build.manifest
        reports = quantize_reports(manifest)
        variants = build.variants(options.types or quantized_types(manifest, out_dir))
        model_name, origin, license_text, default_name = build_source(manifest, out_dir)
        name = options.name or default_name
        template = chat_template(directory)
        ensure_writable_dir(out_dir)
        models: list[PackagedModel] = []
        plans: dict[str, VariantPlan] = {}
        for variant in variants:
            plan = plans[variant.name] = plan_variant(variant, options.settings)
            summary = reports.get(variant.name, {}).get("summary")
            # Each preset's model, then the video model (the general preset's sampling, the video projector): the
            # same text blob, so Ollama stores it once.
            wanted = [(preset, variant.projector_path, "") for preset in presets]
            if variant.video_projector_path is not None:
                wanted.append((all_presets["general"], variant.video_projector_path, VIDEO_TAG_SUFFIX))
            for preset, projector, suffix in wanted:
                tag = model_tag(model_name, variant.name, preset.name, name) + suffix
                target = out_dir / modelfile_name(tag)
                adapter = variant.adapter_path
                notes = [summary] if summary else []
                if suffix:
                    notes.append(VIDEO_NOTE)
                spec = ModelfileSpec(tag=tag, modelfile_name=target.name, text_file=_relative(variant.text_path),
                                     projector_file=_relative(projector), plan=plan, preset=preset,
                                     source=origin, license=license_text, notes=notes,
                                     adapter_file=_relative(adapter) if adapter else None)
                text = render_modelfile(spec, directory)
                _write_owned(manifest, target, text, options.force)
                request = CreateRequest(tag=tag, modelfile=target, files=[variant.text_path, projector],
                                        template=template, system=preset.system,
                                        parameters=spec.api_parameters(), license=license_text,
                                        adapters=[adapter] if adapter else [])
                models.append(PackagedModel(tag, target, plan, "video" if suffix else preset.name, request))
        record = {
            "settings": {"vram": options.settings.vram, "reserve": options.settings.reserve,
                         "kv_type": options.settings.kv_type},
            "models": [{"tag": m.tag, "modelfile": m.modelfile.name, "preset": m.preset, "variant": m.plan.variant.name,
                        "num_ctx": m.plan.num_ctx, "num_gpu": m.plan.num_gpu, "fits": m.plan.fits} for m in models],
            "plans": {name: plan.to_dict() for name, plan in plans.items()},
        }
        manifest.set_section(Section.PACKAGE, record)
        manifest.save()
        result = PackageResult(models)
        if options.create:
            result.created = create_models([m.request for m in models], manifest.sha256, options.via, progress)
            record["created"] = {"route": result.created.route, "ollama": result.created.version,
                                 "tags": result.created.created}
            manifest.set_section(Section.PACKAGE, record)
            manifest.save()  # the blob digests went into the hash cache
        return result


VIDEO_TAG_SUFFIX = "-video"
VIDEO_NOTE = ("video: send a clip's frames as SmolVLM2's video prompt (`smolconv ask MODEL Q --video F`): each frame "
              "squared to the tile size, one tile and an overview per frame")


def _write_owned(manifest: Manifest, target: Path, text: str, force: bool) -> None:
    """Write a Modelfile; one the user wrote (not in build.json) is only replaced with --force."""
    manifest.refuse_foreign([target], force=force)
    if not (target.exists() and target.read_text() == text):
        with manifest.staged_output(target) as partial:
            partial.write_text(text)
    # Recorded even when the file already held this text: a run killed after the rename left only its claim.
    manifest.record_output(target, "package")


# --------------------------------------------------------------------------------------------------
# The example Modelfiles committed in modelfiles/


def example_models() -> list[tuple[ModelShape, str]]:
    return [(shape, qtype) for shape in SHAPES.values() if shape.repo_id for qtype in ("Q4_K_M", "Q5_K_M", "Q8_0")]


def render_examples(dest: Path, settings: PlanSettings | None = None) -> list[Path]:
    """The Modelfiles a build of each real checkpoint writes, planned from config dimensions (no download)."""

    directory = templates_dir()
    settings = settings or PlanSettings()
    presets = load_presets(directory)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for shape, qtype in example_models():
        name = shape.repo_id.split("/")[-1]
        text_name = f"{name}-{qtype}.gguf"
        _, projector_name = output_names(name, "f16")
        plan = plan_variant(estimated_variant(shape, qtype), settings)
        for preset in presets.values():
            tag = model_tag(name, qtype, preset.name)
            spec = ModelfileSpec(tag=tag, modelfile_name=modelfile_name(tag), text_file=f"./{text_name}",
                                 projector_file=f"./{projector_name}", plan=plan, preset=preset,
                                 source=f"{shape.repo_id} (example: sizes planned from its config)")
            target = dest / spec.modelfile_name
            target.write_text(render_modelfile(spec, directory))
            written.append(target)
    return written
