"""eval: the user's own cases on every variant and runtime, and on the transformers reference, in one table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from smolconv.checks.cases import DEFAULT_MAX_TOKENS, DatasetSpec
from smolconv.checks.eval import DEFAULT_N_CTX, EvalGates, EvalOptions, eval_cases, needs_llama_server
from smolconv.cli import _render
from smolconv.cli._options import (
    DEFAULT_RESERVE_TEXT,
    DEFAULT_VRAM_TEXT,
    LlamaCppOption,
    MaxDropOption,
    MinAccuracyOption,
    ReserveOption,
    ThreadsOption,
    VramOption,
    find_toolchain,
    plan_settings,
)
from smolconv.cli._output import plain, print_failed, progress_reporter
from smolconv.core.choices import BackendKind, ExpectKind
from smolconv.core.progress import no_progress


def eval_command(
    targets: Annotated[list[str], typer.Argument(
        help="Build directories (each variant on llama-server), export-onnx and export-mlx folders, or Ollama tags "
        "(--backend ollama); several give one table.", show_default=False)],
    cases: Annotated[Path | None, typer.Option(
        "--cases", help="A JSONL file, one case a line (docs/eval.md, examples/cases.jsonl).")] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", metavar="ID_OR_FILE", help="Instead of --cases: a Hub dataset id or a local Parquet, CSV or JSON "
        "file (needs the datasets extra: pip install smolconv\\[datasets]).")] = None,
    question_column: Annotated[str, typer.Option("--question-column", help="--dataset: the question.")] = "question",
    answer_column: Annotated[str | None, typer.Option(
        "--answer-column", help="--dataset: the expected answer (a list: any one of them).")] = None,
    image_column: Annotated[str | None, typer.Option(
        "--image-column", help="--dataset: the image (an image column, or paths relative to the file).")] = None,
    answer_match: Annotated[ExpectKind, typer.Option(
        "--answer-match", help="--dataset: how the answer column judges (contains, equals, regex).")]
    = ExpectKind.CONTAINS,
    split: Annotated[str, typer.Option("--split", help="--dataset: the split to read.")] = "train",
    limit: Annotated[int | None, typer.Option("--limit", help="--dataset: the first N rows only.")] = None,
    backend: Annotated[BackendKind | None, typer.Option(
        "--backend", help="ollama: build directories through the models `package --create` made, other targets as "
        "Ollama tags. Default: each target's own runtime.")] = None,
    types: Annotated[list[str] | None, typer.Option(
        "--type", "-t", help="Only these variants (repeatable): a build's Q4_K_M, an ONNX folder's q4, ….")] = None,
    reference: Annotated[bool, typer.Option(
        "--reference/--no-reference", help="Also run transformers in float32 on the checkpoint the targets were made "
        "from (the adapter through peft), and measure agreement with it.")] = True,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="The reference's checkpoint (default: the one the targets record).")] = None,
    min_accuracy: MinAccuracyOption = None,
    max_drop: MaxDropOption = None,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", help="The longest answer of a case that sets no max_tokens.")] = DEFAULT_MAX_TOKENS,
    num_ctx: Annotated[int, typer.Option("--num-ctx", help="Every runtime's context.")] = DEFAULT_N_CTX,
    url: Annotated[str | None, typer.Option("--url", help="--backend ollama: the server (default OLLAMA_HOST).")]
    = None,
    report_dir: Annotated[Path | None, typer.Option(
        "--report-dir", help="Where NAME.json and NAME.png go (default: eval/ in the first build directory).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="The report's name (default: the cases file's).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    vram: VramOption = DEFAULT_VRAM_TEXT,
    reserve: ReserveOption = DEFAULT_RESERVE_TEXT,
    threads: ThreadsOption = None,
    llama_cpp: LlamaCppOption = None,
) -> None:
    """Ask your own cases of every variant and runtime, greedily, beside transformers; exit 1 when a gate fails."""

    spec = None
    if dataset is not None:
        spec = DatasetSpec(dataset, question_column, answer_column, image_column, answer_match, split, limit)
    options = EvalOptions(tuple(targets), cases=cases, dataset=spec, backend=backend, types=tuple(types or ()),
                          reference=reference, checkpoint=checkpoint,
                          gates=EvalGates(min_accuracy, max_drop), max_tokens=max_tokens, num_ctx=num_ctx, url=url,
                          settings=plan_settings(vram, reserve, None, "f16", None), threads=threads,
                          report_dir=report_dir, name=name)
    toolchain = find_toolchain(llama_cpp) if needs_llama_server(options.targets, backend) else None
    if as_json:
        report = eval_cases(options, toolchain, no_progress)
        plain(json.dumps(report.to_dict(), default=str))
    else:
        with progress_reporter() as progress:
            report = eval_cases(options, toolchain, progress)
        _render.eval_report(report)
    if not report.passed:
        print_failed("eval failed", report.failures)
        raise typer.Exit(1)
