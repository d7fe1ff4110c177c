"""A build directory is read once per command: build.json loaded once, each GGUF header read once.

Counted on the test run's one default build of the 256m fixture (conftest.counted_build_256m): every stage of
`build`, verify and smoke included, on four variants and every preset.
"""

from __future__ import annotations


def test_a_build_loads_build_json_once_and_reads_each_gguf_header_once(counted_build_256m):
    result = counted_build_256m.result
    assert result.verified is not None and result.smoked, "the walk must cover verify and smoke"
    assert counted_build_256m.manifest_loads == [result.out_dir]
    # F16, Q4_K_M, Q5_K_M and Q8_0 text models and the projector: each header read once though six stages ask.
    reads = counted_build_256m.header_reads
    assert len(reads) == 5 and set(reads.values()) == {1}, reads
