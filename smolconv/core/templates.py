"""Where smolconv's templates live (templates/ of a checkout, or the wheel's copy), and reading them: the Go chat
template, the presets, a Jinja environment.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from smolconv.core.errors import SmolconvError

TEMPLATE_FILE = "smolvlm2.gotmpl"


MODELFILE_TEMPLATE = "Modelfile.j2"


PRESETS_FILE = "presets.toml"


def templates_dir() -> Path:
    """SMOLCONV_TEMPLATES (your own copy, to change the wording), else the copy an installed wheel carries
    (smolconv/templates), else templates/ of this source checkout."""
    override = os.environ.get("SMOLCONV_TEMPLATES")
    package = Path(__file__).resolve().parent.parent  # smolconv/
    candidates = [Path(override)] if override else [package / "templates", package.parent / "templates"]
    for path in candidates:
        if (path / MODELFILE_TEMPLATE).is_file():
            return path
    raise SmolconvError(f"no {MODELFILE_TEMPLATE} in {' or '.join(str(p) for p in candidates)}",
                        "reinstall smolconv, or point SMOLCONV_TEMPLATES at a copy of its templates/ folder")


def chat_template(directory: Path | None = None) -> str:
    """The Go template for Ollama's TEMPLATE; the file's final newline is not part of it."""
    return ((directory or templates_dir()) / TEMPLATE_FILE).read_text().removesuffix("\n")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    system: str | None
    parameters: dict


def load_presets(directory: Path | None = None) -> dict[str, Preset]:
    data = tomllib.loads(((directory or templates_dir()) / PRESETS_FILE).read_text())
    return {name: Preset(name, body.get("description", name), body.get("system"), dict(body.get("parameters", {})))
            for name, body in data.items()}
