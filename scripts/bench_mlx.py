"""Benchmark: export-mlx per --bits on a fixture shape, and the 4-bit export's decode speed beside llama-server's
Q4_K_M of the same checkpoint.

Usage: python scripts/bench_mlx.py [--shape 256m] [--work DIR] [--checkpoint DIR] [--bits B ...] [--dtype bf16]
                                   [--quality | --no-quality] [--kld-tokens 512] [--tokens 16] [--runs 3]
                                   [--no-gguf] [--export-only | --decode-only]

1. Each --bits is exported in a fresh process (smolconv.formats.mlx.export.export_mlx, what `smolconv export-mlx` runs,
   without verify): wall time, and the peak of the summed RSS of the whole process tree (smolconv and mlx-vlm's
   converter, sampled every 50 ms; pages two processes share count twice), and the folder's size.
2. --quality (the default for 256m, whose text is SmolLM2-135M's real weights; random weights say nothing): each
   export against the unquantized one in the same dtype, built in memory as verify builds it: mean KL divergence
   of the next-token distributions over the first --kld-tokens tokens of the GGUF verify's KLD text, how often the
   top token is the same, and how many of a few questions each answers right (greedy). Quantized layers are
   expanded to the dtype for this, as verify does on the CPU (the same weights; see smolconv/formats/mlx/verify.py).
3. The 4-bit export as it is (MLX's quantized kernels) decodes --tokens tokens greedily after the prompt, end of
   text ignored, and llama-server decodes as many of the same prompt with the Q4_K_M GGUF that `smolconv build`
   makes of the same checkpoint; both on this machine's CPU with their default thread counts, in pairs (one run
   of each in turn) so that other load falls on both alike.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_serve import PROMPT, paired_decode, spread
from benchlib import smolconv

from smolconv.core.choices import MlxBits, MlxDtype
from smolconv.formats.mlx.export import default_out_dir

EXPORT = ("import sys; from pathlib import Path; from smolconv.core.choices import MlxBits as Bits, MlxDtype as Dtype; "
          "from smolconv.formats.mlx.export import ExportMlxOptions, "
          "export_mlx; export_mlx(ExportMlxOptions(sys.argv[1], Path(sys.argv[2]), bits=Bits(sys.argv[3]), "
          "dtype=Dtype(sys.argv[4]), force=True))")
# Questions the 256m fixture (SmolLM2-135M's text) answers right unquantized in bfloat16, and the word each answer
# must hold (it answers few others: its image-token rows are random and it often ends its turn at once).
QUESTIONS = tuple((f"What is the capital of {country}?", city) for country, city in (
    ("France", "paris"), ("Japan", "tokyo"), ("Germany", "berlin"), ("Canada", "ottawa"), ("Russia", "moscow")))


def measure_tree(cmd: list[str]) -> dict:
    """Wall time of `cmd` and the peak of its process tree's summed RSS."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        total = 0
        try:
            for p in (root, *root.children(recursive=True)):
                total += p.memory_info().rss
        except psutil.Error:  # a process ended between the listing and the reading
            pass
        peak = max(peak, total)
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"export failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    return {"seconds": seconds, "peak_tree_mib": peak / 2**20}


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix == ".safetensors") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="256m")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="A synthesized checkpoint of --shape to reuse (default: synthesize one in WORK).")
    parser.add_argument("--bits", nargs="+", choices=[b.value for b in MlxBits],
                        default=["none", "4", "mixed_4_6", "mixed_4_8", "8"])
    parser.add_argument("--dtype", choices=[d.value for d in MlxDtype], default="bf16")
    parser.add_argument("--quality", action=argparse.BooleanOptionalAction, default=None,
                        help="Measure each export against the unquantized one (default: on for 256m only).")
    parser.add_argument("--kld-tokens", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-gguf", action="store_true", help="Skip the llama-server comparison.")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--export-only", action="store_true", help="Skip the decode comparison.")
    only.add_argument("--decode-only", action="store_true", help="Decode with the 4-bit export already in WORK.")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="smolconv-bench-mlx-"))
    checkpoint = args.checkpoint or work / f"smolvlm2-{args.shape}"
    if not (checkpoint / "config.json").is_file():
        if args.checkpoint:
            raise SystemExit(f"{checkpoint}: no config.json; give a checkpoint that `smolconv synth` wrote")
        subprocess.run(smolconv("synth", "--shape", args.shape, "--out", str(checkpoint)), check=True)
    print(f"{args.shape} fixture {checkpoint}; work {work}", flush=True)
    folders = {bits: work / default_out_dir(checkpoint.name, MlxBits(bits)).name for bits in args.bits}
    if not args.decode_only:
        export_rows(args, checkpoint, folders)
        if args.quality if args.quality is not None else args.shape == "256m":
            quality_rows(args, checkpoint, folders)
    if not args.export_only:
        decode(args, checkpoint, work / default_out_dir(checkpoint.name, MlxBits.FOUR).name, work)


def export_rows(args, checkpoint: Path, folders: dict[str, Path]) -> None:
    print(f"{'--bits':<11}{'seconds':>9}{'peak tree MiB':>15}{'weights MiB':>13}", flush=True)
    for bits, folder in folders.items():
        shutil.rmtree(folder, ignore_errors=True)
        result = measure_tree([sys.executable, "-c", EXPORT, str(checkpoint), str(folder), bits, args.dtype])
        print(f"{bits:<11}{result['seconds']:>9.1f}{result['peak_tree_mib']:>15.0f}{folder_mib(folder):>13.1f}",
              flush=True)


def quality_rows(args, checkpoint: Path, folders: dict[str, Path]) -> None:
    import mlx.core as mx
    import numpy as np
    from transformers import AutoTokenizer

    from smolconv.formats.mlx.verify import load_export, load_unquantized
    from smolconv.reference.metrics import log_softmax, next_token_kld
    from smolconv.reference.prompts import KLD_TEXT

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    text = tokenizer(KLD_TEXT.read_text(), add_special_tokens=False)["input_ids"][:args.kld_tokens]

    def logprobs(model) -> np.ndarray:
        logits = model.language_model(mx.array([text])).logits[0].astype(mx.float32)
        return log_softmax(np.array(logits, np.float64))

    def right_answers(model) -> tuple[int, list[str]]:
        answers = []
        for question, _ in QUESTIONS:
            ids = tokenizer(f"<|im_start|>User: {question}<end_of_utterance>\nAssistant:",
                            add_special_tokens=False)["input_ids"]
            start = len(ids)
            for _ in range(12):
                ids.append(int(mx.argmax(model.language_model(mx.array([ids])).logits[0, -1])))
            answer = tokenizer.decode(ids[start:])
            answers.append(answer.split("<end_of_utterance>")[0].split("<|im_end|>")[0].strip())
        return sum(word in a.lower() for a, (_, word) in zip(answers, QUESTIONS, strict=True)), answers

    base = load_unquantized(checkpoint, args.dtype)
    base_logprobs = logprobs(base)
    base_right, _ = right_answers(base)
    del base
    print(f"against the unquantized {args.dtype} export, {len(text)} tokens of {KLD_TEXT.name}; questions: "
          f"{len(QUESTIONS)} (the unquantized model answers {base_right} right)", flush=True)
    print(f"{'--bits':<11}{'mean KLD':>10}{'same top':>10}{'right':>7}  answers", flush=True)
    for bits, folder in folders.items():
        model, _ = load_export(folder)
        kld, same = next_token_kld(base_logprobs, logprobs(model))
        right, answers = right_answers(model)
        del model
        print(f"{bits:<11}{kld:>10.4f}{100 * same:>9.1f}%{right:>5}/{len(QUESTIONS)}  "
              + " | ".join(a[:40].replace("\n", " ") for a in answers), flush=True)


def mlx_rate(model, ids: list[int], tokens: int) -> float:
    """Greedy decode with mlx-vlm's KV cache: tokens per second after the prompt step."""
    import mlx.core as mx
    from mlx_vlm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model.language_model)
    token = mx.argmax(model.language_model(mx.array([ids]), cache=cache).logits[0, -1])
    mx.eval(token)
    start = time.perf_counter()
    for _ in range(tokens - 1):
        token = mx.argmax(model.language_model(token.reshape(1, 1), cache=cache).logits[0, -1])
        mx.eval(token)
    return (tokens - 1) / (time.perf_counter() - start)


def decode(args, checkpoint: Path, folder: Path, work: Path) -> None:
    from mlx_vlm.utils import load_model
    from transformers import AutoTokenizer

    if not (folder / "config.json").is_file():
        raise SystemExit(f"{folder}: no 4-bit export; add 4 to --bits (or drop --decode-only)")
    model = load_model(folder)  # as it is: MLX's quantized kernels
    ids = AutoTokenizer.from_pretrained(checkpoint)(PROMPT, add_special_tokens=False)["input_ids"]
    mlx_rate(model, ids, 2)  # warm-up
    if args.no_gguf:
        rates = [mlx_rate(model, ids, args.tokens) for _ in range(args.runs)]
        print(f"MLX 4-bit decode (CPU): {spread(rates)} of {args.runs} runs of {args.tokens} tokens")
        return
    paired_decode(checkpoint, work, "MLX 4-bit (CPU)", lambda n: mlx_rate(model, ids, n), args.runs, args.tokens)


if __name__ == "__main__":
    main()
