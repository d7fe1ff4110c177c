"""Kill `smolconv build` anywhere, rerun it, and check it ends exactly where an uninterrupted build does.

    python scripts/chaos.py --rounds 2 --seed 1            # verify and smoke on, SIGKILL and SIGTERM
    python scripts/chaos.py --rounds 1 --imatrix           # also kill during llama-imatrix

A reference build of the `tiny` fixture runs first and times each stage's work: from the moment the stage's own
program runs (the converter, llama-imatrix, llama-quantize, verify's llama tools, smoke's llama-server; package has
none, so its start is the moment quantization's files are all there) to the moment the stage's final files exist.
Each round then starts from an empty output directory and, for every stage in order, reruns the build, waits until
that stage's program runs, and kills it (SIGKILL or SIGTERM, seeded) at a random moment within the stage's
reference length; so a kill lands in the stage's work, not in Python's start-up before it. After each kill no
process smolconv started may be left and every final-named file must read back whole. The round ends with a rerun
to completion, whose outputs must be byte-identical (sha256) to the reference's, with build.json agreeing with the
files and no `.partial` left. Prints the kill points per stage (the stage that was running when the signal went).
Exits 1 on any problem, and when fewer kills landed than were aimed (a build that finished before its kill
moment proves nothing about that stage).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import descendants, pid_is_running, runs_program

# Files that are a product of the build (compared byte for byte); verify's and smoke's reports hold timings.
_REPORTS = ("build.json", "verify.json", "README.md")


@dataclass
class ChaosReport:
    kills: collections.Counter = field(default_factory=collections.Counter)  # (stage, signal) -> count
    aimed: int = 0   # kills attempted: one per stage per round
    missed: int = 0  # the build finished before the chosen moment
    rounds: int = 0
    identical: list[bool] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def landed(self) -> int:
        return sum(self.kills.values())

    @property
    def passed(self) -> bool:
        return not self.problems and all(self.identical) and self.landed == self.aimed

    def lines(self) -> list[str]:
        per_stage = collections.Counter()
        for (stage, _sig), n in self.kills.items():
            per_stage[stage] += n
        out = [f"kill points per stage: {dict(per_stage)}",
               f"by signal: {dict((f'{s}/{g}', n) for (s, g), n in sorted(self.kills.items()))}",
               f"rounds {self.rounds}, kills landed {self.landed} of {self.aimed}, "
               f"finished before the kill moment {self.missed}, "
               f"final reruns byte-identical: {sum(self.identical)}/{len(self.identical)}"]
        out += [f"PROBLEM: {p}" for p in self.problems]
        return out


def _stages(out: Path, stem: str, types: list[str], imatrix: bool, verify: bool, smoke: bool) -> list[tuple]:
    """(stage, done?) in build order; a stage is done when its final files exist."""
    stages = [("convert", lambda: (out / f"{stem}-F16.gguf").exists() and any(out.glob("mmproj-*.gguf")))]
    if imatrix:
        stages.append(("imatrix", lambda: (out / "imatrix.gguf").exists()))
    stages.append(("quantize", lambda: all((out / f"{stem}-{t}.gguf").exists() for t in types)))
    stages.append(("package", lambda: any(out.glob("*.Modelfile"))))
    if verify:
        stages.append(("verify", lambda: (out / "verify.json").exists()))
    if smoke:
        stages.append(("smoke", lambda: any((out / "smoke").glob("*.json")) if (out / "smoke").exists() else False))
    return stages


# The program whose process shows that a stage's work is under way (package runs in smolconv's own Python).
_PROGRAMS = {"convert": "convert_hf_to_gguf", "imatrix": "llama-imatrix", "quantize": "llama-quantize",
             "package": None, "verify": "/llama-", "smoke": "llama-server"}


def _working(stage: str, stages, pids) -> bool:
    """`stage` is the first unfinished one and its program runs (for package: its turn has come)."""
    if _current(stages) != stage:
        return False
    program = _PROGRAMS.get(stage)
    if program is None:
        return True
    return any(runs_program(pid, program) for pid in pids)


def _current(stages) -> str:
    for name, done in stages:
        if not done():
            return name
    return "finishing"


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _products(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): _sha256(p) for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in _REPORTS and p.parent.name != "smoke"}


def _whole_or_absent(out: Path) -> list[str]:
    """Final-named files that do not read back (a truncated GGUF, a cut JSON)."""
    import gguf

    bad = []
    for path in out.rglob("*") if out.exists() else []:
        if not path.is_file() or path.name.endswith(".partial") or ".partial" in path.parent.name:
            continue
        try:
            if path.suffix == ".gguf":
                gguf.GGUFReader(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except Exception as exc:  # any failure to read back is the finding
            bad.append(f"{path.name}: {exc}")
    return bad


def _consistent(out: Path) -> list[str]:
    if not (out / "build.json").is_file():
        return ["no build.json after the final run"]
    record = json.loads((out / "build.json").read_text())
    problems = []
    for name, entry in record.get("outputs", {}).items():
        path = out / name
        if "sha256" not in entry:
            problems.append(f"build.json claims {name} but never recorded it")
        elif not path.is_file():
            problems.append(f"build.json lists {name}, which is missing")
        elif path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
            problems.append(f"build.json's sha256/size of {name} do not match the file")
    return problems


class Chaos:
    def __init__(self, checkpoint: Path, work: Path, *, types: list[str], imatrix_text: Path | None,
                 verify: bool, smoke: bool, seed: int, signals: list[int], env: dict | None = None):
        self.checkpoint, self.work, self.types = checkpoint, work, types
        self.imatrix_text, self.verify, self.smoke = imatrix_text, verify, smoke
        self.random = random.Random(seed)
        self.signals = signals
        self.env = env
        self.report = ChaosReport()
        self.durations: dict[str, float] = {}

    def _argv(self, out: Path) -> list[str]:
        argv = [sys.executable, "-m", "smolconv", "build", str(self.checkpoint), "--out", str(out),
                "--preset", "general"]
        for t in self.types:
            argv += ["--type", t]
        if self.imatrix_text:
            argv += ["--imatrix-text", str(self.imatrix_text)]
        argv += ["--verify" if self.verify else "--no-verify", "--smoke" if self.smoke else "--no-smoke"]
        return argv

    def _stages(self, out: Path):
        return _stages(out, self.checkpoint.name, self.types, bool(self.imatrix_text), self.verify, self.smoke)

    def _start(self, out: Path) -> subprocess.Popen:
        return subprocess.Popen(self._argv(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=self.env, start_new_session=True)

    def reference(self) -> dict[str, str]:
        """An uninterrupted build, timing each stage's work (from its program's start to its files)."""
        out = self.work / "reference"
        stages = self._stages(out)
        proc = self._start(out)
        began: dict[str, float] = {}
        stage, seen = _current(stages), set()
        while proc.poll() is None:
            pids = descendants(proc.pid)
            seen.update(pids)
            now = _current(stages)
            if now not in began and _working(now, stages, pids):
                began[now] = time.monotonic()
            if now != stage:
                if stage in began:
                    self.durations[stage] = time.monotonic() - began[stage]
                stage = now
            time.sleep(0.01)
        if stage in began:
            self.durations.setdefault(stage, time.monotonic() - began[stage])
        err = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"the reference build failed ({proc.returncode}): {err[-2000:]}")
        self._check_no_process(seen, "reference build")
        return _products(out)

    def _check_no_process(self, pids, when: str) -> None:
        deadline = time.monotonic() + 5
        while (left := [p for p in pids if pid_is_running(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            self.report.problems.append(f"{when}: processes left running {left}")

    def kill_in(self, out: Path, target: str) -> None:
        """Run the build; once `target`'s work is under way, kill it at a random moment within that stage."""
        stages = self._stages(out)
        self.report.aimed += 1
        signum = self.random.choice(self.signals)
        fraction = self.random.random()
        proc = self._start(out)
        seen: set[int] = set()
        order = [name for name, _ in stages] + ["finishing"]
        reached = None
        while proc.poll() is None:
            pids = descendants(proc.pid)
            seen.update(pids)
            # A stage that went by between two looks (package is short) counts as reached: kill at once.
            if reached is None and (_working(target, stages, pids)
                                    or order.index(_current(stages)) > order.index(target)):
                reached = time.monotonic()
            if reached is not None and time.monotonic() - reached >= fraction * self.durations.get(target, 1.0):
                stage = _current(stages)
                seen.update(descendants(proc.pid))
                os.kill(proc.pid, signum)
                proc.wait(timeout=120)
                self.report.kills[(stage, signal.Signals(signum).name)] += 1
                expected = -signal.SIGKILL if signum == signal.SIGKILL else 128 + signum
                if proc.returncode != expected:
                    self.report.problems.append(f"killed in {stage} with {signal.Signals(signum).name}: exit "
                                                f"{proc.returncode}, not {expected}")
                self._check_no_process(seen, f"after {signal.Signals(signum).name} in {stage}")
                if signum != signal.SIGKILL and list(out.rglob("*.partial")):
                    self.report.problems.append(f"{signal.Signals(signum).name} in {stage} left .partial files")
                self.report.problems += [f"after a kill in {stage}: {b}" for b in _whole_or_absent(out)]
                return
            time.sleep(0.005)
        self.report.missed += 1
        if proc.returncode != 0:
            self.report.problems.append(f"a run aimed at {target} failed with {proc.returncode}: "
                                        f"{(proc.stderr.read() if proc.stderr else '')[-1000:]}")

    def round(self, reference: dict[str, str]) -> None:
        out = self.work / f"round{self.report.rounds}"
        shutil.rmtree(out, ignore_errors=True)
        for target, _ in self._stages(out):
            self.kill_in(out, target)
        proc = self._start(out)
        seen: set[int] = set()
        while proc.poll() is None:
            seen.update(descendants(proc.pid))
            time.sleep(0.05)
        if proc.returncode != 0:
            self.report.problems.append(f"the final rerun failed with {proc.returncode}: "
                                        f"{(proc.stderr.read() if proc.stderr else '')[-1000:]}")
        self._check_no_process(seen, "final rerun")
        products = _products(out)
        same = products == reference
        self.report.identical.append(same)
        if not same:
            differing = sorted(k for k in set(products) | set(reference) if products.get(k) != reference.get(k))
            self.report.problems.append(f"round {self.report.rounds}: differs from the reference: {differing}")
        self.report.problems += _consistent(out)
        if list(out.rglob("*.partial")):
            self.report.problems.append(f"round {self.report.rounds}: .partial files after the final run")
        self.report.rounds += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="Each round kills once in every stage.")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--type", dest="types", action="append", help="Quant types (default: Q4_K_M).")
    parser.add_argument("--imatrix", action="store_true", help="Compute an importance matrix too (llama-imatrix).")
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    parser.add_argument("--no-smoke", dest="smoke", action="store_false")
    parser.add_argument("--signal", dest="signals", action="append", choices=["KILL", "TERM"],
                        help="Signals to choose from (default: both).")
    parser.add_argument("--work", type=Path, help="Working directory (default: a temporary one, removed).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="smolconv-chaos-"))
    try:
        from smolconv.fixtures.synth import SynthOptions, synth_checkpoint

        checkpoint = synth_checkpoint(SynthOptions(shape="tiny", out=work / "tiny")).path
        imatrix_text = None
        if args.imatrix:
            imatrix_text = work / "calibration.txt"
            imatrix_text.write_text("The quick brown fox jumps over the lazy dog. " * 200)
        signals = [getattr(signal, f"SIG{s}") for s in (args.signals or ["KILL", "TERM"])]
        chaos = Chaos(checkpoint, work, types=args.types or ["Q4_K_M"], imatrix_text=imatrix_text,
                      verify=args.verify, smoke=args.smoke, seed=args.seed, signals=signals)
        started = time.monotonic()
        reference = chaos.reference()
        print("reference stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in chaos.durations.items()),
              flush=True)
        for _ in range(args.rounds):
            chaos.round(reference)
            print(f"round {chaos.report.rounds} done ({time.monotonic() - started:.0f} s)", flush=True)
        for line in chaos.report.lines():
            print(line)
        return 0 if chaos.report.passed else 1
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
