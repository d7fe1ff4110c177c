"""Video on llama-server: smolconv's path against llama-server's own `input_video`, on the same clip, in one run.

    python scripts/bench_video.py out/demo/build            # a build directory (smolconv build), e.g. make demo's
    python scripts/bench_video.py BUILD --seconds 4 --input-video-ctx 16384 --variant Q8_0

smolconv's path: frames sampled as transformers samples them (1 fps), each squared to the tile, SmolVLM2's video
prompt, llama-server with the build's video projector (one tile and an overview a frame). llama-server's own:
the clip as an `input_video` part (its ffmpeg helper, 4 fps by default, each frame tiled by the ordinary
projector like a photo); needs `ffmpeg` on PATH. Also, for reference, the old example's way: smolconv's frames
as ordinary images through the ordinary projector. Prints prompt tokens, tokens per frame and the seconds the
prompt takes (a one-token request) per second of video for each, and the ratios.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from smolconv.llamacpp.toolchain import find_toolchain
from smolconv.media.drawn import write_clip
from smolconv.media.video import prompt_parts, sample
from smolconv.record.builddir import BuildDir
from smolconv.runtime.chat import LlamaServerBackend, Message
from smolconv.runtime.serve import ServeOptions, pick_variant, start_server

QUESTION = "What moves in this video, and where does it go?"
LLAMA_SERVER_VIDEO_FPS = 4.0  # mtmd-helper.cpp's default fps_target


def timed_chat(backend: LlamaServerBackend, messages: list, body: dict | None = None) -> dict:
    """One request (max 1 token): prompt tokens and llama-server's own prompt time."""
    if body is None:
        answer = backend.chat(messages, 1)
        timings = answer.stats["timings"]
        return {"prompt_tokens": answer.prompt_tokens, "prompt_s": timings.get("prompt_ms", 0) / 1000,
                "wall_s": answer.wall_s}
    started = time.monotonic()
    # input_video encodes every frame as a tiled photo: minutes on a CPU, past the client's usual timeout.
    response = backend.client.post(f"{backend.url}/v1/chat/completions", json=body, timeout=3600)
    if response.status_code != 200:
        raise SystemExit(f"llama-server refused input_video: {response.status_code} {response.text[:300]}")
    data = response.json()
    return {"prompt_tokens": data["usage"]["prompt_tokens"], "prompt_s": data["timings"]["prompt_ms"] / 1000,
            "wall_s": time.monotonic() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path)
    parser.add_argument("--variant", default=None)
    # Short by default: llama-server's input_video samples 4 fps and tiles each 16:9 frame into 13 tiles, so 2 s is
    # already about 7K tokens (16 s would be 55K, past any context an 8 GB card holds) and minutes of CPU encoding.
    parser.add_argument("--seconds", type=float, default=2)
    parser.add_argument("--input-video-ctx", type=int, default=8192, help="num_ctx of llama-server's own path")
    parser.add_argument("--size", default="640x360", help="the clip's width x height (16:9 by default)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON (scripts/make_figures.py)")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        print("llama-server's input_video needs ffmpeg on PATH (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    width, height = (int(n) for n in args.size.split("x"))
    toolchain = find_toolchain()
    build = BuildDir.open(args.build)
    variant = pick_variant(build, args.variant)
    if variant.video_projector_path is None:  # a build from before the video projector: write it, as ask does
        from smolconv.formats.gguf.video_projector import write_video_projector

        write_video_projector(build)
        variant = pick_variant(build, variant.name)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", seconds=args.seconds, fps=10, size=(width, height))
        video = sample(clip, frame_size=variant.projector.image_size)
        frames = len(video.frames)
        serve = ServeOptions(args.build, variant.name, port=0, threads=args.threads)
        with start_server(serve, toolchain, variant.for_video()) as server:
            backend = LlamaServerBackend(server.url)
            r = timed_chat(backend, [Message("user", prompt_parts(video, QUESTION))])
            rows.append(("smolconv: video prompt, video projector", frames, r))
        with start_server(replace(serve, num_ctx=args.input_video_ctx), toolchain, variant) as server:
            backend = LlamaServerBackend(server.url)
            clip_b64 = base64.b64encode(clip.read_bytes()).decode()
            body = {"messages": [{"role": "user", "content": [
                {"type": "input_video", "input_video": {"url": f"data:video/mp4;base64,{clip_b64}"}},
                {"type": "text", "text": QUESTION}]}], "max_tokens": 1, "temperature": 0}
            r = timed_chat(backend, [], body)
            sampled = round(args.seconds * LLAMA_SERVER_VIDEO_FPS)
            rows.append(("llama-server input_video (4 fps), image projector", sampled, r))
            r = timed_chat(backend, [Message.of("user", QUESTION, [f.image for f in video.frames])])
            rows.append(("frames as ordinary images, image projector", frames, r))
    print(f"clip: {args.seconds:g} s, {width}x{height}; build {args.build} ({variant.name}); "
          f"prompt tokens include the question and the chat template")
    # wall: the whole one-token request (decoding the frames, encoding them, the prompt pass); llama-server's own
    # prompt_ms leaves out image encoding, so it is printed beside it but not used for the ratio.
    print(f"{'path':<52} {'frames':>6} {'prompt tok':>10} {'tok/frame':>9} {'wall s':>7} {'prompt_ms s':>11} "
          f"{'wall s per video s':>18}")
    per_frame = {}
    for name, n, r in rows:
        per_frame[name] = r["prompt_tokens"] / n
        print(f"{name:<52} {n:>6} {r['prompt_tokens']:>10} {per_frame[name]:>9.1f} {r['wall_s']:>7.2f} "
              f"{r['prompt_s']:>11.2f} {r['wall_s'] / args.seconds:>18.3f}")
    ours, theirs = rows[0], rows[1]
    print(f"tokens per frame, smolconv / input_video: {ours[2]['prompt_tokens'] / ours[1]:.1f} / "
          f"{theirs[2]['prompt_tokens'] / theirs[1]:.1f} = "
          f"{(ours[2]['prompt_tokens'] / ours[1]) / (theirs[2]['prompt_tokens'] / theirs[1]):.3f}")
    print(f"seconds per video second, smolconv / input_video: {ours[2]['wall_s'] / theirs[2]['wall_s']:.3f}")
    if args.json:
        backend = toolchain.info.get("backend") or "own build"
        device = f"{platform.machine()}, {os.cpu_count()} cores, llama.cpp {backend}"
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device,
            "load_average": [round(x, 2) for x in os.getloadavg()], "build": args.build.name,
            "variant": variant.name, "seconds": args.seconds, "size": f"{width}x{height}",
            "rows": [{"path": name.split(",")[0], "what": name, "frames": n, "prompt_tokens": r["prompt_tokens"],
                      "tokens_per_frame": round(r["prompt_tokens"] / n, 1), "wall_s": round(r["wall_s"], 2),
                      "prompt_s": round(r["prompt_s"], 2), "wall_s_per_video_s": round(r["wall_s"] / args.seconds, 2)}
                     for name, n, r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
