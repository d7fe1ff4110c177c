"""`smolconv publish` of an MLX export: the folder as mlx-community publishes it, with a card from build.json.

The repo holds what `mlx_vlm.load` reads (weights, config with `quantization`, tokenizer, processor, chat
template) and README.md; smolconv's own records (build.json, verify.json) and a merged fine-tune's checkpoint stay
home. The upload is the GGUF publish's: one `upload_folder` commit, the same Hub error handling.
"""

from __future__ import annotations

from smolconv import __version__
from smolconv.core.errors import SmolconvError
from smolconv.core.names import mlx_repo_name
from smolconv.core.templates import templates_dir
from smolconv.formats.gguf.package import jinja_environment
from smolconv.formats.mlx import MLX_VLM_VERSION
from smolconv.hub.repo import RepoFile, adapter_card, source_card
from smolconv.record.builddir import BuildDir
from smolconv.record.views import Section

CARD_TEMPLATE = "mlx-model-card.md.j2"
HUB_TAGS = ["mlx", "mlx-vlm", "smolvlm2", "smolconv"]
# smolconv's records and mlx-vlm's own card (replaced by smolconv's): not part of the repo.
NOT_PUBLISHED = frozenset({"build.json", "verify.json", "README.md"})




def repo_files(options, build: BuildDir):
    """The repo's files (RepoFile) and the commit message for an MLX export folder smolconv wrote."""

    if options.types:
        raise SmolconvError("--type picks GGUF variants; an MLX export is one set of weights",
                            "drop --type (export-mlx --bits chose the quantization)")
    manifest = build.manifest
    exported = manifest.step("mlx:convert")
    outputs = (exported.outputs if exported else None) or []
    missing = [n for n in outputs if not (build.path / n).is_file()]
    if not outputs or missing:
        raise SmolconvError(f"{build.path} is not a complete MLX export ({', '.join(missing) or 'no files'} missing)",
                            "run `smolconv export-mlx` again into that folder")
    source = source_card(manifest, build.path, options.base_model)
    adapter = adapter_card(manifest)
    if adapter and adapter.get("name"):
        source.name = adapter["name"]  # the merged weights are the fine-tune
    files = [RepoFile(n, source=build.path / n) for n in sorted(outputs) if n not in NOT_PUBLISHED]
    settings = manifest.section(Section.MLX)
    files.append(RepoFile("README.md", text=model_card(options, source, adapter, settings,
                                                       manifest.section(Section.VERIFY), files)))
    message = (f"smolconv {__version__}: {source.name} MLX ({settings['dtype']}, bits {settings['bits']}) from "
               f"{source.origin}")
    return files, message


def model_card(options, source, adapter: dict | None, settings: dict, verify: dict | None, files) -> str:
    from huggingface_hub import ModelCardData

    relation = None
    if source.base_model:
        relation = "finetune" if adapter else "quantized" if settings["bits"] != "none" else None
    metadata = ModelCardData(base_model=source.base_model, base_model_relation=relation, license=source.license_id,
                             library_name="mlx", pipeline_tag="image-text-to-text", tags=list(HUB_TAGS))
    size = sum(f.source.stat().st_size for f in files if f.source is not None)
    body = jinja_environment(templates_dir()).get_template(CARD_TEMPLATE).render(
        repo_id=options.repo_id, name=source.name, source=source, adapter=adapter, version=__version__,
        mlx_vlm=MLX_VLM_VERSION, settings=settings, suggested=mlx_repo_name(source.name, settings["bits"]),
        size_mib=f"{size / 2**20:.1f}", verify=_verify(verify),
    )
    return f"---\n{metadata.to_yaml()}\n---\n\n{body}"


def _verify(record: dict | None) -> dict | None:
    """export-mlx's verify numbers from build.json, formatted once for the card."""
    if not record or "vision" not in record:
        return None
    quantized = record.get("quantized")
    return {"passed": record.get("passed"), "gated": record.get("gated"), "failures": record.get("failures") or [],
            "max_nmse": f"{record['text']['max_nmse']:.2e}", "top1": record["text"].get("top1_agree"),
            "gate": f"{record.get('gates', {}).get('max_nmse', 0):.0e}",
            "image_nmse": f"{record['image']['nmse']:.2e}", "vision_cosine": f"{record['vision']['cosine']:.6f}",
            "kld": None if not quantized else {"mean": f"{quantized['mean_kld']:.4f}",
                                               "same_top": f"{100 * quantized['same_top']:.1f}",
                                               "tokens": quantized["n_positions"]}}
