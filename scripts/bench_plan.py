"""plan's memory estimate against the buffer sizes llama-server reports, per shape, variant and context.

    python scripts/bench_plan.py                       # tiny and 256m fixtures, F16 and Q4_K_M, 2048 / 8192
    python scripts/bench_plan.py --shape 2.2b          # the full-size shape (about 5 GB of disk, a few minutes)

Prints one row per case: estimate / llama-server (MiB) for weights, KV cache, compute buffers and the total.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from smolconv.fixtures.synth import SynthOptions, synth_checkpoint
from smolconv.llamacpp.toolchain import find_toolchain
from smolconv.pipeline import BuildOptions, build
from smolconv.plan import MiB, PlanSettings, build_variants, estimate, measure_llama_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", help="tiny, 256m, 500m, 2.2b (repeatable)")
    parser.add_argument("--ctx", type=int, action="append", help="context sizes (default 2048 and 8192)")
    parser.add_argument("--work", type=Path, help="keep the builds here (default: a temporary directory)")
    args = parser.parse_args()
    toolchain = find_toolchain()
    settings = PlanSettings()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        print(f"{'case':32} {'weights est/real':>20} {'KV est/real':>18} {'compute est/real':>18} "
              f"{'total est/real':>20} {'total err':>9}")
        for shape in args.shape or ["tiny", "256m"]:
            checkpoint = synth_checkpoint(SynthOptions(shape=shape, out=work / f"ck-{shape}", force=True)).path
            out = work / f"build-{shape}"
            build(BuildOptions(model=str(checkpoint), out_dir=out, types=("Q4_K_M",), presets=("general",),
                               verify=False, smoke=False),
                  toolchain)
            for variant in build_variants(out, ("F16", "Q4_K_M")):
                for n_ctx in args.ctx or [2048, 8192]:
                    real = measure_llama_server(toolchain, variant, n_ctx, settings)
                    est = estimate(variant, n_ctx, settings, cpu_backend=True)

                    def pair(a: int, b: int) -> str:
                        return f"{a / MiB:8.1f}/{b / MiB:<8.1f}"

                    print(f"{shape + ' ' + variant.name + ' ctx ' + str(n_ctx):32} "
                          f"{pair(est.weights + est.projector_weights, real.weights + real.projector_weights):>20} "
                          f"{pair(est.kv_cache, real.kv_cache):>18} "
                          f"{pair(est.compute + est.projector_compute, real.compute + real.projector_compute):>18} "
                          f"{pair(est.total, real.total):>20} {100 * (est.total - real.total) / real.total:+8.2f}%")


if __name__ == "__main__":
    main()
