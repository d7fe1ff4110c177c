"""Draw the pictures in README.md and docs/ from real runs: `make figures` (python scripts/make_figures.py).

    python scripts/make_figures.py                      # all of them (the 256m fixture build: minutes on 2 cores)
    python scripts/make_figures.py --only plan          # just the plan chart (no build: seconds)

What each comes from, all written under docs/figures/:

- plan-8gib.svg: `smolconv plan SHAPE --type Q4_K_M --type Q5_K_M --type Q8_0 --type F16 --json` for 256m, 500m and
  2.2b (no download): each variant's VRAM stacked by weights, KV cache, projector, compute and the CUDA runtime,
  against the 8 GiB card and what the 512 MiB `--reserve` leaves.
- size-vs-kld.png: the picture `smolconv publish` puts on the model card, from `smolconv publish --dry-run` of the
  tests' 256m fixture build (`smolconv synth --shape 256m`, then `smolconv build`; its verify measured the KLD).
- eval-accuracy.png: the picture `smolconv eval` writes beside its report, from `smolconv eval` of that build on
  examples/cases.jsonl: each variant's accuracy on the labelled cases and its agreement with the transformers
  reference, against file size.
- video-tokens.svg: `scripts/bench_video.py` on that build (needs ffmpeg for llama-server's input_video; about 5
  minutes on 2 cores); its JSON is kept as video-bench.json, and without ffmpeg (or with --no-video-bench) the chart
  is drawn again from that last real run.
- terminal-plan.svg, terminal-build.svg, terminal-smoke.svg, terminal-ask.svg: what `smolconv plan 2.2b`, the
  build, one variant's smoke table and `smolconv ask` printed (100 columns, as in a CI log), recorded with rich.

The build goes to --work (out/figures by default); a second run reuses it and the build output it recorded.
Charts need matplotlib (`pip install -e '.[docs]'`, which `make figures` runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
SHAPES = ("256m", "500m", "2.2b")
TYPES = ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")
GIB = 2**30
SEGMENTS = (  # (label, colour, the plan's memory fields it sums)
    ("weights", "#1f77b4", ("weights", "output")),
    ("KV cache", "#ff7f0e", ("kv_cache",)),
    ("projector", "#2ca02c", ("projector_weights", "projector_compute")),
    ("compute", "#9467bd", ("compute",)),
    ("CUDA runtime", "#8c8c8c", ("overhead",)),
)
ASK = "What is the capital of France?"
ALL = ("plan", "kld", "eval", "video", "terminal")


def smolconv(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, its output as a CI log shows it (no terminal: 100 columns, a line per step)."""
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    env.pop("FORCE_COLOR", None)
    result = subprocess.run([sys.executable, "-m", "smolconv", *args], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise SystemExit(f"smolconv {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    # Text stays text (a small file that reads in any browser), and the same numbers give the same bytes.
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "smolconv", "font.size": 10})
    return plt


def _save(figure, name: str) -> Path:
    path = FIGURES / name
    figure.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "smolconv"})
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")
    return path


# --------------------------------------------------------------------------------------------------
# The plan as a chart


def plan_chart() -> Path:
    plt = _pyplot()
    rows = []
    for shape in SHAPES:
        args = ["plan", shape, "--json"]
        for qtype in TYPES:
            args += ["--type", qtype]
        rows += [(shape, entry) for entry in json.loads(smolconv(*args).stdout)]
    vram, reserve = rows[0][1]["vram"], rows[0][1]["reserve"]
    figure, axis = plt.subplots(figsize=(9, 5.6))
    labels = [f"{shape}  {entry['variant']}" for shape, entry in rows]
    # Top to bottom in the order planned, a gap between the three models.
    positions = [-(i + 0.6 * SHAPES.index(shape)) for i, (shape, _) in enumerate(rows)]
    left = [0.0] * len(rows)
    for label, colour, fields in SEGMENTS:
        widths = [sum(e["memory"][f] for f in fields) / GIB for _, e in rows]
        axis.barh(positions, widths, left=left, color=colour, label=label, height=0.72)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, (_, entry) in zip(positions, rows, strict=True):
        total = entry["memory"]["total"] / GIB
        where = "" if entry["num_gpu"] == entry["layers"] else f", {entry['num_gpu']}/{entry['layers']} layers"
        axis.text(total + 0.06, y, f"{total:.2f} GiB, num_ctx {entry['num_ctx']}{where}", va="center", fontsize=8)
    top, bottom = max(positions) + 0.8, min(positions) - 0.8
    axis.axvline(vram / GIB, color="#d62728", linewidth=1.5)
    axis.axvline((vram - reserve) / GIB, color="#d62728", linewidth=1, linestyle="--")
    axis.text(vram / GIB + 0.05, top - 0.5, f"the {vram / GIB:g} GiB card", color="#d62728", fontsize=8)
    axis.text((vram - reserve) / GIB - 0.05, top - 0.5, f"{reserve // 2**20} MiB kept free (--reserve)",
              color="#d62728", fontsize=8, ha="right")
    axis.set_yticks(positions, labels, fontsize=9)
    axis.set_xlim(0, vram / GIB + 1.1)
    axis.set_ylim(bottom, top)
    axis.set_xlabel("GPU memory at the planned context (GiB): every layer and the projector on the GPU")
    axis.set_title("smolconv plan SHAPE --json: each variant on an 8 GiB card", fontsize=11, pad=26)
    axis.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(SEGMENTS), fontsize=8, frameon=False)
    axis.grid(axis="x", alpha=0.3)
    axis.set_axisbelow(True)
    for spine in ("top", "right"):
        axis.spines[spine].set_visible(False)
    return _save(figure, "plan-8gib.svg")


# --------------------------------------------------------------------------------------------------
# The 256m fixture build, and what it shows


def fixture_build(work: Path) -> Path:
    """The tests' 256m fixture, built as a user builds it; its printed output is kept as the build's capture."""
    checkpoint, build, log = work / "smolvlm2-256m", work / "build", work / "build.txt"
    built = build / "build.json"
    if built.is_file() and log.is_file():
        return build
    work.mkdir(parents=True, exist_ok=True)
    smolconv("synth", "--shape", "256m", "--out", str(checkpoint), "--force")
    load, started = os.getloadavg()[0], time.monotonic()
    result = smolconv("build", str(checkpoint), "--out", str(build))
    log.write_text(result.stdout)
    (work / "build-run.json").write_text(json.dumps({  # how busy the machine was: the times depend on it
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
        "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
        "minutes": round((time.monotonic() - started) / 60, 1)}))
    return build


def _run_note(work: Path) -> str:
    run = work / "build-run.json"
    if not run.is_file():
        return ""
    r = json.loads(run.read_text())
    return (f" ({r['date']}, {r['minutes']:g} min on {r['cores']} cores, 1-minute load average "
            f"{r['load_before']:g} to {r['load_after']:g})")


def kld_picture(build: Path, work: Path) -> Path:
    from smolconv.hub.picture import PICTURE_NAME

    repo = work / "repo"
    smolconv("publish", str(build), "--repo", "you/SmolVLM2-256M-fixture-GGUF", "--dry-run", str(repo), "--force")
    if not (repo / PICTURE_NAME).is_file():
        raise SystemExit(f"publish wrote no {PICTURE_NAME}: did verify measure the KL divergence?")
    target = FIGURES / "size-vs-kld.png"
    shutil.copyfile(repo / PICTURE_NAME, target)
    print(f"wrote {target.relative_to(ROOT)} ({target.stat().st_size // 1024} KiB)")
    return target


def eval_picture(build: Path) -> Path:
    cases = ROOT / "examples" / "cases.jsonl"
    smolconv("eval", str(build), "--cases", str(cases))
    drawn = build / "eval" / f"{cases.stem}.png"
    target = FIGURES / "eval-accuracy.png"
    shutil.copyfile(drawn, target)
    print(f"wrote {target.relative_to(ROOT)} ({target.stat().st_size // 1024} KiB)")
    return target


def video_chart(build: Path, bench_again: bool = True) -> Path:
    data = FIGURES / "video-bench.json"
    if not bench_again and data.is_file():
        print("drawing the video chart from the last run, docs/figures/video-bench.json")
    elif shutil.which("ffmpeg"):
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_video.py"), str(build), "--variant",
                                 "Q8_0", "--json", str(data)], text=True)
        if result.returncode != 0:
            raise SystemExit("scripts/bench_video.py failed")
    elif data.is_file():
        print("no ffmpeg on PATH: the video chart is drawn from the last real run, docs/figures/video-bench.json")
    else:
        raise SystemExit("the video chart needs ffmpeg on PATH (apt-get install ffmpeg) for llama-server's input_video")
    bench = json.loads(data.read_text())
    plt = _pyplot()
    rows = bench["rows"]
    names = [r["path"] for r in rows]
    colours = ["#2ca02c", "#d62728", "#8c8c8c"][: len(rows)]
    figure, (tokens, seconds) = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, key, title in ((tokens, "tokens_per_frame", "prompt tokens per frame"),
                             (seconds, "wall_s_per_video_s", "seconds per second of video (one-token request)")):
        values = [r[key] for r in rows]
        bars = axis.barh(range(len(rows))[::-1], values, color=colours, height=0.6)
        axis.bar_label(bars, [f"{v:.1f}" for v in values], padding=3, fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.set_xlim(0, max(values) * 1.25)
        axis.grid(axis="x", alpha=0.3)
        axis.set_axisbelow(True)
        for spine in ("top", "right"):
            axis.spines[spine].set_visible(False)
    tokens.set_yticks(range(len(rows))[::-1], [f"{n}\n({r['frames']} frames)" for n, r in zip(names, rows,
                                                                                            strict=True)], fontsize=8)
    seconds.set_yticks([])
    figure.suptitle(f"A {bench['seconds']:g} s {bench['size']} clip on llama-server: {bench['variant']} of the 256m "
                    f"fixture ({bench['device']}, 1-minute load average {bench['load_average'][0]:g}, "
                    f"{bench['date']})", fontsize=10)
    figure.tight_layout()
    return _save(figure, "video-tokens.svg")


# --------------------------------------------------------------------------------------------------
# Terminal captures


def terminal_svg(lines: list[str], name: str, title: str) -> Path:
    """The lines as a terminal shows them (rich's console recording), pass in green and FAIL in red."""
    import io

    from rich.console import Console
    from rich.text import Text

    console = Console(record=True, width=100, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    for line in lines:
        text = Text(line.replace(f"{ROOT}/", ""))  # paths as a user in the checkout sees them
        text.highlight_regex(r"\b(pass|passed|ok)\b", "green")
        text.highlight_regex(r"\b(FAIL|failed)\b", "bold red")
        if line.startswith(("error:", "notice:")):
            text.stylize("yellow")
        console.print(text)  # wrapped at 100 columns, as a terminal of that width shows it
    path = FIGURES / name
    console.save_svg(str(path), title=title)
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")
    return path


def smoke_table(report_path: Path) -> list[str]:
    """What `smolconv smoke` prints for a report the build wrote (its JSON, read back into smoke's own objects and
    rendered by the CLI's own table code at 100 columns), so the picture follows the table as it is today."""
    import dataclasses
    import io

    from rich.console import Console

    from smolconv.checks.smoke import CaseResult, SmokeReport
    from smolconv.cli import _output, _render
    from smolconv.runtime.chat import Answer

    data = json.loads(report_path.read_text())
    fields = {f.name for f in dataclasses.fields(Answer)}
    known = {f.name for f in dataclasses.fields(CaseResult)}
    results = []
    for case in data["cases"]:
        answer = case.get("answer")
        answer = Answer(**{k: v for k, v in answer.items() if k in fields}) if answer else None
        results.append(CaseResult(**{k: v for k, v in case.items() if k in known and k != "answer"}, answer=answer))
    report = SmokeReport(data["target"], data["variant"], data["backend"], data["backend_info"], results,
                         frozenset(data["random_parts"]), data["started"], data["seconds"],
                         report_path.relative_to(ROOT) if report_path.is_relative_to(ROOT) else report_path)
    console = Console(width=100, file=io.StringIO(), record=True)
    saved = _render.console, _output.console
    _render.console = _output.console = console
    try:
        _render.smoke(report)
    finally:
        _render.console, _output.console = saved
    return console.export_text().splitlines()


def terminal_captures(build: Path, work: Path) -> list[Path]:
    made = [terminal_svg(smolconv("plan", "2.2b").stdout.splitlines(), "terminal-plan.svg", "smolconv plan 2.2b")]
    log = (work / "build.txt").read_text().splitlines()
    steps = [line for line in log if line and line[0] not in "┏┃┡│└╭╰━ " and ": " in line and line.endswith(" s")
             or line.startswith("build record:")]
    made.append(terminal_svg(steps, "terminal-build.svg", "smolconv build, the 256m fixture" + _run_note(work)))
    made.append(terminal_svg(smoke_table(build / "smoke" / "Q4_K_M.llama-server.json"), "terminal-smoke.svg",
                             "smolconv smoke: Q4_K_M of the 256m fixture" + _run_note(work)))
    asked = smolconv("ask", str(build), ASK, "--variant", "Q8_0")
    made.append(terminal_svg([f'$ smolconv ask {build.relative_to(ROOT) if build.is_relative_to(ROOT) else build} '
                              f'"{ASK}" --variant Q8_0', *asked.stdout.splitlines(), *asked.stderr.splitlines()],
                             "terminal-ask.svg", "smolconv ask"))
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "figures", help="where the fixture build goes")
    parser.add_argument("--only", action="append", choices=ALL, help="draw only these (repeatable)")
    parser.add_argument("--no-video-bench", action="store_true",
                        help="draw the video chart from docs/figures/video-bench.json instead of running the bench")
    args = parser.parse_args()
    only = set(args.only or ALL)
    FIGURES.mkdir(parents=True, exist_ok=True)
    if "plan" in only:
        plan_chart()
    if only & {"kld", "eval", "video", "terminal"}:
        build = fixture_build(args.work.resolve())
        if "kld" in only:
            kld_picture(build, args.work.resolve())
        if "eval" in only:
            eval_picture(build)
        if "video" in only:
            video_chart(build, bench_again=not args.no_video_bench)
        if "terminal" in only:
            terminal_captures(build, args.work.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
