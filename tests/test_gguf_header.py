"""smolconv's GGUF header reader against gguf-py's GGUFReader, on the files of a real build."""

from __future__ import annotations

import shutil

import pytest
from gguf import GGUFReader

from smolconv.core.errors import SmolconvError
from smolconv.formats.gguf.quantize import expected_header
from smolconv.llamacpp.gguf_header import ArrayField, read_gguf_header


def test_every_field_and_tensor_matches_gguf_py(build_256m_q4_q8):
    files = sorted(build_256m_q4_q8.glob("*.gguf"))
    assert len(files) == 5  # F16, Q4_K_M, Q8_0, the projector and the video projector
    for path in files:
        header, reader = read_gguf_header(path), GGUFReader(path)
        assert [(t.name, t.shape, t.tensor_type, t.n_bytes, t.n_elements, header.data_offset + t.offset)
                for t in header.tensors] == \
            [(t.name, tuple(int(d) for d in t.shape), t.tensor_type, int(t.n_bytes), int(t.n_elements),
              int(t.data_offset)) for t in reader.tensors]
        keys = [key for key in reader.fields if not key.startswith("GGUF.")]
        assert list(header.fields) == keys
        for key in keys:
            value, expected = header.fields[key], reader.fields[key]
            if isinstance(value, ArrayField):
                assert value.length == len(expected.data) and value.values is None, key
            elif isinstance(value, float):
                assert value == pytest.approx(expected.contents()), key
            else:
                assert value == expected.contents(), key
    text = next(p for p in files if p.name.endswith("-F16.gguf"))
    tokens = read_gguf_header(text, arrays=("tokenizer.ggml.tokens",)).fields["tokenizer.ggml.tokens"]
    assert list(tokens.values) == GGUFReader(text).fields["tokenizer.ggml.tokens"].contents()


def test_a_file_that_is_not_gguf_or_is_cut_short_is_named(build_256m_q4_q8, tmp_path):
    source = next(build_256m_q4_q8.glob("*-Q8_0.gguf"))
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(SmolconvError, match=r"weights.gguf is not a readable GGUF file \(wrong magic: its first bytes"):
        read_gguf_header(not_gguf)
    cut = tmp_path / "cut.gguf"
    with open(source, "rb") as full, open(cut, "wb") as part:
        part.write(full.read(source.stat().st_size - 1000))
    with pytest.raises(SmolconvError, match=r"cut.gguf is truncated: its tensor data ends at byte \d+, the file at"):
        read_gguf_header(cut)
    header_only = tmp_path / "header-only.gguf"
    shutil.copyfile(source, header_only)
    with open(header_only, "r+b") as handle:
        handle.truncate(5000)  # inside the vocabulary
    with pytest.raises(SmolconvError, match=r"header-only.gguf is not a readable GGUF file \(its header is cut short"):
        read_gguf_header(header_only)


@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q8_0"])
def test_the_header_llama_quantize_writes_last_is_known_before_it_runs(qtype, build_256m_q4_q8, toolchain):
    """quantize hashes its output while llama-quantize writes it, starting from this header: byte for byte what
    llama-quantize wrote (key order, tensor order, types, offsets, padding), or every build hashes twice."""
    f16 = next(build_256m_q4_q8.glob("*-F16.gguf"))
    quantized = f16.with_name(f16.name.replace("-F16.gguf", f"-{qtype}.gguf"))
    with open(quantized, "rb") as handle:
        written = handle.read(read_gguf_header(quantized).data_offset)
    assert expected_header(toolchain, f16, qtype) == written
