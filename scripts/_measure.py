"""Run one command and print its wall time and the peak RSS of its largest process, as JSON.

Used by the benchmark scripts: `python scripts/_measure.py CMD ARGS...`. Linux reports ru_maxrss in KiB, as
the maximum over every descendant that was waited for (not a sum).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main() -> None:
    start = time.perf_counter()
    returncode = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"returncode": returncode, "seconds": seconds, "peak_rss_mib": peak_kib / 1024}))


if __name__ == "__main__":
    main()
