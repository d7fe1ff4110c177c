"""Benchmark: wall time of `smolconv setup` when the toolchain is already installed (target: under 5 s).

Usage: python scripts/bench_setup.py [--runs N]
Prints one line per run and the median, for the CLI as a user runs it (process start included).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = []
    for run in range(1, args.runs + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "smolconv", "setup"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
        print(f"run {run}: smolconv setup (installed) {times[-1]:.2f} s")
    print(f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {args.runs} runs")


if __name__ == "__main__":
    main()
