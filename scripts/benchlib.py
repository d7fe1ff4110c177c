"""Helpers shared by the benchmark scripts (they print numbers; nothing here asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(cmd: list[str], cwd: Path | None = None) -> dict:
    """Wall time and peak RSS of one command, measured in a fresh process so steps do not share a peak."""
    out = subprocess.run([sys.executable, str(HERE / "_measure.py"), *map(str, cmd)], capture_output=True,
                         text=True, check=True, cwd=cwd)
    result = json.loads(out.stdout)
    if result["returncode"] != 0:
        raise SystemExit(f"benchmark command failed ({result['returncode']}): {' '.join(map(str, cmd))}")
    return result


def smolconv(*args: str) -> list[str]:
    return [sys.executable, "-m", "smolconv", *args]
