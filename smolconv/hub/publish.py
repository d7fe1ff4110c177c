"""`smolconv publish`: a build as a Hugging Face Hub model repo that llama.cpp and Ollama run straight from the Hub.

The layout is ggml-org's (their SmolVLM2 repos): `<Name>-<TYPE>.gguf` per variant and one `mmproj-<Name>-f16.gguf`,
so `llama-server -hf USER/NAME:Q4_K_M` and `ollama run hf.co/USER/NAME:Q4_K_M` find the text model and the
projector by themselves. Next to them go the files the Hub's Ollama integration reads (docs/hub/ollama.md,
"Custom Chat Template and Parameters"): `template` (the same Go template as smolconv's Modelfiles), `params` (JSON)
and `system` when the preset has one; a Modelfile per variant for `ollama create` after a download; and README.md,
the model card, written from build.json.

The upload is one `HfApi.upload_folder` commit of the folder `--dry-run DIR` writes. Why not
`upload_large_folder`: it splits the upload into many commits with its own messages (no commit message naming
smolconv's version), writes a `.cache` folder into the folder it uploads, and leaves a half-published repo
visible while it runs. `upload_folder` is resumable where it matters for multi-GB GGUF files: each file is
uploaded (Xet, chunk by chunk, or LFS) before the single commit, and a rerun after an interruption skips what the
Hub already holds, so only the missing part travels again.

The token comes from huggingface_hub (HF_TOKEN or `hf auth login`); smolconv never prints or logs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from smolconv import __version__
from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import staged_dir
from smolconv.core.names import gguf_name, model_tag
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.core.templates import chat_template, load_presets, templates_dir
from smolconv.formats.gguf.package import (
    ModelfileSpec,
    api_parameters,
    jinja_environment,
    modelfile_parameters,
    quantize_reports,
    quantized_types,
    render_modelfile,
)
from smolconv.hub import mlx as mlx_publish
from smolconv.hub import picture
from smolconv.hub.record import build_record, record_file
from smolconv.hub.repo import (
    RepoFile,
    SourceCard,
    adapter_card,
    check_repo_id,
    hub_token,
    source_card,
    upload,
    upload_folder,
)
from smolconv.plan import PlanSettings, VariantPlan, format_bytes, plan_variant
from smolconv.record.builddir import BuildDir
from smolconv.record.manifest import Manifest
from smolconv.record.views import Section

CARD_TEMPLATE = "model-card.md.j2"
HUB_TAGS = ["gguf", "llama.cpp", "ollama", "smolvlm2"]
PIPELINE_TAG = "image-text-to-text"


@dataclass
class PublishOptions:
    build_dir: Path
    repo_id: str                        # USER/NAME on the Hub
    types: tuple[str, ...] = ()         # default: every quantized variant the build holds
    preset: str = "general"             # the sampling in `params` and the `system` file
    private: bool = False
    dry_run: Path | None = None         # write the repo's folder here and upload nothing
    force: bool = False                 # replace a non-empty --dry-run folder
    base_model: str | None = None       # the Hub id of the checkpoint (default: the one build.json records)
    settings: PlanSettings = field(default_factory=PlanSettings)




@dataclass
class PublishResult:
    repo_id: str
    files: list[RepoFile]
    commit_message: str
    folder: Path | None = None  # the --dry-run folder
    url: str | None = None      # the commit on the Hub
    mlx: bool = False           # an MLX export (mlx-community's layout), not a GGUF build

    def run_command(self) -> str:
        """`ollama run` for Q4_K_M, or the first variant when Q4_K_M was not published; mlx-vlm for MLX."""
        if self.mlx:
            return f"python -m mlx_vlm generate --model {self.repo_id} --prompt \"Describe this image.\" --image IMAGE"
        types = [f.name.removesuffix(".gguf").rsplit("-", 1)[-1] for f in self.files
                 if f.source is not None and f.name.endswith(".gguf") and not f.name.startswith("mmproj-")]
        return f"ollama run hf.co/{self.repo_id}:{'Q4_K_M' if 'Q4_K_M' in types else types[0]}"


# --------------------------------------------------------------------------------------------------
# Checks that need no network








# --------------------------------------------------------------------------------------------------
# The repo's files








def _projector_name(name: str, projector: Path) -> str:
    # mmproj-<build name>-f16.gguf (or -Q8_0 with --mmproj-type): keep the type, use the checkpoint's name.
    kind = projector.stem.rsplit("-", 1)[-1]
    return f"mmproj-{name}-{kind}.gguf"




def repo_files(options: PublishOptions, build: BuildDir | None = None) -> tuple[list[RepoFile], str]:
    """Every file of the repo, and the commit message: what --dry-run writes and an upload sends."""
    build_dir = Path(options.build_dir)
    build = build or BuildDir.open(build_dir)
    manifest = build.manifest
    directory = templates_dir()
    presets = load_presets(directory)
    if options.preset not in presets:
        raise SmolconvError(f"unknown preset {options.preset!r}", f"choose one of {', '.join(presets)}")
    preset = presets[options.preset]
    variants = build.variants(options.types or quantized_types(manifest, build_dir))
    source = source_card(manifest, build_dir, options.base_model)
    adapter = adapter_card(manifest)
    if adapter and adapter["format"] == "merge" and adapter.get("name"):
        source.name = adapter["name"]  # the merged weights are the fine-tune: its files carry the fine-tune's name
    plans = {v.name: plan_variant(v, options.settings) for v in variants}
    projector = variants[0].projector_path
    projector_name = _projector_name(source.name, projector)
    files = [RepoFile(gguf_name(source.name, v.name), source=v.text_path) for v in variants]
    files.append(RepoFile(projector_name, source=projector))
    adapter_file = build_dir / str((adapter or {}).get("file", ""))
    if adapter and adapter.get("format") == "gguf" and adapter.get("file") and adapter_file.is_file():
        files.append(RepoFile(adapter_file.name, source=adapter_file))

    template = chat_template(directory)
    # One `params` for the whole repo: the smallest planned context, so that every variant fits the card.
    # num_gpu stays out: it is right for one card only, and Ollama fits the layers to the user's GPU itself.
    smallest = min(plans.values(), key=lambda p: p.num_ctx)
    params = {k: v for k, v in api_parameters(modelfile_parameters(smallest, preset)).items() if k != "num_gpu"}
    files += [RepoFile("template", text=template), RepoFile("params", text=json.dumps(params, indent=2) + "\n")]
    if preset.system is not None:
        files.append(RepoFile("system", text=preset.system))
    reports = quantize_reports(manifest)
    modelfiles: dict[str, ModelfileSpec] = {}
    for variant in variants:
        summary = reports.get(variant.name, {}).get("summary")
        spec = ModelfileSpec(tag=model_tag(source.name, variant.name, preset.name),
                             modelfile_name=f"{source.name}-{variant.name}.Modelfile",
                             text_file=f"./{gguf_name(source.name, variant.name)}",
                             projector_file=f"./{projector_name}",
                             plan=plans[variant.name], preset=preset, license=source.license_text,
                             source=f"{source.origin} via hf.co/{options.repo_id}", notes=[summary] if summary else [])
        files.append(RepoFile(spec.modelfile_name, text=render_modelfile(spec, directory)))
        modelfiles[variant.name] = spec
    files += eval_plots(manifest, build_dir)
    files += size_vs_kld(build, source.name)
    card = model_card(CardInputs(options, manifest, source, files, plans, modelfiles, adapter, params), directory)
    files.append(RepoFile("README.md", text=card))
    types = ", ".join(v.name for v in variants)
    message = f"smolconv {__version__}: {source.name} GGUF ({types}) from {source.origin}"
    return files, message




@dataclass
class CardInputs:
    options: PublishOptions
    manifest: Manifest
    source: SourceCard
    files: list[RepoFile]
    plans: dict[str, VariantPlan]
    modelfiles: dict[str, ModelfileSpec]
    adapter: dict | None
    params: dict


def model_card(inputs: CardInputs, directory: Path) -> str:
    """README.md: a YAML header the Hub reads (huggingface_hub.ModelCardData) and a body from build.json."""
    from huggingface_hub import ModelCardData

    source, adapter, options = inputs.source, inputs.adapter, inputs.options
    relation = None
    if source.base_model:
        relation = "quantized" if adapter is None else ("adapter" if adapter.get("format") == "gguf" else "finetune")
    metadata = ModelCardData(base_model=source.base_model, base_model_relation=relation, license=source.license_id,
                             pipeline_tag=PIPELINE_TAG, tags=list(HUB_TAGS))
    manifest = inputs.manifest
    reports = quantize_reports(manifest)
    variants = []
    for name, plan in inputs.plans.items():
        report = reports.get(name) or {}
        file_name = gguf_name(source.name, name)
        share = sorted((report.get("weight_share") or {}).items(), key=lambda kv: -kv[1])
        counts = report.get("tensor_types") or {}
        variants.append({
            "name": name, "file": file_name, "size_mib": f"{plan.variant.text_path.stat().st_size / 2**20:.1f}",
            "bpw": f"{report['bits_per_weight']:.2f}" if "bits_per_weight" in report else "",
            "mix": ", ".join(f"{t} {100 * s:.1f}% ({counts.get(t, 0)} tensors)" for t, s in share),
            "summary": report.get("summary", ""), "tag": inputs.modelfiles[name].tag,
            "modelfile": inputs.modelfiles[name].modelfile_name,
            "plan": {"num_ctx": plan.num_ctx, "num_gpu": plan.num_gpu, "layers": plan.variant.text.n_layer + 1,
                     "projector": "GPU" if plan.memory.projector_on_device else "CPU",
                     "total": format_bytes(plan.memory.total), "fits": plan.fits},
            "smoke": _smoke(manifest.section(Section.SMOKE) or {}, name),
        })
    projector = next(f for f in inputs.files if f.name.startswith("mmproj-"))
    settings = options.settings
    body = jinja_environment(directory).get_template(CARD_TEMPLATE).render(
        repo_id=options.repo_id, name=source.name, source=source, adapter=adapter, version=__version__,
        llama_cpp=(manifest.llama_cpp or {}).get("commit"), variants=variants,
        run=next((v for v in variants if v["name"] == "Q4_K_M"), variants[0]),  # the commands' example
        projector=projector.name, projector_mib=f"{projector.source.stat().st_size / 2**20:.1f}",  # type: ignore
        verify=_verify(manifest.section(Section.VERIFY)), vram=format_bytes(settings.vram),
        evals=_evals(manifest.section(Section.EVAL) or {}, {f.name for f in inputs.files}),
        reserve=format_bytes(settings.reserve),
        kld_picture=next((f.name for f in inputs.files if f.name == picture.PICTURE_NAME), None),
        kv_type=settings.kv_type, preset=options.preset, params_ctx=inputs.params["num_ctx"],
        preset_has_system=any(f.name == "system" for f in inputs.files),
    )
    return f"---\n{metadata.to_yaml()}\n---\n\n{body}"


def _verify(record: dict | None) -> dict | None:
    """verify's numbers from build.json, formatted once for the card."""
    if not record:
        return None
    text, vision, skipped = record.get("text", {}), record.get("vision", {}), record.get("skipped", [])
    return {
        "passed": record.get("passed"), "max_nmse": f"{text['max_nmse']:.2e}", "top1": text.get("top1_agree"),
        "vision_nmse": f"{vision['nmse']:.2e}" if vision.get("checked") else None,
        # The card's line reads "not compared (REASON)": the reason without verify's own "not checked".
        "vision_reason": "`--skip-check vision`" if "vision" in skipped
        else vision.get("reason", "").removeprefix("not checked: "),
        "f16_ppl": record.get("kld", {}).get("f16_ppl"),
        "kld_skipped": "kld" in skipped,
        "kld": [{"variant": k["variant"], "mean": f"{k['mean_kld']:.4f}",
                 "p99": "" if k.get("kld_p99") is None else f"{k['kld_p99']:.4f}",
                 "same_top": f"{100 * k['same_top']:.1f}",
                 "gate": "not gated" if k.get("gate") is None else f"≤ {k['gate']}"}
                for k in record.get("kld", {}).get("variants", [])],
    }


def size_vs_kld(build: BuildDir, name: str) -> list[RepoFile]:
    """The picture of the build's own variants, file size against KL divergence (hub/picture.py), when verify
    measured it; the card shows it under verify's table."""
    sizes = {v.name: v.text_path.stat().st_size for v in build.variants()}
    found = picture.points(sizes, build.manifest.section(Section.VERIFY))
    if not found:
        return []
    return [RepoFile(picture.PICTURE_NAME, data=picture.draw(found, f"{name}: file size against loss, per variant"))]


def eval_plot_name(name: str) -> str:
    """How the repo names the picture of the eval of cases `name`."""
    return f"eval-{name}.png"


def eval_plots(manifest: Manifest, build_dir: Path) -> list[RepoFile]:
    """The pictures of the build's evals (eval/NAME.png), for the card to show."""
    files = []
    for name, record in sorted((manifest.section(Section.EVAL) or {}).items()):
        plot = build_dir / "eval" / str(record.get("plot") or "")
        if record.get("plot") and plot.is_file():
            files.append(RepoFile(eval_plot_name(name), source=plot))
    return files


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _evals(records: dict, files: set[str]) -> list[dict]:
    """eval's records from build.json, formatted once for the card (its picture where the repo has it)."""
    found = []
    for name, record in sorted(records.items()):
        gates = record.get("gates") or {}
        said = [f"accuracy at least {gates['min_accuracy']:g}%" if gates.get("min_accuracy") is not None else "",
                f"at most {gates['max_drop']:g} points under the reference" if gates.get("max_drop") is not None
                else ""]
        found.append({
            "name": name, "cases_file": record.get("cases_file"), "cases": record.get("cases"),
            "labelled": record.get("labelled"), "sha256": str(record.get("cases_sha256", ""))[:12],
            "passed": record.get("passed"), "failures": record.get("failures") or [],
            "gates": ", ".join(s for s in said if s),
            "plot": eval_plot_name(name) if eval_plot_name(name) in files else None,
            "runs": [{"runtime": r.get("runtime"), "variant": r.get("variant"),
                      "size": "" if not r.get("size_bytes") else f"{r['size_bytes'] / 2**20:.1f}",
                      "accuracy": f"{_percent(r.get('accuracy'))} ({r.get('correct')}/{r.get('labelled')})"
                      if r.get("labelled") else "",
                      "agreement": "reference" if r.get("runtime") == "transformers" else _percent(r.get("agreement")),
                      "first_token": "" if r.get("runtime") == "transformers"
                      else _percent(r.get("first_token_agreement"))}
                     for r in record.get("runs", [])],
        })
    return found


def _smoke(records: dict, variant: str) -> list[dict]:
    found = []
    for key, record in sorted(records.items()):
        name, _, backend = key.partition(":")
        if name != variant:
            continue
        found.append({"backend": backend, "passed": record.get("passed"), "failed": record.get("failed") or [],
                      "decode_tps": None if record.get("decode_tps") is None else f"{record['decode_tps']:.1f}",
                      "ttft_s": None if record.get("ttft_s") is None else f"{record['ttft_s']:.2f}"})
    return found


# --------------------------------------------------------------------------------------------------
# The stage


def publish(options: PublishOptions, progress: ProgressFn = no_progress,
            build: BuildDir | None = None) -> PublishResult:
    check_repo_id(options.repo_id)
    progress("writing the repo's files", None)
    build = build or BuildDir.open(options.build_dir)
    mlx = _is_mlx(build)
    if options.dry_run:
        # staged_dir refuses a non-empty folder (without --force) before any work, and leaves no half folder.
        with staged_dir(Path(options.dry_run), force=options.force) as folder:
            files, message = _files_of(options, build)
            for repo_file in files:
                repo_file.write(folder)
        return PublishResult(options.repo_id, files, message, folder=Path(options.dry_run), mlx=mlx)
    token = hub_token()  # before any work: no token, or offline, is a one-line error at once
    files, message = _files_of(options, build)
    result = PublishResult(options.repo_id, files, message, mlx=mlx)
    with upload_folder(Path(options.build_dir)) as folder:
        for repo_file in files:
            repo_file.write(folder)
        progress(f"uploading to {options.repo_id}", None)
        result.url = upload(folder, options.repo_id, message, private=options.private, token=token)
    return result


def _files_of(options: PublishOptions, build: BuildDir) -> tuple[list[RepoFile], str]:
    """A GGUF build's repo (ggml-org's layout) or an MLX export's (mlx-community's), with the build record
    (smolconv.json: what `batch` compares before it downloads anything)."""
    if _is_mlx(build):
        files, message = mlx_publish.repo_files(options, build)
        record = build_record(build.manifest, files, "mlx", ())
    else:
        files, message = repo_files(options, build)
        types = tuple(v.name for v in build.variants(options.types or quantized_types(build.manifest,
                                                                                      build.path)))
        record = build_record(build.manifest, files, "gguf", types)
    return [*files, record_file(record)], message


def _is_mlx(build: BuildDir) -> bool:
    return bool(build.manifest.section(Section.MLX))






