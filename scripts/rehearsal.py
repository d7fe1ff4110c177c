"""Full-size rehearsal: `smolconv build` end to end on a random-weight checkpoint of a real size (2.2b).

Usage: python scripts/rehearsal.py [--shape 2.2b] [--work DIR] [--doc docs/REHEARSAL.md]   (`make rehearsal`)

1. `smolconv synth --shape SHAPE` writes the checkpoint (timed, peak RSS from getrusage).
2. `smolconv build CHECKPOINT --out OUT --force` runs in a subprocess while this script samples the resident
   memory of its whole process tree (smolconv and the llama.cpp tools it starts) every 0.2 s from /proc.
   build.json's "last_build" says when each stage started and how long it took; each stage's peak is the
   largest sample inside it. Sizes come from the files build.json records.
3. The table goes into DOC between two HTML comments, with the machine it ran on and the command.

Needs about 25 GB of free disk for 2.2b. The random text weights never end a turn by themselves; smoke knows a
fixture from the marker synth leaves and records such answers without judging them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from benchlib import measure, smolconv

from smolconv.plan import format_bytes

REPO = Path(__file__).resolve().parent.parent
START, END = "<!-- rehearsal:start -->", "<!-- rehearsal:end -->"
PAGE = os.sysconf("SC_PAGE_SIZE")
GiB = 1 << 30


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and every process below it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # the command name (field 2) may hold spaces; the parent pid is the 2nd field after it
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    members, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid and child not in members]
        members.update(children)
        frontier += children
    total = 0
    for pid in members:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


class Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.time(), tree_rss(self.pid)))
            self.done.wait(self.interval)

    def peak(self, start: float, seconds: float) -> int:
        inside = [rss for t, rss in self.samples if start <= t <= start + seconds]
        return max(inside, default=0)


def stage_files(manifest: dict) -> dict[str, list[tuple[str, int]]]:
    """The files each stage wrote, from build.json's outputs."""
    by_stage: dict[str, list[tuple[str, int]]] = {}
    for name, output in manifest.get("outputs", {}).items():
        step = output.get("step", "")
        stage = "quantize" if step.startswith("quantize") else step
        by_stage.setdefault(stage, []).append((name, output.get("size", 0)))
    return by_stage


def render(shape: str, synth: dict, checkpoint_bytes: int, manifest: dict, sampler: Sampler, build_rc: int,
           build_seconds: float, command: str) -> str:
    files = stage_files(manifest)
    rows = ["| step | time | peak memory | what it wrote |", "|---|---|---|---|",
            f"| synth {shape} (not part of build) | {synth['seconds']:.0f} s | {synth['peak_rss_mib']:.0f} MiB "
            f"| checkpoint, {format_bytes(checkpoint_bytes)} |"]
    for stage in manifest["last_build"]["stages"]:
        name = stage["stage"]
        wrote = ", ".join(f"{n} {format_bytes(b)}" for n, b in sorted(files.get(name, [])))
        if name == "plan + package":
            modelfiles = [n for n in manifest.get("outputs", {}) if n.endswith(".Modelfile")]
            wrote = f"{len(modelfiles)} Modelfiles"
        elif name == "quantize":
            times = {step.split(":", 1)[1]: data.get("seconds") for step, data in manifest["steps"].items()
                     if step.startswith("quantize:") and data.get("seconds") is not None}
            wrote += "; " + ", ".join(f"{q} {t:.0f} s" for q, t in times.items()) if times else ""
        elif name == "verify" and "verify" in manifest:
            wrote = _verify_summary(manifest["verify"])
        elif name == "smoke":
            wrote = "; ".join(f"{key.split(':')[0]} {'passed' if record.get('passed') else 'FAILED'}"
                              + (f" in {record['seconds']:.0f} s" if record.get("seconds") else "")
                              for key, record in manifest.get("smoke", {}).items())
        peak = sampler.peak(stage["started"], stage["seconds"])
        rows.append(f"| {name} | {stage['seconds']:.0f} s | {format_bytes(peak)} | {wrote} |")
    peak = max((rss for _, rss in sampler.samples), default=0)
    rows.append(f"| **build, total** | **{build_seconds / 60:.1f} min** | **{format_bytes(peak)}** "
                f"| exit code {build_rc} |")
    machine = f"{os.cpu_count()} CPU cores, {_memory_total()}, {platform.machine()}, no GPU (CPU build of llama.cpp)"
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    header = (f"`{command}` on {when}: {machine}.\n"
              "Peak memory is the resident memory of smolconv and the llama.cpp tools it ran, together, sampled\n"
              "every 0.2 s; sizes are the files build.json records.\n\n")
    return header + "\n".join(rows)


def _verify_summary(verify: dict) -> str:
    text = verify.get("text", {})
    parts = []
    if "max_nmse" in text:
        parts.append(f"F16 NMSE {text['max_nmse']:.1e}")
    vision = verify.get("vision", {})
    if vision.get("nmse") is not None:
        parts.append(f"projector NMSE {vision['nmse']:.1e}")
    for row in verify.get("kld", {}).get("variants", []):
        parts.append(f"{row['variant']} KLD {row['mean_kld']:.3f}")
    return ", ".join(parts) or ("passed" if verify.get("passed") else "failed")


def _memory_total() -> str:
    with open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
    return f"{kib * 1024 / GiB:.0f} GiB RAM"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="2.2b")
    parser.add_argument("--work", type=Path, default=REPO / "out" / "rehearsal")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "REHEARSAL.md")
    parser.add_argument("--type", dest="types", action="append", help="quantization type (default: smolconv's)")
    args = parser.parse_args()
    checkpoint, out = args.work / f"smolvlm2-{args.shape}", args.work / "build"

    print(f"synth {args.shape} → {checkpoint}", flush=True)
    synth = measure(smolconv("synth", "--shape", args.shape, "--out", str(checkpoint), "--force"))
    checkpoint_bytes = sum(p.stat().st_size for p in checkpoint.iterdir() if p.is_file())

    build_args = ["build", str(checkpoint), "--out", str(out), "--force"]
    for qtype in args.types or ():
        build_args += ["--type", qtype]
    print(f"smolconv {' '.join(build_args)}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(smolconv(*build_args))
    sampler = Sampler(proc.pid)
    sampler.start()
    build_rc = proc.wait()
    build_seconds = time.monotonic() - started
    sampler.done.set()
    sampler.join()

    manifest = json.loads((out / "build.json").read_text())
    if "last_build" not in manifest:
        print(f"the build stopped before it finished (exit {build_rc}); nothing to tabulate", file=sys.stderr)
        return 1
    command = f"make rehearsal (python scripts/rehearsal.py --shape {args.shape})"
    table = render(args.shape, synth, checkpoint_bytes, manifest, sampler, build_rc, build_seconds, command)
    print(table)
    text = args.doc.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"{args.doc} has no {START} … {END} block; the table is above", file=sys.stderr)
        return 1
    before, rest = text.split(START, 1)
    args.doc.write_text(f"{before}{START}\n{table}\n{END}{rest.split(END, 1)[1]}", encoding="utf-8")
    print(f"wrote the table into {args.doc}")
    return build_rc


if __name__ == "__main__":
    sys.exit(main())
