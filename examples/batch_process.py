"""Ask the same question about every image in a folder; one JSON line per image, resumable.

    python examples/batch_process.py photos/ --out captions.jsonl
    python examples/batch_process.py photos/ --out captions.jsonl --prompt "Read the text in this image."

Each line: {"image": path relative to the folder, "sha256", "answer", "finish_reason", "prompt_tokens",
"completion_tokens", "seconds"}, or {"image", "sha256", "error"} for a file that is not a usable image.
Run it again after an interruption and it skips the images the file already answers (same path and
sha256); a line cut off by the interruption is dropped first. Every line is flushed to disk as written.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from _common import backend_parser, open_backend, run
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from smolconv.core.errors import SmolconvError
from smolconv.media.images import load_image
from smolconv.runtime.chat import Message

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def done_already(out: Path) -> set[tuple[str, str]]:
    """(image, sha256) of every complete line; a last line without its newline is cut off."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(out, "r+b") as f:  # drop the line an interruption left half written
            f.truncate(len(complete))
    done = set()
    for line in complete.decode().splitlines():
        record = json.loads(line)
        done.add((record["image"], record["sha256"]))
    return done


def main() -> int:
    parser = backend_parser("Ask one question about every image in a folder, writing JSON Lines.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="the JSON Lines file (appended to, resumable)")
    parser.add_argument("--prompt", default="Describe this image in one sentence.")
    args = parser.parse_args()

    if not args.folder.is_dir():
        raise SmolconvError(f"{args.folder} is not a folder", "pass the folder that holds the images")
    images = images_in(args.folder)
    if not images:
        raise SmolconvError(f"{args.folder} holds no .jpg, .png or .webp files", "check the folder")
    done = done_already(args.out)
    backend = open_backend(args)

    failed = skipped = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress, open(args.out, "a") as out:
        task = progress.add_task("images", total=len(images))
        for path in images:
            name = str(path.relative_to(args.folder))
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if (name, digest) in done:
                skipped += 1
                progress.advance(task)
                continue
            progress.update(task, description=name)
            record = {"image": name, "sha256": digest}
            try:
                image = load_image(path)
            except SmolconvError as exc:
                record["error"] = exc.one_line()
                failed += 1
            else:
                answer = backend.chat([Message.of("user", args.prompt, [image])], args.max_tokens)
                record |= {"answer": answer.text.strip(), "finish_reason": answer.finish_reason,
                           "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                           "seconds": round(answer.wall_s, 3)}
            out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())
            progress.advance(task)
    print(f"{len(images) - skipped - failed} answered, {skipped} already done, {failed} not usable: {args.out}")
    return 0


if __name__ == "__main__":
    run(main)
