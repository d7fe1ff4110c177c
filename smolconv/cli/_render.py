"""Every table and summary the commands print, from the stages' result objects (nothing is computed here)."""

from __future__ import annotations

import re

from rich.markup import escape
from rich.table import Table

from smolconv.checks.doctor import FAIL, OK
from smolconv.checks.eval import percent
from smolconv.cli._output import console, plain
from smolconv.plan import estimate, format_bytes

NOT_MEASURED = "not measured (no CUDA)"


def _fmt(value, spec: str = "{:.2f}") -> str:
    return "" if value is None else spec.format(value)


def doctor(report) -> None:
    table = Table(title="smolconv doctor", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    colour = {OK: "green", FAIL: "red"}
    for check in report.checks:
        table.add_row(check.name, f"[{colour.get(check.status, 'yellow')}]{check.status}[/]", check.detail)
    console.print(table)


def quant_reports(result) -> None:
    if not result.reports:
        return
    table = Table(title="quantized variants (tensor types read back from each GGUF)")
    for column in ("type", "file", "MiB", "bits/weight", "tensor types", "fell back", "time"):
        table.add_column(column, overflow="fold")
    for r in result.reports:
        kinds = ", ".join(f"{t} {n}" for t, n in r.tensor_types.items())
        fell = f"{r.n_fallbacks}/{r.n_tensors}" if r.n_fallbacks else "0"
        took = "reused" if r.skipped else f"{r.seconds:.1f} s"
        table.add_row(r.qtype, r.path.name, f"{r.size / 2**20:.1f}", f"{r.bits_per_weight:.2f}", kinds, fell, took)
    console.print(table)
    for r in result.reports:
        plain(r.plain_summary())


def plans(items, title: str) -> None:
    estimated = any(p.variant.estimated for p in items)
    table = Table(title=title, caption="weights estimated from the config dimensions" if estimated else None)
    # Short headers: ten columns in 100 characters (CI logs), the notes below say what each means.
    for column in ("variant", "files", "num_ctx", "layers", "proj", "KV", "total", "free", "image", "frames"):
        table.add_column(column, no_wrap=True)
    for p in items:
        m, v = p.memory, p.variant
        layers = v.text.n_layer + 1
        table.add_row(
            v.name,
            format_bytes(v.text.weight_bytes + v.projector.weight_bytes),
            str(p.num_ctx),
            f"{p.num_gpu}/{layers}" if p.num_gpu == layers else f"[yellow]{p.num_gpu}/{layers}[/]",
            "GPU" if m.projector_on_device else "[yellow]CPU[/]",
            format_bytes(m.kv_cache),
            format_bytes(m.total),
            format_bytes(p.free),
            str(v.projector.max_image_tokens),
            str(p.video_frames),
        )
    console.print(table)
    if items:
        frame = items[0].variant.projector
        plain("layers: on the GPU (num_gpu); proj: where the vision projector runs; total: GPU memory planned; "
              f"image: tokens of a full-size image; frames: video frames that fit num_ctx at "
              f"{frame.video_frame_tokens} tokens each (1 fps, at most 64, the -video model: one tile a frame)")
    seen: set[str] = set()
    for p in items:
        for note in p.notes:
            shared = all(note in other.notes for other in items)
            if note not in seen:
                plain(note if shared else f"{p.variant.name}: {note}")
                seen.add(note)


def measurements(items, measured: dict, worst: dict, settings) -> None:
    """plan --measure: the estimate beside llama-server's buffers, then the process's own GPU memory."""

    table = Table(title="estimate vs llama-server (this toolchain's backend, everything on one device)")
    for column in ("variant", "num_ctx", "weights est/real", "KV est/real", "total est/real"):
        table.add_column(column)
    for p in items:
        m = measured[p.variant.name]
        e = estimate(p.variant, p.num_ctx, settings, cpu_backend=True)
        table.add_row(p.variant.name, str(p.num_ctx),
                      f"{format_bytes(e.weights + e.projector_weights)} / "
                      f"{format_bytes(m.weights + m.projector_weights)}",
                      f"{format_bytes(e.kv_cache)} / {format_bytes(m.kv_cache)}",
                      f"{format_bytes(e.total)} / {format_bytes(m.total)}")
    console.print(table)

    table = Table(title="the process's GPU memory: idle, after the largest image, after a full context")
    for column in ("variant", "plan total", "CUDA buffers", "idle", "after image", "peak", "outside buffers",
                   "read by"):
        table.add_column(column)
    size = lambda n: "?" if n is None else format_bytes(n)  # noqa: E731
    for p in items:
        case = worst.get(p.variant.name)
        if case is None:
            table.add_row(p.variant.name, format_bytes(p.memory.total), NOT_MEASURED, "", "", "", "", "")
            continue
        buffers = measured[p.variant.name].device_total
        peak = case.peak
        table.add_row(p.variant.name, format_bytes(p.memory.total), format_bytes(buffers), size(case.idle),
                      size(case.after_image), size(peak), size(None if peak is None else peak - buffers), case.how)
    console.print(table)


def packaged(result) -> None:
    table = Table(title="Ollama models")
    for column in ("tag", "Modelfile", "num_ctx", "num_gpu", "fits"):
        table.add_column(column, overflow="fold")
    for m in result.models:
        table.add_row(m.tag, m.modelfile.name, str(m.plan.num_ctx), str(m.plan.num_gpu),
                      "yes" if m.plan.fits else "[yellow]partly[/]")
    console.print(table)
    if result.created:
        c = result.created
        plain(f"created {len(c.created)} models with Ollama {c.version} via the {c.route.upper()} "
              f"({len(c.uploaded)} files uploaded, {len(c.reused)} already there)")
    else:
        plain("To create them in Ollama, run `smolconv package --create` or:")
        for command in result.create_commands():
            plain(f"  {command}")


def published(result) -> None:
    names = ", ".join(f.name for f in result.files)
    if result.folder:
        plain(f"wrote {len(result.files)} files for {result.repo_id} into {result.folder} (nothing uploaded): {names}")
        return
    plain(f"published {len(result.files)} files to https://huggingface.co/{result.repo_id}: {result.url}")
    plain(f"  {result.run_command()}")


def smoke(report) -> None:
    info = report.backend_info
    title = f"smoke: {report.variant} on {report.backend}"
    if info.get("ollama"):
        title += f" (Ollama {info['ollama']})"
    noise = {frozenset({"vision"}): "random vision tower (smolconv fixture): image answers are not judged on "
             "stopping", frozenset({"vision", "text"}): "random weights (smolconv fixture): answers are not judged "
             "on stopping"}.get(report.random_parts)
    table = Table(title=title, caption=noise, collapse_padding=True)
    # One line a case at 100 columns (CI logs): `why` and `answer` are cut with an ellipsis, never wrapped; a failed
    # case's whole reason follows the table, and the JSON report has everything (prompt tok/s included).
    table.add_column("case", no_wrap=True, min_width=max((len(r.name) for r in report.results), default=4))
    table.add_column("result", no_wrap=True, min_width=4)
    table.add_column("why", no_wrap=True, overflow="ellipsis", max_width=26)
    for column, width in (("prompt\ntokens", 6), ("TTFT\ns", 5), ("decode\ntok/s", 6), ("wall\ns", 5)):
        table.add_column(column, justify="right", no_wrap=True, min_width=width)
    table.add_column("answer", no_wrap=True, overflow="ellipsis", min_width=8, max_width=16)
    for r in report.results:
        a = r.answer
        verdict = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        table.add_row(r.name, verdict, escape(_short_reason(r)), _fmt(a and a.prompt_tokens, "{}"),
                      _fmt(a and a.ttft_s), _fmt(a and a.decode_tps, "{:.1f}"), _fmt(a and a.wall_s, "{:.1f}"),
                      escape(" ".join(a.text.split())[:60] or "(empty)") if a else "")
    console.print(table)
    for r in report.results:
        if not r.passed:
            plain(f"{r.name}: {r.reason}")
    plain(f"report: {report.path}")


def _short_reason(result) -> str:
    """The table's `why`: a case another variant ran says which and what they share (the report has the sha256)."""
    covered = re.match(r"covered by \S+ \(same (projector|context)", result.reason)
    if result.covered_by and covered:
        return f"as {result.covered_by}: same {covered.group(1)}"
    return result.reason.replace("stopped by itself, no template text", "stopped, no template text")


def verify(report) -> None:
    text = Table(title="F16 against transformers (float32): last-token logits")
    for column in ("prompt", "tokens", "NMSE", "top-1", "tokenizer"):
        text.add_column(column, overflow="fold")
    for r in report.text:
        text.add_row(repr(r.prompt[:50]), str(r.n_tokens), f"{r.nmse:.2e}",
                     "same" if r.top1_same else "[red]differs[/]",
                     "same ids" if r.tokenizer_same else "[yellow]differs[/]")
    console.print(text)
    plain(f"max NMSE {report.max_nmse:.2e} (gate < {report.gates.max_nmse:.0e}, goal < 1e-06)")
    if report.adapter_kl is not None:
        note = "" if report.adapter_kl > 1e-6 else " — the adapter changes nothing: was it trained (lora_B non-zero)?"
        plain(f"adapter effect: KL(base + adapter ‖ base) up to {report.adapter_kl:.4f} nats{note}")
    v = report.vision
    if v.checked:
        plain(f"projector vs transformers, one {v.n_tokens}-token tile: NMSE {v.nmse:.2e}")
    elif v.could_not_run and "vision" in report.gates.allow_unchecked:
        plain(f"projector: {v.reason} (allowed by --allow-unchecked vision)")
    else:
        plain(f"projector: {v.reason}")
    video = report.video
    if video.checked:
        plain(f"video prompt ({video.frames} frames, video projector): NMSE {video.nmse:.2e} (gate < "
              f"{report.gates.max_video_nmse:.0e}), top-1 "
              f"{'same' if video.top1_same else 'differs'}; {video.tokens_llama_cpp} tokens on llama-server, "
              f"{video.tokens_transformers} in transformers' (llama.cpp adds an overview tile a frame; "
              f"that layout moves transformers' answer by KL {video.layout_kl:.3f})")
    else:
        plain(f"video prompt: {video.reason}")
    if report.kld:
        kld = Table(title=f"each variant against F16 (llama-perplexity --kl-divergence, F16 PPL {report.f16_ppl})")
        for column in ("variant", "mean KLD", "99% KLD", "same top token", "PPL ratio", "gate", "result"):
            kld.add_column(column)
        for k in report.kld:
            kld.add_row(k.variant, f"{k.mean_kld:.4f}", _fmt(k.kld_p99, "{:.4f}"),
                        f"{100 * k.same_top:.1f}%", _fmt(k.ppl_ratio, "{:.4f}"),
                        "not gated" if k.gate is None else f"≤ {k.gate}",
                        "[green]pass[/]" if k.passed else "[bold red]FAIL[/]")
        console.print(kld)
    elif "kld" in report.skipped:
        plain("KL divergence of the variants: not measured (--skip-check kld)")
    plain(f"report: {report.path}")


def eval_report(report) -> None:
    """eval: one row per runtime and variant (the reference first), then each case's answers side by side."""
    cases = report.cases
    table = Table(title=f"eval: {cases.name} ({len(cases.cases)} cases, {len(cases.labelled)} labelled), greedy, "
                  "no repeat penalty")
    for column in ("runtime", "variant", "MiB", "accuracy", "agreement", "first token", "time s"):
        table.add_column(column, overflow="fold")
    for run in report.runs:
        accuracy = f"{percent(run.accuracy)} ({run.correct}/{run.labelled})" if run.labelled else ""
        table.add_row(run.runtime, run.variant, _fmt(run.size_bytes and run.size_bytes / 2**20, "{:.1f}"), accuracy,
                      "reference" if run.is_reference else percent(run.agreement),
                      "" if run.is_reference else percent(run.first_token_agreement), f"{run.seconds:.1f}")
    console.print(table)
    answers = Table(title="answers (✓ right, ✗ wrong; = the reference's answer, ≈ its first token only)")
    answers.add_column("case", overflow="fold")
    answers.add_column("expect", overflow="fold")
    for run in report.runs:
        answers.add_column(run.label, overflow="fold")
    for case in cases.cases:
        row = [case.id, case.expect.describe() if case.expect else ""]
        for run in report.runs:
            a = run.answers.get(case.id)
            if a is None:
                row.append("")
                continue
            mark = {True: "✓ ", False: "✗ ", None: ""}[a.correct]
            same = "= " if a.agrees else "≈ " if a.first_token_agrees else ""
            text = f"(error) {a.error}" if a.text is None else (" ".join(a.text.split())[:40] or "(empty)")
            row.append(f"{mark}{same}{text}")
        answers.add_row(*row)
    console.print(answers)
    for note in report.notes:
        plain(f"note: {note}")
    plain(f"report: {report.path}")
    if report.plot:
        plain(f"picture: {report.plot}")


def batch_summary(result) -> None:
    """batch: one row per entry, then why each was skipped or built and what failed."""
    count = len(result.entries)
    table = Table(title=f"batch: {result.recipe.name} ({count} {'entry' if count == 1 else 'entries'}, "
                  f"{result.seconds:.0f} s)")
    for column in ("entry", "formats", "result", "time", "published"):
        table.add_column(column, overflow="fold")
    colour = {"built": "green", "skipped": "cyan", "failed": "red"}
    for e in result.entries:
        table.add_row(escape(e.name), ", ".join(e.formats), f"[{colour.get(e.outcome, 'yellow')}]{e.outcome}[/]",
                      f"{e.seconds:.1f} s", escape(e.published or ""))
    console.print(table)
    for e in result.entries:
        for line in ([e.reason] if e.reason else []) + e.failures:
            plain(f"{e.name}: {line}")
        if e.url:
            plain(f"{e.name}: {e.url}")
    plain(f"summary: {result.summary_path}")


def job_specs(specs) -> None:
    """batch --on hf-jobs --dry-run: every job as it would be submitted (secrets by name only)."""
    import json

    import typer

    typer.echo(json.dumps([spec.to_dict() for spec in specs], indent=2))  # as it is: no markup, no wrapping


def submitted_jobs(jobs) -> None:
    table = Table(title="Hugging Face Jobs submitted")
    for column in ("entry", "job", "kind", "url"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        table.add_row(escape(job.entry), job.id, "schedule" if job.scheduled else "job", job.url or "")
    console.print(table)


def job_states(states) -> None:
    if not states:
        plain("no jobs found for these entries (labels smolconv-recipe / smolconv-entry)")
        return
    table = Table(title="Hugging Face Jobs of the recipe's entries")
    for column in ("entry", "job", "stage", "flavor", "created", "note"):
        table.add_column(column, overflow="fold")
    for s in states:
        table.add_row(escape(s.entry), s.id, s.stage, s.flavor or "", s.created or "", escape(s.message or ""))
    console.print(table)
