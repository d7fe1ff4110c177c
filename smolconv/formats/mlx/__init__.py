"""MLX export of SmolVLM2 for Apple silicon, in the layout mlx-community publishes (what `mlx_vlm.load` reads).

- export.py: `smolconv export-mlx`: a checkpoint (alias, Hub id, directory, or base + adapter merged) → a staged
  copy with mlx-vlm's config traps fixed → mlx-vlm's own converter → the folder, read back and checked;
- verify.py: the export against transformers (float32), and a quantized export against the unquantized one.

MLX and mlx-vlm are an optional extra: `pip install 'smolconv[mlx]'` (MLX's CPU build on Linux, `mlx` on macOS,
and the mlx-vlm version whose traps smolconv knows).
"""

from __future__ import annotations

from smolconv.core.errors import SmolconvError

INSTALL = "pip install 'smolconv[mlx]'"
# The mlx-vlm release whose converter and SmolVLM model smolconv's fixes were written against (pyproject pins it).
MLX_VLM_VERSION = "0.7.10"


def require_mlx() -> None:
    """One line naming the install command when the extra is missing or incomplete (instead of an ImportError
    later, or a converter that fails in its own words). Imports MLX's core only: mlx_vlm imports transformers
    and takes seconds, and the converter runs in its own process."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        import mlx.core  # noqa: F401
    except ImportError as exc:
        # Linux's plain `mlx` wheel imports and then misses libmlx.so: name that case, it looks installed.
        missing = "its library" if "libmlx" in str(exc) else "the Python package mlx"
        raise SmolconvError(f"the MLX export needs MLX, and {missing} is not installed",
                            f"run {INSTALL} (on Linux it installs mlx[cpu])") from None
    try:
        installed = version("mlx-vlm")
    except PackageNotFoundError:
        raise SmolconvError("the MLX export needs the Python package mlx-vlm, which is not installed",
                            f"run {INSTALL}") from None
    if installed != MLX_VLM_VERSION:
        raise SmolconvError(f"mlx-vlm {installed} is installed; smolconv's fixes for its converter are written for "
                            f"{MLX_VLM_VERSION}", f"run {INSTALL} to install that version") from None
