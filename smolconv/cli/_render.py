"""Every table and summary the commands print, from the stages' result objects (nothing is computed here)."""

from __future__ import annotations

from rich.table import Table

from smolconv.cli._output import console, plain

NOT_MEASURED = "not measured (no CUDA)"


def _fmt(value, spec: str = "{:.2f}") -> str:
    return "" if value is None else spec.format(value)


def doctor(report) -> None:
    from smolconv.doctor import FAIL, OK

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
    from smolconv.plan import format_bytes

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
    from smolconv.plan import estimate, format_bytes

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
    table = Table(title=title, caption=noise)
    table.add_column("case", no_wrap=True)
    for column in ("result", "why", "prompt tok", "TTFT s", "prompt tok/s", "decode tok/s", "wall s", "answer"):
        table.add_column(column, overflow="fold")
    for r in report.results:
        a = r.answer
        verdict = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        table.add_row(r.name, f"{verdict} on {r.covered_by}" if r.covered_by else verdict, r.reason,
                      _fmt(a and a.prompt_tokens, "{}"), _fmt(a and a.ttft_s), _fmt(a and a.prompt_tps, "{:.1f}"),
                      _fmt(a and a.decode_tps, "{:.1f}"), _fmt(a and a.wall_s, "{:.1f}"),
                      (a.text.strip()[:60] or "(empty)") if a else "")
    console.print(table)
    plain(f"report: {report.path}")


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
