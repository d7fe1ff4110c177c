"""verify.json and the summary of it that build.json keeps, for every format's verify."""

from __future__ import annotations

import json
from pathlib import Path

from smolconv.core.fsutil import write_text_atomic
from smolconv.record.manifest import Manifest
from smolconv.record.views import Section


def save_report(out_dir: Path, data: dict, text_summary: dict, manifest: Manifest | None = None,
                key: str | None = None) -> Path:
    """Write verify.json, and the report without its per-prompt rows into build.json (when smolconv wrote one)."""

    path = out_dir / "verify.json"
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    manifest = manifest or Manifest.load(out_dir)
    if manifest.has_steps():
        record = {k: v for k, v in data.items() if k != "text"} | {"text": text_summary}
        manifest.set_section(Section.VERIFY, record | ({"key": key} if key else {}))
        manifest.save()
    return path
