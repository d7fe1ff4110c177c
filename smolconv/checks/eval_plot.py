"""eval's picture: accuracy and agreement with the reference against file size, one point per variant and runtime.

Drawn with matplotlib (a dependency of smolconv for this picture, imported only here) without a display (Agg), so
it works on a server and in CI. Left: accuracy on the labelled cases, the reference as a dashed line; right:
agreement with the reference (the whole answer, filled markers; the first token, open markers). A panel with
nothing to show (no labelled case, no reference) says so instead of plotting.
"""

from __future__ import annotations

from pathlib import Path

from smolconv.core.fsutil import staged_file

RUNTIME_MARKERS = {"llama-server": "o", "ollama": "s", "onnx": "^", "mlx": "D", "transformers": "*"}
RUNTIME_COLOURS = {"llama-server": "#1f77b4", "ollama": "#9467bd", "onnx": "#2ca02c", "mlx": "#d62728",
                   "transformers": "#333333"}


def write_plot(report, path: Path) -> Path:
    """The PNG at `path` (written under a temporary name and renamed), for an EvalReport."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    runs = [r for r in report.variants if r.size_bytes]
    reference = report.reference_run
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=100)
    figure.suptitle(f"smolconv eval: {report.cases.name} ({len(report.cases.cases)} cases, "
                    f"{len(report.cases.labelled)} labelled)", fontsize=11)
    for axis, title in ((left, "accuracy (labelled cases)"), (right, "agreement with the reference")):
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("file size (MiB)")
        axis.set_ylabel("%")
        axis.set_ylim(-5, 105)
        axis.grid(True, alpha=0.3)
    _panel(left, runs, lambda r: r.accuracy, filled=True)
    if reference is not None and reference.accuracy is not None:
        left.axhline(100 * reference.accuracy, linestyle="--", color=RUNTIME_COLOURS["transformers"], linewidth=1,
                     label=f"reference (float32) {100 * reference.accuracy:.0f}%")
    if not report.cases.labelled:
        _empty(left, "no case has an `expect`")
    if reference is None:
        _empty(right, "no reference (--no-reference)")
    else:
        _panel(right, runs, lambda r: r.agreement, filled=True, suffix=" answer")
        _panel(right, runs, lambda r: r.first_token_agreement, filled=False, suffix=" first token")
    for axis in (left, right):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    with staged_file(path) as staged:
        figure.savefig(staged, format="png")
    plt.close(figure)
    return path


def _panel(axis, runs, value, *, filled: bool, suffix: str = "") -> None:
    seen = set()
    for run in runs:
        measured = value(run)
        if measured is None:
            continue
        x, y = run.size_bytes / 2**20, 100 * measured
        colour = RUNTIME_COLOURS.get(run.runtime, "#777777")
        label = f"{run.runtime}{suffix}" if (run.runtime, suffix) not in seen else None
        seen.add((run.runtime, suffix))
        axis.scatter([x], [y], marker=RUNTIME_MARKERS.get(run.runtime, "o"), s=46 if filled else 130, label=label,
                     facecolors=colour if filled else "none", edgecolors=colour)
        if filled:
            axis.annotate(run.variant, (x, y), textcoords="offset points", xytext=(4, 5), fontsize=7)


def _empty(axis, text: str) -> None:
    axis.text(0.5, 0.5, text, transform=axis.transAxes, ha="center", va="center", fontsize=9, color="#777777")
