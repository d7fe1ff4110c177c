"""A GGUF file's header: its metadata and tensor table, read in one pass without the tensor data.

gguf-py's GGUFReader builds a numpy view for every element of every array field, which is slow on SmolVLM2's
49,280-token vocabulary, and a build opens each of its files several times (the read-back after convert and
quantize, plan, package). This reads the same fields: scalars as values, arrays as their length and element type
(their values only when asked for). The types, sizes and the magic come from gguf-py, so both agree on the format.
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

from smolconv.core.errors import SmolconvError

_SCALARS = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


@dataclass(frozen=True)
class ArrayField:
    """An array field: its length and element type; `values` only when the caller asked for this key."""

    length: int
    item_type: GGUFValueType
    values: tuple | None = None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]   # ne[0] first, as GGUFReader gives it
    tensor_type: GGMLQuantizationType
    offset: int              # from the start of the data section

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def n_bytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.tensor_type]
        return self.n_elements // block * size


@dataclass
class GGUFHeader:
    path: Path
    version: int
    fields: dict[str, object] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0     # where tensor data starts in the file
    # Where each metadata entry (key, type, value) lies in the file, in file order, with its value type.
    kv_spans: dict[str, tuple[int, int, GGUFValueType]] = field(default_factory=dict)
    little_endian: bool = True

    def get(self, key: str, default=None):
        return self.fields.get(key, default)

    def array_length(self, key: str) -> int:
        value = self.fields.get(key)
        return value.length if isinstance(value, ArrayField) else 0


class _Cursor:
    def __init__(self, buffer, order: str):
        self.buffer, self.order, self.at = buffer, order, 0

    def unpack(self, fmt: str):
        values = struct.unpack_from(self.order + fmt, self.buffer, self.at)
        self.at += struct.calcsize(self.order + fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.unpack("Q")
        end = self.at + length
        if end > len(self.buffer):
            raise struct.error("string past the end of the file")
        text = bytes(self.buffer[self.at:end]).decode("utf-8", errors="replace")
        self.at = end
        return text

    def skip_string(self) -> None:
        length = self.unpack("Q")  # advances past the length first
        self.at += length

    def value(self, value_type: GGUFValueType, keep: bool):
        if value_type == GGUFValueType.STRING:
            return self.string()
        if value_type == GGUFValueType.ARRAY:
            item_type, length = GGUFValueType(self.unpack("I")), self.unpack("Q")
            if keep:
                return ArrayField(length, item_type, tuple(self.value(item_type, True) for _ in range(length)))
            if item_type == GGUFValueType.STRING:
                for _ in range(length):
                    self.skip_string()
            elif item_type == GGUFValueType.ARRAY:
                for _ in range(length):
                    self.value(item_type, False)
            else:
                self.at += length * struct.calcsize(self.order + _SCALARS[item_type])
            return ArrayField(length, item_type)
        return self.unpack(_SCALARS[value_type])


def read_gguf_header(path: Path, arrays: tuple[str, ...] = ()) -> GGUFHeader:
    """The header of `path`; the values of the array fields named in `arrays` are read too.

    A file that is not GGUF, or whose header or tensor data is cut short, is a SmolconvError that names it.
    One build reads each file's header in several stages (read-back, plan, package, verify, smoke): an
    unchanged file (same size and mtime) is parsed once per process. Callers must not change what they get.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise SmolconvError(f"{path} does not exist", "pass a .gguf file that `smolconv build` wrote") from None
    return _read_header(path.resolve(), stat.st_size, stat.st_mtime_ns, tuple(arrays))


def dequantized_tensors(path: Path, names: frozenset[str] | None = None) -> Iterator[tuple[TensorInfo, object]]:
    """Each tensor of `path` (or those in `names`) as a float32 numpy array, axes in numpy's order (the row
    length last, where GGUF lists it first), dequantized with gguf-py. The arrays are copies: the file is
    mapped only while this runs."""
    import numpy as np
    from gguf.quants import dequantize

    header = read_gguf_header(path)
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        for tensor in header.tensors:
            if names is not None and tensor.name not in names:
                continue
            raw = np.frombuffer(mapped, dtype=np.uint8, count=tensor.n_bytes,
                                offset=header.data_offset + tensor.offset)
            shape = tuple(reversed(tensor.shape))
            rows = raw.reshape(int(np.prod(shape[:-1], dtype=np.int64)), -1)
            values = dequantize(rows, tensor.tensor_type).reshape(shape).astype(np.float32)
            del raw, rows  # views into the map, which cannot close while they exist (astype copied the values)
            yield tensor, values


@functools.lru_cache(maxsize=32)
def _read_header(path: Path, size: int, mtime_ns: int, arrays: tuple[str, ...]) -> GGUFHeader:
    fix = "rebuild it: rerun `smolconv build` (or convert/quantize) with --force"
    try:
        with open(path, "rb") as handle:
            if size < 24:
                raise SmolconvError(f"{path} is not a readable GGUF file (only {size} bytes)", fix)
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                return _parse(path, buffer, size, arrays, fix)
    except FileNotFoundError:
        raise SmolconvError(f"{path} does not exist", "pass a .gguf file that `smolconv build` wrote") from None
    except (struct.error, ValueError, KeyError, OverflowError) as exc:
        raise SmolconvError(f"{path} is not a readable GGUF file (its header is cut short or corrupt: {exc})",
                            fix) from None


def _parse(path: Path, buffer, size: int, arrays: tuple[str, ...], fix: str) -> GGUFHeader:
    magic = struct.unpack_from("<I", buffer, 0)[0]
    if magic != GGUF_MAGIC:
        raise SmolconvError(f"{path} is not a readable GGUF file (wrong magic: its first bytes are "
                            f"{bytes(buffer[:4])!r}, not b'GGUF')", fix)
    order = "<"
    version = struct.unpack_from("<I", buffer, 4)[0]
    if version & 0xFFFF == 0:  # written on a big-endian machine
        order, version = ">", struct.unpack_from(">I", buffer, 4)[0]
    cursor = _Cursor(buffer, order)
    cursor.at = 8
    tensor_count, kv_count = cursor.unpack("QQ")
    header = GGUFHeader(path=path, version=version)
    header.little_endian = order == "<"
    for _ in range(kv_count):
        start = cursor.at
        key = cursor.string()
        value_type = GGUFValueType(cursor.unpack("I"))
        header.fields[key] = cursor.value(value_type, keep=key in arrays)
        header.kv_spans[key] = (start, cursor.at, value_type)
    for _ in range(tensor_count):
        name = cursor.string()
        n_dims = cursor.unpack("I")
        shape = tuple(cursor.unpack("Q") for _ in range(n_dims))
        tensor_type, offset = GGMLQuantizationType(cursor.unpack("I")), cursor.unpack("Q")
        header.tensors.append(TensorInfo(name, shape, tensor_type, offset))
    alignment = int(header.fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT))
    header.data_offset = _aligned(cursor.at, alignment)
    end = max((header.data_offset + t.offset + t.n_bytes for t in header.tensors), default=header.data_offset)
    if end > size:
        raise SmolconvError(f"{path} is truncated: its tensor data ends at byte {end}, the file at {size}", fix)
    return header


def requantized_header(source: GGUFHeader, set_u32: dict[str, int],
                       tensor_types: list[tuple[str, GGMLQuantizationType]]) -> bytes | None:
    """The header (with its padding) that llama-quantize writes for `source`: every metadata entry copied
    byte for byte in the file's order, then the `set_u32` keys with their new values, then one tensor record
    per (name, type) in the order given, each tensor's data aligned as the source's.

    None where the source is not something this can reproduce (a big-endian file, a tensor it lacks). The
    caller checks the result against what the tool really wrote.
    """
    if not source.little_endian:
        return None
    alignment = int(source.fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT))
    with open(source.path, "rb") as handle:
        raw = handle.read(max((end for _, end, _ in source.kv_spans.values()), default=0))
    # ggml sets a key by removing it and appending it: the keys set move to the end, in the order set.
    entries = [raw[start:end] for key, (start, end, _) in source.kv_spans.items() if key not in set_u32]
    entries += [_u32_entry(key, value) for key, value in set_u32.items()]

    by_name = {t.name: t for t in source.tensors}
    records, offset = [], 0
    for name, tensor_type in tensor_types:
        if name not in by_name:
            return None
        shape = list(by_name[name].shape)
        while len(shape) > 1 and shape[-1] == 1:  # ggml counts dimensions up to the last one over 1
            shape.pop()
        records.append(_string(name) + struct.pack(f"<I{len(shape)}QIQ", len(shape), *shape, tensor_type, offset))
        offset += _aligned(TensorInfo(name, tuple(shape), tensor_type, offset).n_bytes, alignment)

    header = b"".join([struct.pack("<IIQQ", GGUF_MAGIC, 3, len(records), len(entries)), *entries, *records])
    return header.ljust(_aligned(len(header), alignment), b"\0")


def _aligned(size: int, alignment: int) -> int:
    """`size` rounded up to a multiple of `alignment`, as GGUF pads its header and each tensor's data."""
    return -(-size // alignment) * alignment


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _u32_entry(key: str, value: int) -> bytes:
    return _string(key) + struct.pack("<II", GGUFValueType.UINT32, value)
