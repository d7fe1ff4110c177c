"""The export commands' tables (ONNX, MLX), from their result objects; the pipeline's are in _render."""

from __future__ import annotations

from rich.table import Table

from smolconv.cli._output import console, plain


def onnx_export(result) -> None:
    table = Table(title=f"ONNX export: {result.out_dir}")
    for column in ("file", "MiB", ""):
        table.add_column(column, overflow="fold")
    for name, path in result.files.items():
        size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "_data")) if p.exists())
        table.add_row(str(path.relative_to(result.out_dir)), f"{size / 2**20:.1f}",
                      "reused" if name in result.reused else "written")
    console.print(table)


def onnx_verify(report) -> None:
    _logits("ONNX fp32 against transformers (float32): last-token logits", report.text, 50)
    plain(f"max NMSE {report.max_nmse:.2e} (gate < {report.max_nmse_gate:.0e}); vision features vs HF "
          f"connector: cosine {report.vision_cosine:.6f} (gate >= {report.min_cosine_gate}), "
          f"NMSE {report.vision_nmse:.2e}")
    if report.variants:
        table = Table(title="each variant against fp32")
        for column in ("variant", "mean KLD", "same top token", "vision cosine"):
            table.add_column(column)
        for v in report.variants:
            table.add_row(v.variant, f"{v.mean_kld:.4f}", f"{100 * v.same_top:.1f}%", f"{v.vision_cosine:.5f}")
        console.print(table)
    plain(f"report: {report.path}")


def mlx_export(result) -> None:
    quantized = "not quantized" if not result.bits.quantized else (
        f"{result.bits.value}-bit" if result.bits.value.isdigit() else result.bits.value)
    table = Table(title=f"MLX export: {result.out_dir}")
    for column in ("", ""):
        table.add_column(column, overflow="fold")
    table.add_row("weights", f"{result.dtype.value}, {quantized}"
                  + (f", groups of {result.group_size}" if result.group_size else ""))
    table.add_row("--bits", f"{result.bits.value}: {result.bits_reason}")
    if result.bits.quantized:
        table.add_row("layers", f"{result.quantized_layers} quantized, {result.float_layers} left in "
                      f"{result.dtype.value}; the vision tower stays in {result.dtype.value}")
    table.add_row("size", f"{result.size_bytes / 2**20:.1f} MiB in {len(result.files)} files")
    table.add_row("fixed for mlx-vlm", "; ".join(result.fixes) or "nothing")
    table.add_row("status", "reused (up to date)" if result.skipped else f"written in {result.seconds:.1f} s")
    console.print(table)


def mlx_verify(report) -> None:
    _logits(f"MLX {report.dtype} against transformers (float32): last-token logits", (*report.text, report.image),
            60)
    gate = f"gate < {report.max_nmse_gate:.0e}" if report.gated else \
        f"not gated: {report.dtype}{', quantized' if report.bits != 'none' else ''}"
    plain(f"max NMSE {report.max_nmse:.2e} ({gate}); vision features against the HF connector: NMSE "
          f"{report.vision_nmse:.2e}, cosine {report.vision_cosine:.6f}")
    if report.quantized is not None:
        q = report.quantized
        plain(f"{report.bits} against the unquantized {report.dtype} export, {q.n_positions} tokens: mean KLD "
              f"{q.mean_kld:.4f}, same top token {100 * q.same_top:.1f}%, vision cosine {q.vision_cosine:.5f}")
    plain(f"report: {report.path}" + (" (reused: export and reference unchanged)" if report.reused else ""))


def _logits(title: str, rows, prompt_chars: int) -> None:
    """An export's prompts against transformers: each prompt's tokens, last-token NMSE and top-1 agreement."""
    table = Table(title=title)
    for column in ("prompt", "tokens", "NMSE", "top-1"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(repr(r.prompt[:prompt_chars]), str(r.n_tokens), f"{r.nmse:.2e}",
                      "same" if r.top1_same else "[red]differs[/]")
    console.print(table)
