"""Benchmark: what an adapter costs on the 2.2b shape, beside converting the plain checkpoint.

Usage: python scripts/bench_adapter.py [--work DIR] [--shape 2.2b] [--rank 16]
Needs about 30 GB of free disk and about 20 GB of memory for the 2.2b shape (the merge holds it in float32).
Prints wall time and peak RSS of: `smolconv convert` of the plain checkpoint, the same with a recipe-style
LoRA (--adapter-format merge: merge in float32, save, convert), and a text-only LoRA as a GGUF LoRA
(--adapter-format gguf, on a build directory whose base is already converted: only the adapter is).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchlib import measure, smolconv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.adapters import RECIPE_TARGETS, TEXT_ONLY_TARGETS, make_adapter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--shape", default="2.2b")
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="smolconv-adapter-"))
    checkpoint = work / f"smolvlm2-{args.shape}"
    if not (checkpoint / "config.json").is_file():
        measure(smolconv("synth", "--shape", args.shape, "--out", str(checkpoint), "--force"))
    recipe, text_only = work / "recipe-lora", work / "text-lora"
    for adapter, targets in ((recipe, RECIPE_TARGETS), (text_only, TEXT_ONLY_TARGETS)):
        if not (adapter / "adapter_config.json").is_file():
            make_adapter(checkpoint, adapter, targets=targets, r=args.rank, alpha=2 * args.rank)
    plain, merged, gguf = work / "plain", work / "merged", work / "gguf"
    for out in (plain, merged, gguf):
        shutil.rmtree(out, ignore_errors=True)

    rows = [
        ("convert, plain checkpoint", measure(smolconv("convert", str(checkpoint), "--out", str(plain)))),
        ("merge + convert (recipe LoRA)", measure(smolconv("convert", str(checkpoint), "--out", str(merged),
                                                           "--adapter", str(recipe)))),
    ]
    shutil.copytree(plain, gguf)  # the base is converted already: only the adapter is converted
    rows.append(("GGUF LoRA on a converted base", measure(smolconv(
        "convert", str(checkpoint), "--out", str(gguf), "--adapter", str(text_only), "--adapter-format", "gguf"))))

    print(f"shape {args.shape}, LoRA rank {args.rank}")
    print(f"{'step':<34}{'seconds':>9}{'peak RSS MiB':>14}")
    for name, result in rows:
        print(f"{name:<34}{result['seconds']:>9.1f}{result['peak_rss_mib']:>14.0f}")
    for path in sorted([*merged.glob("merged/*.safetensors"), *gguf.glob("*LoRA*.gguf")]):
        print(f"{path.relative_to(work)}: {path.stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
