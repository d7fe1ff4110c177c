"""Regenerate the hardware table in docs/hardware.md from `smolconv plan --json`.

Usage: python scripts/hardware_table.py [--check]   (`make hardware-table`, `make hardware-table-check`)

The table sits between two HTML comments in docs/hardware.md; everything else in the file is left as it is.
--check exits 1 when the file differs from what plan says now (CI runs it, like modelfiles-check).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from smolconv.plan import format_bytes

DOC = Path(__file__).resolve().parent.parent / "docs" / "hardware.md"
START, END = "<!-- hardware-table:start -->", "<!-- hardware-table:end -->"
SHAPES = ("256m", "500m", "2.2b")
TYPES = ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")


def plan(shape: str, vram: str) -> list[dict]:
    args = [sys.executable, "-m", "smolconv", "plan", shape, "--vram", vram, "--json"]
    for qtype in TYPES:
        args += ["--type", qtype]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def table(vram: str) -> str:
    rows = ["| model | quant | disk | RAM (host) | VRAM | num_ctx | layers on GPU | projector | images at num_ctx |",
            "|---|---|---|---|---|---|---|---|---|"]
    for shape in SHAPES:
        for entry in plan(shape, vram):
            memory, image = entry["memory"], entry["image"]
            disk = entry["file_weights"]["text"] + entry["file_weights"]["projector"]
            rows.append(f"| {shape} | {entry['variant']} | {format_bytes(disk)} | {format_bytes(memory['host'])} | "
                        f"{format_bytes(memory['total'])} | {entry['num_ctx']} | "
                        f"{entry['num_gpu']}/{entry['layers']} | "
                        f"{'GPU' if entry['projector_on_gpu'] else 'CPU'} | "
                        f"{image['full_size_images_per_context']} |")
    return "\n".join(rows)


def render() -> str:
    body = ("`smolconv plan SHAPE --type Q4_K_M --type Q5_K_M --type Q8_0 --type F16 --json` for an 8 GiB card\n"
            "(512 MiB kept free for the desktop, f16 KV cache); regenerate with `make hardware-table`.\n\n"
            + table("8GiB"))
    return f"{START}\n{body}\n{END}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/hardware.md is stale")
    args = parser.parse_args()
    text = DOC.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"{DOC} has no {START} … {END} block: add one where the table goes", file=sys.stderr)
        return 2
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    updated = before + render() + after
    if args.check:
        if updated != text:
            print(f"{DOC.name}'s hardware table is stale: run `make hardware-table`", file=sys.stderr)
            return 1
        print(f"{DOC.name}'s hardware table is up to date")
        return 0
    DOC.write_text(updated, encoding="utf-8")
    print(f"wrote the hardware table into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
