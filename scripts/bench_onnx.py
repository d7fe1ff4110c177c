"""Benchmark: export-onnx on a fixture shape (default 2.2b), and the _q4 decoder's speed beside llama-server's Q4_K_M.

Usage: python scripts/bench_onnx.py [--shape 2.2b] [--work DIR] [--tokens 64] [--runs 3] [--no-gguf]
Needs about 40 GB of free disk and 24 GB of memory for the 2.2b shape. Each graph's export and each variant of
each graph runs in a fresh process (smolconv.onnx.export.export_graph / quantize.make_variant, the functions
`smolconv export-onnx` calls), so every line has its own wall time and peak RSS; the goal is a peak RSS of at
most twice the fp32 graphs' size. Then the `_q4` graphs decode --tokens tokens (end of text ignored, greedy) in
smolconv's onnxruntime runner, and the Q4_K_M GGUF of the same checkpoint (`smolconv build`) decodes the same
count in llama-server started by hand; both on this machine's CPU, with their default thread counts.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_serve import PROMPT
from bench_serve import measure as measure_server
from benchlib import measure, smolconv

from smolconv.onnx.export import GRAPHS, SIDE_FILES, graph_file
from smolconv.onnx.quantize import VARIANTS

EXPORT = ("import sys; from pathlib import Path; from smolconv.onnx.export import load_model, export_graph, "
          "graph_file; export_graph(load_model(Path(sys.argv[1])), sys.argv[2], graph_file(Path(sys.argv[3]), "
          "sys.argv[2]))")
VARIANT = ("import sys; from pathlib import Path; from smolconv.onnx.export import graph_file; "
           "from smolconv.onnx.quantize import make_variant; out = Path(sys.argv[3]); "
           "make_variant(sys.argv[1], graph_file(out, sys.argv[2]), graph_file(out, sys.argv[2], sys.argv[1]))")


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "_data")) if p.exists())


def onnx_decode(folder: Path, tokens: int, runs: int) -> list[float]:
    from smolconv.onnx.runtime import Generation, OnnxVLM

    model = OnnxVLM(folder, "q4")
    model.eos_ids = set()  # fixture weights: decode exactly `tokens`, as llama-server's ignore_eos does
    ids = model.tokenizer.encode(PROMPT, add_special_tokens=False).ids
    rates = []
    for _ in range(runs + 1):  # the first is a warm-up
        stats = Generation()
        for _token in model.generate(ids, max_tokens=tokens, stats=stats):
            pass
        rates.append((len(stats.tokens) - 1) / stats.decode_s)
    return rates[1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="2.2b")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-gguf", action="store_true", help="Skip the llama-server comparison.")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="smolconv-bench-onnx-"))
    checkpoint, out = work / f"smolvlm2-{args.shape}", work / "onnx-folder"
    if not (checkpoint / "config.json").is_file():
        subprocess.run(smolconv("synth", "--shape", args.shape, "--out", str(checkpoint)), check=True)
    shutil.rmtree(out, ignore_errors=True)
    (out / "onnx").mkdir(parents=True)
    for name in SIDE_FILES:
        if (checkpoint / name).is_file():
            shutil.copyfile(checkpoint / name, out / name)

    rows = []
    for graph in GRAPHS:
        rows.append((graph, "fp32", measure([sys.executable, "-c", EXPORT, checkpoint, graph, out])))
    fp32_bytes = sum(size(graph_file(out, g)) for g in GRAPHS)
    for variant in VARIANTS[1:]:
        for graph in GRAPHS:
            rows.append((graph, variant, measure([sys.executable, "-c", VARIANT, variant, graph, out])))

    print(f"{args.shape}: fp32 graphs {fp32_bytes / 2**20:.0f} MiB in all; goal: peak RSS <= 2x that")
    print(f"{'graph':<24}{'variant':<11}{'seconds':>9}{'peak MiB':>10}{'x fp32':>8}{'file MiB':>10}")
    for graph, variant, result in rows:
        peak = result["peak_rss_mib"]
        print(f"{graph:<24}{variant:<11}{result['seconds']:>9.1f}{peak:>10.0f}{peak * 2**20 / fp32_bytes:>8.2f}"
              f"{size(graph_file(out, graph, variant)) / 2**20:>10.1f}")

    rates = onnx_decode(out, args.tokens, args.runs)
    print(f"onnxruntime _q4 decode: {statistics.median(rates):.1f} tok/s (median of {args.runs} runs of {args.tokens} "
          f"tokens; {min(rates):.1f}-{max(rates):.1f})")
    if args.no_gguf:
        return
    from smolconv.plan import build_variants
    from smolconv.serve import free_port
    from smolconv.toolchain import find_toolchain

    build = work / "gguf"
    subprocess.run(smolconv("build", str(checkpoint), "--out", str(build), "--type", "Q4_K_M", "--no-verify",
                            "--no-smoke", "--preset", "general"), check=True, stdout=subprocess.DEVNULL)
    variant = build_variants(build, ("Q4_K_M",))[0]
    port = free_port()
    served = measure_server([str(find_toolchain().tool("llama-server")), "-m", str(variant.text_path), "--port",
                             str(port)], port, args.runs, args.tokens, signal.SIGTERM)
    print(f"llama-server Q4_K_M decode: {statistics.median(served['decode']):.1f} tok/s (median of {args.runs} runs "
          f"of {args.tokens} tokens; {min(served['decode']):.1f}-{max(served['decode']):.1f})")


if __name__ == "__main__":
    main()
