"""What a healthy small model's quants score on verify's KL divergence, and what broken ones score: the table that
smolconv.reference.gates' per-size defaults are chosen from (docs/checks.md, "verify's KLD gates").

No real weights are needed. The 256m fixture's text weights are SmolLM2-135M-Instruct dequantized from a Q4_1 GGUF
(token embedding and head from Q8_0): every value sits on its block's grid, which llama-quantize's Q4_K/Q5_0 grids
then fit unusually well or unusually badly. Dithering puts them back in the continuum a bf16 checkpoint has: each
value moves by uniform noise within its own grid step (a Q4_1 block of 32: step (max - min) / 15; a Q8_0 block:
max|x| / 127), so the model is the same model to within its original quantization, with weights as continuous as
the real checkpoint's. That checkpoint is built (F16, Q4_K_M, Q5_K_M, Q8_0) and each quant measured against F16 as
verify does (llama-perplexity --kl-divergence on smolconv's KLD text, n_ctx 512); then copies of the quants are
damaged the way a converter or quantizer bug would damage them (one tensor's scales wrong by a factor, two rows of
one tensor swapped) and measured the same way. The undithered fixture is measured too, for comparison.

    .venv/bin/python scripts/kld_gates.py [--work DIR] [--threads N]
    .venv/bin/python scripts/kld_gates.py --checkpoint ~/models/SmolVLM2-2.2B-Instruct   # a real checkpoint instead

Prints one table (and writes it as JSON into the work folder). About 15 minutes on 2 cores for the 256M shape.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from smolconv.formats.gguf.verify import compare_quants
from smolconv.llamacpp.toolchain import find_toolchain
from smolconv.pipeline import BuildOptions, build
from smolconv.record.builddir import BuildDir
from smolconv.reference.gates import DEFAULT_MAX_KLD_BY_SIZE, Gates
from smolconv.reference.prompts import KLD_TEXT

TYPES = ("Q4_K_M", "Q5_K_M", "Q8_0")
BLOCK = 32
# Where each block type keeps its f16 scale fields: (bytes a block, byte offsets of the fields to scale). Scaling
# every one of them scales every value the block decodes to (x = d*q, x = d*q + m, x = d*sc*q - dmin*m).
SCALE_FIELDS = {"Q8_0": (34, (0,)), "Q4_0": (18, (0,)), "Q4_1": (20, (0, 2)), "Q5_0": (22, (0,)),
                "Q5_1": (24, (0, 2)), "Q4_K": (144, (0, 2)), "Q5_K": (176, (0, 2)), "Q6_K": (210, (208,))}
# The damages, on one mid-depth layer (the kinds of error a converter or quantizer bug makes).
DAMAGES = (
    ("ffn_down scales x1.25", "blk.15.ffn_down.weight", "scale", 1.25),
    ("ffn_down scales x2", "blk.15.ffn_down.weight", "scale", 2.0),
    ("attn_v scales x2", "blk.15.attn_v.weight", "scale", 2.0),
    ("ffn_down rows 0/1 swapped", "blk.15.ffn_down.weight", "swap", (0, 1)),
    ("attn_q rows 0/64 swapped", "blk.15.attn_q.weight", "swap", (0, 64)),
)


def dither(checkpoint: Path, out: Path, seed: int = 0) -> Path:
    """A copy of the fixture with its text weights dithered within their grid step, saved in bf16."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shutil.copytree(checkpoint, out, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(checkpoint / "model.safetensors")
    rng = np.random.default_rng(seed)
    for name, tensor in weights.items():
        text = name.startswith("model.text_model.") or name == "lm_head.weight"
        if not text or tensor.ndim != 2 or tensor.shape[-1] % BLOCK:
            continue
        values = tensor.float().numpy().reshape(-1, BLOCK)
        if "embed_tokens" in name or name == "lm_head.weight":   # from Q8_0: symmetric, 255 levels
            step = np.abs(values).max(1, keepdims=True) / 127
        else:                                                    # from Q4_1: min + 16 levels
            step = (values.max(1, keepdims=True) - values.min(1, keepdims=True)) / 15
        noisy = values + rng.uniform(-0.5, 0.5, values.shape) * step
        weights[name] = torch.from_numpy(noisy.reshape(tensor.shape).astype(np.float32)).to(tensor.dtype)
    with safe_open(checkpoint / "model.safetensors", "pt") as f:
        metadata = f.metadata()
    save_file(weights, out / "model.safetensors", metadata=metadata)
    return out


def damage(source: Path, target: Path, tensor_name: str, kind: str, how) -> str:
    """A copy of the GGUF with one tensor damaged in place; returns the tensor's type."""
    from gguf import GGUFReader

    shutil.copyfile(source, target)
    reader = GGUFReader(target, "r+")
    tensor = next(t for t in reader.tensors if t.name == tensor_name)
    data = tensor.data  # quantized: uint8 rows of blocks; float: the values
    qtype = tensor.tensor_type.name
    if kind == "swap":
        a, b = how
        data[[a, b]] = data[[b, a]]
    elif qtype in ("F16", "F32", "BF16"):
        data[...] = (data.astype(np.float32) * how).astype(data.dtype)
    else:
        size, offsets = SCALE_FIELDS[qtype]
        blocks = data.reshape(-1, size)
        for offset in offsets:
            field = blocks[:, offset:offset + 2].copy().view(np.float16)
            blocks[:, offset:offset + 2] = (field.astype(np.float32) * how).astype(np.float16).view(np.uint8)
    reader.data.flush()
    return qtype


def measure(build_dir: Path, toolchain, threads: int | None) -> list[dict]:
    variants = {v.name: v for v in BuildDir.open(build_dir).variants()}
    _, results = compare_quants(variants["F16"], [variants[t] for t in TYPES], KLD_TEXT, Gates(), toolchain, threads)
    return [{"variant": r.variant, "mean_kld": r.mean_kld, "kld_p99": r.kld_p99, "same_top": r.same_top}
            for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("out/kld-gates"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="measure this real checkpoint (no dithering) instead of the 256m fixture")
    args = parser.parse_args()
    from smolconv.fixtures.synth import SynthOptions, synth_checkpoint

    toolchain = find_toolchain(None)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.checkpoint is not None:
        measured = [("checkpoint", args.checkpoint.resolve())]
        dithered = measured[0][1]  # damaged quants of this one
    else:
        fixture = synth_checkpoint(SynthOptions(shape="256m", out=work / "fixture", vision_layers=2)).path
        dithered = work / "dithered"
        if not (dithered / "model.safetensors").is_file():
            shutil.rmtree(dithered, ignore_errors=True)
            dither(fixture, dithered)
        measured = [("fixture (Q4_1 grid)", fixture), ("dithered (continuous)", dithered)]
    rows = []
    for label, checkpoint in measured:
        out = work / f"build-{checkpoint.name}"
        build(BuildOptions(model=str(checkpoint), out_dir=out, types=TYPES, presets=("general",), verify=False,
                           smoke=False, threads=args.threads), toolchain)
        rows += [{"model": label, "damage": "none"} | r for r in measure(out, toolchain, args.threads)]
        if checkpoint is dithered:
            variants = {v.name: v for v in BuildDir.open(out).variants()}
            damaged = work / "damaged"
            damaged.mkdir(exist_ok=True)
            for qtype in TYPES:
                for what, tensor, kind, how in DAMAGES:
                    slug = what.replace(" ", "-").replace("/", "-")
                    path = damaged / f"{qtype}-{slug}.gguf"
                    held = damage(variants[qtype].text_path, path, tensor, kind, how)
                    variant = replace(variants[qtype], name=f"{qtype}", text_path=path)
                    _, [result] = compare_quants(variants["F16"], [variant], KLD_TEXT, Gates(), toolchain,
                                                 args.threads)
                    rows.append({"model": label, "damage": f"{what} ({held})", "variant": qtype,
                                 "mean_kld": result.mean_kld, "kld_p99": result.kld_p99,
                                 "same_top": result.same_top})
                    path.unlink()
    (work / "kld-gates.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nKL divergence against F16 (llama-perplexity, {KLD_TEXT.name}, n_ctx 512), SmolVLM2-256M shape "
          f"({time.monotonic() - started:.0f} s)\n")
    print(f"{'model':24} {'variant':8} {'damage':40} {'mean KLD':>9} {'99% KLD':>9} {'same top':>9}")
    for r in rows:
        p99 = "" if r["kld_p99"] is None else f"{r['kld_p99']:.4f}"
        print(f"{r['model']:24} {r['variant']:8} {r['damage']:40} {r['mean_kld']:9.4f} {p99:>9} "
              f"{100 * r['same_top']:8.1f}%")
    for size, gates in DEFAULT_MAX_KLD_BY_SIZE.items():
        print(f"default gates {size}:", " ".join(f"{k}={v}" for k, v in gates.items()))


if __name__ == "__main__":
    main()
