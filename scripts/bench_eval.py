"""How long `smolconv eval` takes: 20 text cases on the 256m fixture's three variants (Q4_K_M, Q5_K_M, Q8_0 on
llama-server) and on the transformers reference (float32), greedy, at most 32 tokens an answer.

    .venv/bin/python scripts/bench_eval.py [--work DIR] [--threads N] [--max-tokens N]

Prints, per run: the whole run (starting the backend or loading the reference, then every case), the answering
alone, seconds a case, and the tokens generated; then the whole eval. Nothing is asserted (tests assert behaviour,
this prints numbers). The fixture and its build are made once in the work folder and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from smolconv.checks.eval import EvalOptions, eval_cases
from smolconv.fixtures.synth import SynthOptions, synth_checkpoint
from smolconv.llamacpp.toolchain import find_toolchain
from smolconv.pipeline import BuildOptions, build

QUESTIONS = [
    ("What is the capital of France?", "Paris"), ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Japan?", "Tokyo"), ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"), ("How many legs does a spider have?", "eight"),
    ("What colour is the sky on a clear day?", "blue"), ("What is 2 + 2?", "4"),
    ("Which planet is known as the Red Planet?", "Mars"), ("What do bees make?", "honey"),
    ("What is frozen water called?", "ice"), ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("Write one sentence about the sea.", None), ("Name a fruit.", None), ("Say hello in French.", None),
    ("Describe a cat in a few words.", None), ("What is a good name for a dog?", None),
    ("Give me a word that rhymes with cat.", None), ("What is your favourite season?", None),
    ("Tell me a fact about the moon.", None),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("out/bench-eval"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    toolchain = find_toolchain(None)
    fixture = synth_checkpoint(SynthOptions(shape="256m", out=work / "fixture", vision_layers=2)).path
    out = work / "build"
    build(BuildOptions(model=str(fixture), out_dir=out, presets=("general",), verify=False, smoke=False,
                       threads=args.threads), toolchain)
    cases = work / "bench.jsonl"
    cases.write_text("".join(json.dumps({"id": f"q{n + 1}", "question": q}
                                        | ({"expect": {"contains": a}} if a else {})) + "\n"
                             for n, (q, a) in enumerate(QUESTIONS)))
    started = time.monotonic()
    report = eval_cases(EvalOptions((str(out),), cases=cases, max_tokens=args.max_tokens, threads=args.threads),
                        toolchain)
    total = time.monotonic() - started
    load = os.getloadavg()
    print(f"\nsmolconv eval: {len(QUESTIONS)} text cases, at most {args.max_tokens} tokens, on {os.cpu_count()} CPUs "
          f"(load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})\n")
    print(f"{'run':22} {'whole run s':>12} {'answering s':>12} {'s a case':>9} {'tokens':>7} {'accuracy':>9} "
          f"{'agreement':>10}")
    for run in report.runs:
        tokens = sum(a.completion_tokens or 0 for a in run.answers.values())
        accuracy = "" if run.accuracy is None else f"{100 * run.accuracy:.0f}%"
        agreement = "" if run.agreement is None else f"{100 * run.agreement:.0f}%"
        print(f"{run.label:22} {run.seconds:12.1f} {run.answer_seconds:12.1f} "
              f"{run.answer_seconds / len(run.answers):9.2f} {tokens:7d} {accuracy:>9} {agreement:>10}")
    print(f"\nthe whole eval (reference, three variants, the report and its picture): {total:.1f} s")
    print(f"report: {report.path}")


if __name__ == "__main__":
    main()
