"""Benchmark: `smolconv build` on the 256m fixture, then again with nothing changed.

Usage: python scripts/bench_rerun.py [--work DIR] [--checks]
Prints the first run's and the rerun's wall time side by side. By default the build stops after package
(--no-verify --no-smoke); --checks includes verify and smoke, which the rerun reuses when they passed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchlib import measure, smolconv


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=None, help="Work directory (default: a temporary one).")
    parser.add_argument("--checks", action="store_true", help="Also run verify and smoke (about 15 min more).")
    args = parser.parse_args()
    checks = [] if args.checks else ["--no-verify", "--no-smoke"]
    work = args.work or Path(tempfile.mkdtemp(prefix="smolconv-bench-"))
    checkpoint, out = work / "smolvlm2-256m", work / "out"
    shutil.rmtree(out, ignore_errors=True)
    measure(smolconv("synth", "--shape", "256m", "--out", str(checkpoint), "--force"))
    first = measure(smolconv("build", str(checkpoint), "--out", str(out), *checks))
    rerun = measure(smolconv("build", str(checkpoint), "--out", str(out), *checks))
    print(f"{'run':<8}{'wall s':>10}")
    print(f"{'first':<8}{first['seconds']:>10.2f}")
    print(f"{'rerun':<8}{rerun['seconds']:>10.2f}")
    print(f"rerun / first = {rerun['seconds'] / first['seconds']:.3f}")


if __name__ == "__main__":
    main()
