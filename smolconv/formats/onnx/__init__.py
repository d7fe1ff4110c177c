"""ONNX export of SmolVLM2 in the three-graph layout Hugging Face publishes (and transformers.js loads).

- graphs.py: the vision encoder, token embedding and merged decoder as torch modules to export;
- export.py: `smolconv export-onnx` (fp32 graphs, variants, config files, build.json);
- quantize.py: the `_fp16`, `_quantized`, `_q4`, `_q4f16` variants with onnxruntime's own tools;
- runtime.py: a small onnxruntime runner (generation, streaming) and the smoke backend;
- verify.py: fp32 against transformers, each variant against fp32.

onnx and onnxruntime are an optional extra: `pip install 'smolconv[onnx]'`.
"""

from __future__ import annotations

from smolconv.core.errors import SmolconvError

INSTALL = "pip install 'smolconv[onnx]'"


def require_onnx() -> None:
    """One line naming the install command when the extra is missing (instead of an ImportError later)."""
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise SmolconvError(f"the ONNX tools need the Python package {module}, which is not installed",
                                f"run {INSTALL}") from None
