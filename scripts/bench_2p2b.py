"""Benchmark: convert and quantize the 2.2b random-weight shape with smolconv, and by hand.

Usage: python scripts/bench_2p2b.py [--work DIR] [--types Q4_K_M Q5_K_M Q8_0]
Needs about 25 GB of free disk. Prints wall time and peak RSS per step for smolconv and for the raw llama.cpp
commands (convert_hf_to_gguf.py, llama-quantize) with the same arguments, and the ratio smolconv / raw.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchlib import measure, smolconv

from smolconv.toolchain import find_toolchain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--types", nargs="+", default=["Q4_K_M", "Q5_K_M", "Q8_0"])
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="smolconv-2p2b-"))
    toolchain = find_toolchain()
    checkpoint, out, raw = work / "smolvlm2-2.2b", work / "out", work / "raw"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)

    rows: list[tuple[str, dict, dict | None]] = []
    rows.append(("synth 2.2b", measure(smolconv("synth", "--shape", "2.2b", "--out", str(checkpoint), "--force")),
                 None))
    ours = measure(smolconv("convert", str(checkpoint), "--out", str(out)))
    text = measure([sys.executable, toolchain.converter, checkpoint, "--outfile", raw / "F16.gguf", "--outtype", "f16"],
                   cwd=toolchain.root)
    mmproj = measure([sys.executable, toolchain.converter, checkpoint, "--outfile", raw / "mmproj-f16.gguf",
                      "--outtype", "f16", "--mmproj"], cwd=toolchain.root)
    by_hand = {"seconds": text["seconds"] + mmproj["seconds"],
               "peak_rss_mib": max(text["peak_rss_mib"], mmproj["peak_rss_mib"])}
    rows.append(("convert (text + mmproj)", ours, by_hand))
    for qtype in args.types:
        ours = measure(smolconv("quantize", str(out), "--type", qtype))
        by_hand = measure([toolchain.tool("llama-quantize"), raw / "F16.gguf", raw / f"{qtype}.gguf", qtype])
        rows.append((f"quantize {qtype}", ours, by_hand))

    print(f"{'step':<26}{'smolconv s':>11}{'raw s':>9}{'ratio':>7}{'smolconv MiB':>14}{'raw MiB':>9}{'ratio':>7}")
    for name, ours, by_hand in rows:
        if by_hand is None:
            print(f"{name:<26}{ours['seconds']:>11.1f}{'':>9}{'':>7}{ours['peak_rss_mib']:>14.0f}")
            continue
        print(f"{name:<26}{ours['seconds']:>11.1f}{by_hand['seconds']:>9.1f}"
              f"{ours['seconds'] / by_hand['seconds']:>7.2f}{ours['peak_rss_mib']:>14.0f}"
              f"{by_hand['peak_rss_mib']:>9.0f}{ours['peak_rss_mib'] / by_hand['peak_rss_mib']:>7.2f}")
    for path in sorted(out.glob("*.gguf")):
        print(f"{path.name}: {path.stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
