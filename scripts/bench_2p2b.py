"""Benchmark: convert and quantize the 2.2b random-weight shape with smolconv, and by hand.

Usage: python scripts/bench_2p2b.py [--work DIR] [--checkpoint DIR] [--types Q4_K_M Q5_K_M Q8_0] [--pairs N]
                                    [--quantize-only]
Needs about 25 GB of free disk. Prints wall time and peak RSS per step for smolconv and for the raw llama.cpp
commands (convert_hf_to_gguf.py twice, llama-quantize) with the same arguments, and the ratio smolconv / raw.
Each step runs --pairs times both ways, the order alternating (smolconv first, then raw first, ...), so a
machine whose load changes hits both alike; the table shows medians. smolconv starts each run on an empty
build directory (a first build: nothing cached, every file hashed). --checkpoint reuses a synthesized 2.2b
checkpoint instead of writing one.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchlib import measure, smolconv

from smolconv.llamacpp.toolchain import find_toolchain


def paired(ours_cmd, raw_cmd, pairs: int, before=lambda: None) -> tuple[dict, dict]:
    """Median seconds and peak RSS of `pairs` runs each of two commands (lists of commands run in a row)."""
    runs = {"ours": [], "raw": []}
    for i in range(pairs):
        order = ("ours", "raw") if i % 2 == 0 else ("raw", "ours")
        for which in order:
            before()
            steps = [measure(cmd, cwd=cwd) for cmd, cwd in (ours_cmd if which == "ours" else raw_cmd)]
            runs[which].append({"seconds": sum(s["seconds"] for s in steps),
                                "peak_rss_mib": max(s["peak_rss_mib"] for s in steps)})

    def median(which):
        return {key: statistics.median(r[key] for r in runs[which]) for key in ("seconds", "peak_rss_mib")}

    return median("ours"), median("raw")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a synthesized 2.2b checkpoint to reuse")
    parser.add_argument("--types", nargs="+", default=["Q4_K_M", "Q5_K_M", "Q8_0"])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--quantize-only", action="store_true",
                        help="measure only quantize, reusing the conversions in --work (made once if missing)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="smolconv-2p2b-"))
    toolchain = find_toolchain()
    out, raw = work / "out", work / "raw"
    if not args.quantize_only:
        shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True, exist_ok=True)

    rows: list[tuple[str, dict, dict | None]] = []
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = work / "smolvlm2-2.2b"
        rows.append(("synth 2.2b", measure(smolconv("synth", "--shape", "2.2b", "--out", str(checkpoint),
                                                    "--force")), None))

    def fresh_build_dir():
        shutil.rmtree(out, ignore_errors=True)

    converter = [sys.executable, toolchain.converter, checkpoint]
    raw_text = [*converter, "--outfile", raw / "F16.gguf", "--outtype", "f16"]
    if not args.quantize_only:
        ours, by_hand = paired(
            [(smolconv("convert", str(checkpoint), "--out", str(out)), None)],
            [(raw_text, toolchain.root),
             ([*converter, "--outfile", raw / "mmproj-f16.gguf", "--outtype", "f16", "--mmproj"], toolchain.root)],
            args.pairs, before=fresh_build_dir)
        rows.append(("convert (text + mmproj)", ours, by_hand))
    if not (out / "smolvlm2-2.2b-F16.gguf").exists():  # the last run was the raw one: convert once more
        measure(smolconv("convert", str(checkpoint), "--out", str(out)))
    if not (raw / "F16.gguf").exists():
        measure(raw_text, cwd=toolchain.root)
    for qtype in args.types:
        target = out / f"smolvlm2-2.2b-{qtype}.gguf"
        ours, by_hand = paired(
            [(smolconv("quantize", str(out), "--type", qtype), None)],
            [([toolchain.tool("llama-quantize"), raw / "F16.gguf", raw / f"{qtype}.gguf", qtype], None)],
            args.pairs, before=lambda target=target: target.unlink(missing_ok=True))
        rows.append((f"quantize {qtype}", ours, by_hand))

    print(f"medians of {args.pairs} paired runs, order alternating; load average now "
          f"{Path('/proc/loadavg').read_text().split()[0] if Path('/proc/loadavg').exists() else '?'}")
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
