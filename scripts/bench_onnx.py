"""Benchmark: export-onnx on a fixture shape (default 2.2b), and the _q4 decoder's speed beside llama-server's Q4_K_M.

Usage: python scripts/bench_onnx.py [--shape 2.2b] [--work DIR] [--checkpoint DIR] [--per-graph] [--graphs G ...]
                                    [--variants V ...] [--fp32-mib N] [--export-only | --decode-only]
                                    [--tokens 64] [--runs 3] [--no-gguf] [--keep]
Needs about 25 GB of free disk (40 GB with --keep) and 14 GB of memory for the 2.2b shape. The export line is
the real command: `smolconv export-onnx` (every graph, every variant and its verify, in one process), its wall
time and the peak RSS of its whole process tree (scripts/_measure.py); the goal is a peak RSS of at most twice
the fp32 graphs' size. `--per-graph` adds the breakdown: each graph's export and each variant of each graph in a
fresh process (smolconv.formats.onnx.export.export_graph / quantize.make_variant, the functions export-onnx calls), so
every line has its own wall time and peak RSS. Then the `_q4` graphs decode --tokens
tokens (end of text ignored, greedy) in smolconv's onnxruntime runner, and the Q4_K_M GGUF of the same checkpoint
(`smolconv build`) decodes the same count in llama-server started by hand; both on this machine's CPU, with
their default thread counts, in pairs (one run of each in turn) so that other load on the machine falls on both
alike.

--checkpoint reuses a synthesized checkpoint instead of writing one to WORK. --graphs and --variants redo only
some lines: the other graphs' files in WORK/onnx-folder stay, and leaving fp32 out of --variants makes the
variants from the fp32 graph already there (an earlier run with --keep). The x fp32 column divides by the fp32
graphs exported in this run, or by --fp32-mib (the whole fp32 folder of an earlier full run) when given.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_serve import PROMPT, paired_decode, spread
from benchlib import measure, smolconv

from smolconv.formats.onnx.export import GRAPHS, SIDE_FILES, graph_file
from smolconv.formats.onnx.quantize import DEFAULT_VARIANTS, VARIANTS

EXPORT = ("import sys; from pathlib import Path; from smolconv.formats.onnx.export import load_model, export_graph, "
          "graph_file; export_graph(load_model(Path(sys.argv[1]), (sys.argv[2],)), sys.argv[2], "
          "graph_file(Path(sys.argv[3]), sys.argv[2]))")
VARIANT = ("import sys; from pathlib import Path; from smolconv.formats.onnx.export import graph_file; "
           "from smolconv.formats.onnx.quantize import make_variant; out = Path(sys.argv[3]); "
           "make_variant(sys.argv[1], graph_file(out, sys.argv[2]), graph_file(out, sys.argv[2], sys.argv[1]))")


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "_data")) if p.exists())


def onnx_decoder(folder: Path):
    """The `_q4` graphs in smolconv's runner, and the prompt's ids; end of text is ignored (fixture weights), as
    llama-server's ignore_eos does."""
    from smolconv.formats.onnx.runtime import OnnxVLM

    model = OnnxVLM(folder, "q4")
    model.eos_ids = set()
    return model, model.tokenizer.encode(PROMPT, add_special_tokens=False).ids


def onnx_rate(model, ids: list[int], tokens: int) -> float:
    from smolconv.runtime.vlm import Generation

    stats = Generation()
    for _token in model.generate(ids, max_tokens=tokens, stats=stats):
        pass
    return (len(stats.tokens) - 1) / stats.decode_s  # the first token comes from the prompt step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="2.2b")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="A synthesized checkpoint of --shape to reuse (default: synthesize one in WORK).")
    parser.add_argument("--per-graph", action="store_true",
                        help="After the whole command, each graph and variant in its own process (the breakdown).")
    parser.add_argument("--graphs", nargs="+", choices=GRAPHS, default=list(GRAPHS),
                        help="Export only these graphs (default: all three).")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS),
                        help="Measure only these (default: what export-onnx makes). Without fp32 the variants "
                             "are made from the fp32 graph already in WORK/onnx-folder.")
    parser.add_argument("--fp32-mib", type=float, default=None,
                        help="The fp32 graphs' total size for the x fp32 column (default: this run's fp32 graphs).")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-gguf", action="store_true", help="Skip the llama-server comparison.")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--export-only", action="store_true", help="Skip the decode comparison.")
    only.add_argument("--decode-only", action="store_true",
                      help="Skip the export: decode with the _q4 graphs already in WORK/onnx-folder.")
    parser.add_argument("--keep", action="store_true",
                        help="Keep every graph (default: delete each variant but _q4 once measured, and the fp32 "
                             "graphs once the variants are made; 2.2b then needs about 25 GB of disk, not 40).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="smolconv-bench-onnx-"))
    checkpoint, out = args.checkpoint or work / f"smolvlm2-{args.shape}", work / "onnx-folder"
    if not (checkpoint / "config.json").is_file():
        if args.checkpoint:
            raise SystemExit(f"{checkpoint}: no config.json; give a checkpoint that `smolconv synth` wrote")
        subprocess.run(smolconv("synth", "--shape", args.shape, "--out", str(checkpoint)), check=True)
    if not args.decode_only:
        export_command(args, checkpoint, work / "export-onnx")
        if args.per_graph:
            export_rows(args, checkpoint, out)
    if not args.export_only:
        decode(args, checkpoint, out, work)


def export_command(args, checkpoint: Path, out: Path) -> None:
    """`smolconv export-onnx` as a user runs it: all graphs, all variants and verify in one process."""
    shutil.rmtree(out, ignore_errors=True)
    variants = [v for v in VARIANTS if v in args.variants and v != "fp32"]
    result = measure(smolconv("export-onnx", str(checkpoint), "--out", str(out), *(a for v in variants
                                                                               for a in ("--type", v))))
    fp32_bytes = args.fp32_mib * 2**20 if args.fp32_mib else sum(size(graph_file(out, g)) for g in GRAPHS)
    peak = result["peak_rss_mib"]
    print(f"{args.shape}: smolconv export-onnx ({', '.join(variants)}, verify included): {result['seconds']:.1f} s, "
          f"peak RSS of the process tree {peak:.0f} MiB ({peak * 2**20 / fp32_bytes:.2f}x the fp32 graphs' "
          f"{fp32_bytes / 2**20:.0f} MiB), largest single process {result['largest_process_mib']:.0f} MiB",
          flush=True)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


def export_rows(args, checkpoint: Path, out: Path) -> None:
    variants = [v for v in VARIANTS if v in args.variants]  # in the table's order
    for graph in args.graphs:
        if "fp32" not in variants and not graph_file(out, graph).is_file():
            raise SystemExit(f"{graph_file(out, graph)} is missing: add fp32 to --variants")
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    for name in SIDE_FILES:
        if (checkpoint / name).is_file():
            shutil.copyfile(checkpoint / name, out / name)

    rows = []

    def step(graph: str, variant: str, cmd: list) -> None:
        result = measure(cmd)
        rows.append((graph, variant, result, size(graph_file(out, graph, variant))))
        print(f"  {graph}{'' if variant == 'fp32' else '_' + variant}: {result['seconds']:.0f} s, peak "
              f"{result['peak_rss_mib']:.0f} MiB", flush=True)

    fp32_bytes = 0
    for graph in args.graphs:  # graph by graph, so that without --keep one fp32 graph at a time is on disk
        for variant in variants:
            remove(graph_file(out, graph, variant))  # a file from an earlier run would be kept as done
        if "fp32" in variants:
            step(graph, "fp32", [sys.executable, "-c", EXPORT, checkpoint, graph, out])
        fp32_bytes += size(graph_file(out, graph))
        for variant in (v for v in variants if v != "fp32"):
            step(graph, variant, [sys.executable, "-c", VARIANT, variant, graph, out])
            if not args.keep and variant != "q4":
                remove(graph_file(out, graph, variant))
        if not args.keep and "fp32" in variants:  # an fp32 graph from an earlier run stays
            remove(graph_file(out, graph))
    rows.sort(key=lambda row: VARIANTS.index(row[1]))

    if args.fp32_mib:
        fp32_bytes = args.fp32_mib * 2**20
        print(f"{args.shape}: fp32 graphs {args.fp32_mib:.0f} MiB in all (--fp32-mib); goal: peak RSS <= 2x that")
    else:
        print(f"{args.shape}: fp32 graphs {fp32_bytes / 2**20:.0f} MiB in all ({', '.join(args.graphs)}); "
              f"goal: peak RSS <= 2x that")
    print(f"{'graph':<24}{'variant':<11}{'seconds':>9}{'peak MiB':>10}{'x fp32':>8}{'file MiB':>10}")
    for graph, variant, result, nbytes in rows:
        peak = result["peak_rss_mib"]
        print(f"{graph:<24}{variant:<11}{result['seconds']:>9.1f}{peak:>10.0f}{peak * 2**20 / fp32_bytes:>8.2f}"
              f"{nbytes / 2**20:>10.1f}")



def decode(args, checkpoint: Path, out: Path, work: Path) -> None:
    model, ids = onnx_decoder(out)
    onnx_rate(model, ids, 8)  # warm-up
    if args.no_gguf:
        rates = [onnx_rate(model, ids, args.tokens) for _ in range(args.runs)]
        print(f"onnxruntime _q4 decode: {spread(rates)} of {args.runs} runs of {args.tokens} tokens")
        return
    paired_decode(checkpoint, work, "onnxruntime _q4", lambda n: onnx_rate(model, ids, n), args.runs, args.tokens)


def remove(graph: Path) -> None:
    for path in (graph, graph.with_name(graph.name + "_data")):
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
