"""A build directory is read once per command: build.json loaded once, each GGUF header read once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from smolconv import builddir
from smolconv.manifest import Manifest
from smolconv.pipeline import BuildOptions, build


def test_a_build_loads_build_json_once_and_reads_each_gguf_header_once(toolchain, fixture_tiny, tmp_path,
                                                                       monkeypatch):
    loads: list[Path] = []
    load = Manifest.load.__func__

    def counted_load(cls, out_dir):
        loads.append(Path(out_dir))
        return load(cls, out_dir)

    monkeypatch.setattr(Manifest, "load", classmethod(counted_load))
    reads: Counter[str] = Counter()
    for name in ("read_text_model", "read_projector"):
        real = getattr(builddir, name)
        monkeypatch.setattr(builddir, name, lambda path, real=real: reads.update([Path(path).name]) or real(path))

    out = tmp_path / "out"
    result = build(BuildOptions(model=str(fixture_tiny), out_dir=out, types=("Q4_K_M", "Q8_0"),
                                presets=("general",)), toolchain)  # verify and smoke included

    assert result.verified is not None and result.smoked, "the walk must cover verify and smoke"
    assert loads == [out]
    # F16, Q4_K_M and Q8_0 text models and the projector: each header read once though six stages ask.
    assert len(reads) == 4 and set(reads.values()) == {1}, reads
