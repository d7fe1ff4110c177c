"""Opening a GGUF file smolconv did not just write: one line for a file that is not a whole GGUF."""

from __future__ import annotations

from pathlib import Path

from gguf import GGUFReader

from smolconv.errors import SmolconvError


def open_gguf(path: Path) -> GGUFReader:
    """GGUFReader, with a file that is not a whole GGUF (wrong magic, cut short) as a one-line SmolconvError."""
    path = Path(path)
    fix = "rebuild it: rerun `smolconv build` (or convert/quantize) with --force"
    try:
        reader = GGUFReader(path)
    except FileNotFoundError:
        raise SmolconvError(f"{path} does not exist", fix) from None
    except ValueError as exc:
        if "reshape" in str(exc):  # gguf-py maps each tensor's data: a short file cannot fill the last ones
            raise SmolconvError(f"{path} is truncated: its tensor data is cut short ({exc})", fix) from None
        raise SmolconvError(f"{path} is not a readable GGUF file ({exc})", fix) from None
    except (IndexError, OSError, KeyError) as exc:  # gguf-py raises these for a damaged header
        raise SmolconvError(f"{path} is not a readable GGUF file ({exc})", fix) from None
    if reader.tensors:
        end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
        size = path.stat().st_size
        if end > size:
            raise SmolconvError(f"{path} is truncated: its tensor data ends at byte {end}, the file at {size}", fix)
    return reader
