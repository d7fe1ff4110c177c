"""Ask a question about an image with the ONNX export, on onnxruntime only (no torch, no server).

    smolconv export-onnx 256m --out out/smolvlm2-256m-onnx
    python examples/onnx_chat.py out/smolvlm2-256m-onnx photo.jpg "What is in this picture?"
    python examples/onnx_chat.py out/smolvlm2-256m-onnx photo.jpg --variant q4

The answer is printed as it is generated. The tokenizer is `tokenizers`, the image preprocessing numpy and
Pillow (smolconv/runtime/preprocess.py), the three graphs run in onnxruntime (smolconv/formats/onnx/runtime.py).
"""

from __future__ import annotations

import argparse
import sys

from smolconv.core.errors import SmolconvError
from smolconv.formats.onnx.runtime import VARIANT_SUFFIX, OnnxVLM
from smolconv.media.images import load_image
from smolconv.runtime.chat import Message
from smolconv.runtime.vlm import Generation, Sampling


def main() -> int:
    parser = argparse.ArgumentParser(description="Ask one question about one image (ONNX, onnxruntime).")
    parser.add_argument("folder", help="a folder `smolconv export-onnx` wrote")
    parser.add_argument("image", help="a JPEG, PNG or WebP file")
    parser.add_argument("question", nargs="?", default="Describe this image.")
    parser.add_argument("--variant", choices=tuple(VARIANT_SUFFIX), default="fp32", help="which graphs (default fp32)")
    parser.add_argument("--max-tokens", type=int, default=256, help="longest answer, in tokens (default 256)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    args = parser.parse_args()

    image = load_image(args.image)  # a missing or corrupt file stops here
    model = OnnxVLM(args.folder, args.variant, images="numpy")
    stats = Generation()
    for piece in model.stream([Message.of("user", args.question, [image])], args.max_tokens,
                              Sampling(temperature=args.temperature), stats):
        print(piece, end="", flush=True)
    stopped = "stopped by itself" if stats.finish_reason == "stop" else f"cut at {args.max_tokens} tokens"
    rate = f", {(len(stats.tokens) - 1) / stats.decode_s:.1f} tok/s" if stats.decode_s else ""
    print(f"\n[{stats.prompt_tokens} prompt tokens, image encoded in {stats.image_encode_s:.1f} s, "
          f"{len(stats.tokens)} generated{rate}, {stopped}]")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SmolconvError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
