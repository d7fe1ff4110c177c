"""Render the example Modelfiles in modelfiles/ (three SmolVLM2 sizes × three quants × four presets).

    python scripts/render_modelfiles.py           # rewrite modelfiles/
    python scripts/render_modelfiles.py --check   # exit 1 when modelfiles/ is stale (CI)

They are planned from the config dimensions smolconv ships, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from smolconv.formats.gguf.package import render_examples

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "modelfiles"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with modelfiles/ instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        render_examples(fresh)
        if not args.check:
            for old in DEST.glob("*.Modelfile"):
                old.unlink()
            DEST.mkdir(exist_ok=True)
            for path in sorted(fresh.iterdir()):
                shutil.copy(path, DEST / path.name)
            print(f"wrote {len(list(fresh.iterdir()))} Modelfiles to {DEST}")
            return 0
        expected = sorted(p.name for p in fresh.iterdir())
        present = sorted(p.name for p in DEST.glob("*.Modelfile"))
        _, mismatch, errors = filecmp.cmpfiles(fresh, DEST, expected, shallow=False)
        stale = sorted(set(mismatch + errors) | (set(present) ^ set(expected)))
        if stale:
            print(f"modelfiles/ is stale ({len(stale)} files differ, e.g. {stale[0]}): run `make modelfiles`",
                  file=sys.stderr)
            return 1
        print(f"modelfiles/ is up to date ({len(expected)} Modelfiles)")
        return 0


if __name__ == "__main__":
    sys.exit(main())
