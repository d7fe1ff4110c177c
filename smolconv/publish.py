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

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from smolconv import __version__
from smolconv.errors import SmolconvError
from smolconv.fsutil import staged_dir
from smolconv.builddir import BuildDir
from smolconv.manifest import Manifest
from smolconv.package import (
    ModelfileSpec,
    api_parameters,
    build_source,
    chat_template,
    jinja_environment,
    load_presets,
    model_tag,
    modelfile_parameters,
    quantize_reports,
    quantized_types,
    render_modelfile,
    templates_dir,
)
from smolconv.plan import PlanSettings, VariantPlan, format_bytes, plan_variant
from smolconv.progress import ProgressFn, no_progress

CARD_TEMPLATE = "model-card.md.j2"
HUB_TAGS = ["gguf", "llama.cpp", "ollama", "smolvlm2"]
PIPELINE_TAG = "image-text-to-text"
DEFAULT_LICENSE_ID = "apache-2.0"  # SmolVLM2's license, when the checkpoint's own card names none
OFFLINE = ("HF_HUB_OFFLINE is set, so nothing can be uploaded",
           "unset HF_HUB_OFFLINE, or write the folder only with --dry-run DIR")
TOKEN_FIX = "create a token with write access at https://huggingface.co/settings/tokens, then `hf auth login`"


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
class RepoFile:
    """One file of the repo: a build file (linked into the folder) or text smolconv wrote."""

    name: str
    source: Path | None = None
    text: str | None = None

    def write(self, folder: Path) -> None:
        target = folder / self.name
        if self.text is not None:
            target.write_text(self.text)
            return
        assert self.source is not None
        try:
            os.link(self.source, target)  # a GGUF can be GBs: a hard link costs nothing
        except OSError:
            shutil.copyfile(self.source, target)


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


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        repo_id = ""
    if repo_id.count("/") != 1:
        raise SmolconvError("--repo must be USER/NAME (a Hub model repo id)",
                            "write e.g. --repo your-name/SmolVLM2-2.2B-Instruct-GGUF")


def hub_token() -> str:
    """The token huggingface_hub would use; one line with the fix when offline or there is none."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise SmolconvError(*OFFLINE)
    token = get_token()
    if not token:
        raise SmolconvError("no Hugging Face token found (HF_TOKEN or `hf auth login`)", TOKEN_FIX)
    return token


def check_publish_request(repo_id: str) -> None:
    """What `build --publish` checks before the long steps."""
    check_repo_id(repo_id)
    hub_token()


# --------------------------------------------------------------------------------------------------
# The repo's files


@dataclass
class _Source:
    name: str               # ggml-org's file name stem: the checkpoint's name (SmolVLM2-2.2B-Instruct)
    origin: str             # what the card says it was made from
    base_model: str | None
    hub_id: str | None      # the Hub repo build.json says it was pulled from (None: a local directory)
    revision: str | None
    license_id: str
    license_text: str


def _source(manifest: Manifest, build_dir: Path, base_model: str | None) -> _Source:
    record = manifest.data.get("source", {})
    checkpoint_name, origin, license_text, _ = build_source(manifest, build_dir)
    if not record.get("repo_id"):
        origin = Path(record.get("path") or origin).name  # a local directory: its name, not the user's file tree
    base = base_model or record.get("repo_id")
    if base:
        check_repo_id(base)
    return _Source(name=base.split("/")[-1] if base else checkpoint_name, origin=origin, base_model=base,
                   hub_id=record.get("repo_id"), revision=record.get("revision"),
                   license_id=_license_id(record.get("path")), license_text=license_text)


def _license_id(checkpoint: str | None) -> str:
    """The license id the checkpoint's own model card declares (apache-2.0 for SmolVLM2)."""
    from huggingface_hub import ModelCard

    card = Path(checkpoint or "") / "README.md"
    if checkpoint and card.is_file():
        with contextlib.suppress(Exception):  # a card without a YAML header, or one that does not parse
            license_id = ModelCard.load(card).data.license
            if isinstance(license_id, str) and license_id:
                return license_id
    return DEFAULT_LICENSE_ID


def _projector_name(name: str, projector: Path) -> str:
    # mmproj-<build name>-f16.gguf (or -Q8_0 with --mmproj-type): keep the type, use the checkpoint's name.
    kind = projector.stem.rsplit("-", 1)[-1]
    return f"mmproj-{name}-{kind}.gguf"


def _adapter(manifest: Manifest) -> dict | None:
    """build.json's adapter record as the card names it: its Hub id (or only its name, never a local path),
    commit, format, and the GGUF LoRA file of the gguf format."""
    record = manifest.data.get("adapter")
    if not isinstance(record, dict) or not record.get("format"):
        return None
    return {"source": record.get("repo_id") or record.get("name"), "revision": record.get("revision"),
            "format": record["format"], "name": record.get("name"), "file": record.get("gguf")}


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
    source = _source(manifest, build_dir, options.base_model)
    adapter = _adapter(manifest)
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
    card = model_card(CardInputs(options, manifest, source, files, plans, modelfiles, adapter, params), directory)
    files.append(RepoFile("README.md", text=card))
    types = ", ".join(v.name for v in variants)
    message = f"smolconv {__version__}: {source.name} GGUF ({types}) from {source.origin}"
    return files, message


def gguf_name(name: str, qtype: str) -> str:
    """ggml-org's name for a variant: SmolVLM2-2.2B-Instruct-Q4_K_M.gguf."""
    return f"{name}-{qtype}.gguf"


@dataclass
class CardInputs:
    options: PublishOptions
    manifest: Manifest
    source: _Source
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
    data = inputs.manifest.data
    reports = quantize_reports(inputs.manifest)
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
            "smoke": _smoke(data.get("smoke", {}), name),
        })
    projector = next(f for f in inputs.files if f.name.startswith("mmproj-"))
    settings = options.settings
    body = jinja_environment(directory).get_template(CARD_TEMPLATE).render(
        repo_id=options.repo_id, name=source.name, source=source, adapter=adapter, version=__version__,
        llama_cpp=(data.get("llama_cpp") or {}).get("commit"), variants=variants,
        run=next((v for v in variants if v["name"] == "Q4_K_M"), variants[0]),  # the commands' example
        projector=projector.name, projector_mib=f"{projector.source.stat().st_size / 2**20:.1f}",  # type: ignore
        verify=_verify(data.get("verify")), vram=format_bytes(settings.vram), reserve=format_bytes(settings.reserve),
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
    with _upload_folder(Path(options.build_dir)) as folder:
        for repo_file in files:
            repo_file.write(folder)
        progress(f"uploading to {options.repo_id}", None)
        result.url = upload(folder, options.repo_id, message, private=options.private, token=token)
    return result


def _files_of(options: PublishOptions, build: BuildDir) -> tuple[list[RepoFile], str]:
    """A GGUF build's repo (ggml-org's layout) or an MLX export's (mlx-community's)."""
    if _is_mlx(build):
        from smolconv.mlx import publish as mlx_publish

        return mlx_publish.repo_files(options, build)
    return repo_files(options, build)


def _is_mlx(build: BuildDir) -> bool:
    return bool(build.data.get("mlx"))


@contextlib.contextmanager
def _upload_folder(build_dir: Path):
    """A temporary folder in the build directory, so that the GGUF files are hard links, not copies (elsewhere
    when the build directory is read-only)."""
    try:
        tmp = tempfile.TemporaryDirectory(prefix=".publish-", dir=build_dir)
    except OSError:
        tmp = tempfile.TemporaryDirectory(prefix="smolconv-publish-")
    with tmp as folder:
        yield Path(folder)


def upload(folder: Path, repo_id: str, message: str, *, private: bool, token: str) -> str:
    """Create the repo when missing and commit `folder` to it; Hub refusals become one line each."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with hub_errors(repo_id):
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", commit_message=message)
    return commit.commit_url


@contextlib.contextmanager
def hub_errors(repo_id: str):
    """The Hub's answers as SmolconvErrors that name the fix (never the token, never the server's text)."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    # huggingface_hub 1.x and later talk to the Hub through httpx; older releases through requests.
    unreachable: tuple[type[BaseException], ...] = (httpx.TransportError,)
    try:
        import requests

        unreachable += (requests.ConnectionError, requests.Timeout)
    except ImportError:
        pass

    try:
        yield
    except OfflineModeIsEnabled:
        raise SmolconvError(*OFFLINE) from None
    except (HfHubHTTPError, httpx.HTTPStatusError) as exc:  # huggingface_hub 2.x lets some through as httpx's
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise SmolconvError("the Hub refused the token (401: invalid or expired)", TOKEN_FIX) from None
        if status == 403:
            raise SmolconvError(f"the token cannot write to {repo_id} (403 from the Hub)",
                                "use a token with write access to that user or organization, "
                                "or publish under your own name with --repo YOUR-NAME/…") from None
        raise SmolconvError(f"the Hub answered {status or 'an error'} while publishing to {repo_id}",
                            "try again later (a rerun skips the files already uploaded)") from None
    except unreachable:
        raise SmolconvError("cannot reach huggingface.co", "check the network, or write the folder only with "
                            "--dry-run DIR") from None
