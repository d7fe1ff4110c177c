"""Run one command and print its wall time and peak memory, as JSON.

Used by the benchmark scripts: `python scripts/_measure.py CMD ARGS...`. `peak_rss_mib` is the peak of the whole
process tree's RSS summed (smolconv and the converter or llama tool it runs hold memory at the same time),
sampled every SAMPLE_S from /proc, and never below `largest_process_mib`: Linux's ru_maxrss over every waited-for
descendant, the largest single process (exact, but not a sum). RSS counts a page shared by two processes (a GGUF
both map) twice, so the sum can exceed what the machine really gave; it is what a user's `top` adds up.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time

SAMPLE_S = 0.05
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
    """Bytes of RSS of `root` and every process under it (parents from /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # it ended while we looked
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def main() -> None:
    start = time.perf_counter()
    process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_tree = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not done.wait(SAMPLE_S):
            peak_tree = max(peak_tree, tree_rss(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    returncode = process.wait()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"returncode": returncode, "seconds": seconds, "peak_rss_mib": max(peak_tree, largest) / 2**20,
                      "largest_process_mib": largest / 2**20}))


if __name__ == "__main__":
    main()
