"""A test double for nvidia-smi (tests only): a tiny shell script on PATH that prints the CSV the real one prints
for the two queries smolconv makes. No GPU is needed to test how smolconv reads a GPU's answers; the real
tool's output format is `--format=csv,noheader,nounits`, one line per GPU or per process."""

from __future__ import annotations

import os
from pathlib import Path

SCRIPT = """#!/bin/sh
# Test double for nvidia-smi, written by tests/fake_nvidia_smi.py.
case "$1" in
  --query-gpu=*) cat "{dir}/gpus.csv" ;;
  --query-compute-apps=*) cat "{dir}/apps.csv" ;;
  *) echo "fake nvidia-smi: unexpected arguments $*" >&2; exit 2 ;;
esac
"""

H100 = "0, NVIDIA H100 80GB HBM3, 9.0, 580.82.07, 81559, 81000"
RTX_4070 = "0, NVIDIA GeForce RTX 4070, 8.9, 580.82.07, 12282, 11500"
RTX_3060 = "0, NVIDIA GeForce RTX 3060, 8.6, 580.82.07, 12288, 11800"


def install(directory: Path, monkeypatch, gpus: str = H100, apps: str = "") -> Path:
    """Put the fake nvidia-smi first on PATH; it answers with `gpus` and `apps` (CSV lines)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "gpus.csv").write_text(gpus + "\n")
    (directory / "apps.csv").write_text(apps + ("\n" if apps else ""))
    script = directory / "nvidia-smi"
    script.write_text(SCRIPT.format(dir=directory))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return script
