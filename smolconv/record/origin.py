"""Where a build came from, in words: the checkpoint's name for tags, the origin for a Modelfile's header, the
license.
"""

from __future__ import annotations

import re
from pathlib import Path

from smolconv.record.manifest import Manifest

DEFAULT_LICENSE = (
    "SmolVLM2 is released by Hugging Face under the Apache License 2.0 "
    "(https://www.apache.org/licenses/LICENSE-2.0). See the model card of the checkpoint it was converted from."
)


def build_source(manifest: Manifest, out_dir: Path) -> tuple[str, str, str, str | None]:
    """(checkpoint name for tags, where it came from for the header, license text, default model name).

    A fine-tune's models are named after its adapter (`my-lora:2.2b-instruct-q4_K_M`), and the header
    names the base and the adapter."""
    source = manifest.source
    adapter = manifest.adapter
    convert = manifest.step("convert")  # none in an MLX export
    convert_params = (convert.params if convert else None) or {}
    model_name = source.repo_id or ""
    if not model_name and adapter and source.path:
        model_name = Path(source.path).name  # the merged files carry the adapter's name; tags take the base's
    model_name = model_name.split("/")[-1] or convert_params.get("name") or out_dir.resolve().name
    origin = source.repo_id or source.model or model_name
    if source.revision:
        origin += f"@{source.revision[:12]}"
    default_name = None
    if adapter:
        how = "merged into it" if adapter.format == "merge" else "as a GGUF LoRA"
        where = adapter.repo_id or adapter.model or adapter.name
        if adapter.revision:
            where += f"@{adapter.revision[:12]}"
        origin += f" + adapter {where} ({how})"
        default_name = re.sub(r"[^a-z0-9._-]+", "-", str(adapter.name or "").lower()).strip("-._") or None
    license_text = DEFAULT_LICENSE
    license_file = source.checkpoint / "LICENSE" if source.checkpoint else None
    if license_file and license_file.is_file():
        license_text = license_file.read_text(errors="replace").strip() or DEFAULT_LICENSE
    return model_name, origin, license_text, default_name
