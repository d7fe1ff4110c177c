#!/usr/bin/env bash
# CI: smolconv installed as a user installs it. Builds the sdist and the wheel (the wheel from the sdist, so both
# must carry templates/ and the KLD text), checks them with twine, installs the wheel into a fresh venv outside the
# checkout, and runs synth → build → package → publish --dry-run from a temporary directory with that install only.
# Uses the llama.cpp toolchain `smolconv setup` built (the user cache); run `make setup` first.
#   scripts/ci_wheel.sh            (PYTHON: the interpreter with build and twine, default .venv/bin/python;
#                                   PIP_INSTALL_FLAGS: extra pip install flags, as in the Makefile)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
work=$(mktemp -d "${TMPDIR:-/tmp}/smolconv-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
step() { printf '[ci_wheel %4ds] %s\n' "$SECONDS" "$*"; }

step "python -m build (sdist, then the wheel from it)"
"$PYTHON" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
if grep -q "SetuptoolsDeprecationWarning" "$work/build.log"; then
    grep -A4 "SetuptoolsDeprecationWarning" "$work/build.log"; echo "setuptools deprecation warning"; exit 1
fi
"$PYTHON" -m twine check --strict "$work"/dist/*

step "fresh venv, $TORCH_SPEC, then the wheel"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet ${PIP_INSTALL_FLAGS:-} "$TORCH_SPEC"
"$work/venv/bin/python" -m pip install --quiet ${PIP_INSTALL_FLAGS:-} "$work"/dist/*.whl

step "the pipeline from $work/run, with the installed smolconv only"
mkdir "$work/run"
cd "$work/run"
unset PYTHONPATH SMOLCONV_TEMPLATES
smolconv() { "$work/venv/bin/smolconv" "$@"; }
"$work/venv/bin/python" -c 'import smolconv, sys; f = smolconv.__file__; print(f); sys.exit("site-packages" not in f)'
smolconv --version
smolconv synth --shape tiny --out tiny
smolconv build tiny --out built --type Q4_K_M --no-verify --no-smoke
smolconv package built --type Q4_K_M --preset general
smolconv publish built --repo ci/smolvlm2-tiny-GGUF --dry-run repo
"$work/venv/bin/python" - <<'EOF'
import json
from pathlib import Path

from huggingface_hub import ModelCard

repo = Path("repo")
names = sorted(p.name for p in repo.iterdir())
assert names == ["README.md", "mmproj-tiny-f16.gguf", "params", "smolconv.json", "template",
                 "tiny-Q4_K_M.Modelfile", "tiny-Q4_K_M.gguf"], names
card = ModelCard.load(repo / "README.md")
assert card.data.pipeline_tag == "image-text-to-text" and "gguf" in card.data.tags, card.data
assert "ollama run hf.co/ci/smolvlm2-tiny-GGUF:Q4_K_M" in card.text
assert json.loads((repo / "params").read_text())["stop"] == ["<end_of_utterance>"]
# batch's skip-if-current reads this record: the local source's files and every uploaded file by sha256.
record = json.loads((repo / "smolconv.json").read_text())
assert record["source"]["commit"].startswith("sha256:"), record["source"]
assert set(record["files"]) == set(names) - {"smolconv.json"}, record["files"]
print("publish folder:", ", ".join(names))
EOF
step "done"
