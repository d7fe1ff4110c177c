"""Benchmark: decode speed of one GGUF served by `smolconv serve` and by llama-server started by hand.

Usage: python scripts/bench_serve.py [--build DIR] [--type Q4_K_M] [--runs 5] [--tokens 128]
Without --build it synthesizes the 256m fixture and builds it (no verify/smoke) in a temporary directory.
Both servers get the same text GGUF and projector; "by hand" is `llama-server -m TEXT --mmproj MMPROJ --port P`
with llama-server's default flags. Each run asks /completion for exactly --tokens tokens (end of text is
ignored, the prompt cache off) and reads llama-server's own timings. Prints the median, min and max.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import smolconv

from smolconv.llamacpp.toolchain import find_toolchain
from smolconv.plan import build_variants
from smolconv.runtime.serve import free_port

PROMPT = "<|im_start|>User: Write a long story about a lighthouse keeper.<end_of_utterance>\nAssistant:"


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def _wait(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become healthy in {timeout} s")


@contextlib.contextmanager
def serving(cmd: list[str], port: int, stop_signal: int):
    """Start a server, wait until it answers, yield its URL; stop it (and wait for it) when done."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, proc)
        yield url
    finally:
        proc.send_signal(stop_signal)
        proc.wait(timeout=60)


def complete(url: str, tokens: int) -> dict:
    """llama-server's timings for decoding exactly `tokens` tokens of PROMPT (end of text ignored, no prompt cache)."""
    body = {"prompt": PROMPT, "n_predict": tokens, "ignore_eos": True, "temperature": 0, "cache_prompt": False}
    timings = _post(f"{url}/completion", body)["timings"]
    assert timings["predicted_n"] == tokens, timings
    return timings


def spread(rates: list[float]) -> str:
    return f"{statistics.median(rates):.2f} tok/s (median; {min(rates):.2f}-{max(rates):.2f})"


def paired_decode(checkpoint: Path, work: Path, label: str, rate, runs: int, tokens: int) -> None:
    """`rate(tokens)` (another runtime's decode tok/s) beside llama-server with the Q4_K_M GGUF of the same checkpoint,
    one of each in turn, so that what else loads the machine falls on both alike; prints the medians and the ratio."""
    build = work / "gguf"
    subprocess.run(smolconv("build", str(checkpoint), "--out", str(build), "--type", "Q4_K_M", "--no-verify",
                            "--no-smoke", "--preset", "general"), check=True, stdout=subprocess.DEVNULL)
    variant = build_variants(build, ("Q4_K_M",))[0]
    port = free_port()
    rates, server_rates, loads = [], [], []
    with serving([str(find_toolchain().tool("llama-server")), "-m", str(variant.text_path), "--port", str(port)],
                 port, signal.SIGTERM) as url:
        complete(url, 8)  # warm-up
        for _ in range(runs):
            rates.append(rate(tokens))
            server_rates.append(complete(url, tokens)["predicted_per_second"])
            loads.append(Path("/proc/loadavg").read_text().split()[0])
    print(f"{runs} paired runs of {tokens} decoded tokens (1-min load average after each: {', '.join(loads)})")
    print(f"{label + ' decode:':<28}{spread(rates)}")
    print(f"{'llama-server Q4_K_M decode:':<28}{spread(server_rates)}")
    print(f"{label} / llama-server = {statistics.median(rates) / statistics.median(server_rates):.3f}")


def measure(cmd: list[str], port: int, runs: int, tokens: int, stop_signal: int) -> dict:
    with serving(cmd, port, stop_signal) as url:
        props = json.load(urllib.request.urlopen(f"{url}/props", timeout=10))
        complete(url, 8)  # warm-up
        decode, prompt = [], []
        for _ in range(runs):
            timings = complete(url, tokens)
            decode.append(timings["predicted_per_second"])
            prompt.append(timings["prompt_per_second"])
    return {"decode": decode, "prompt": prompt, "n_ctx": props["default_generation_settings"]["n_ctx"],
            "slots": props.get("total_slots")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", type=Path, help="A build directory (default: build the 256m fixture).")
    parser.add_argument("--type", default="Q4_K_M", help="The variant to serve.")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="smolconv-bench-serve-") as tmp:
        out = args.build
        if out is None:
            checkpoint, out = Path(tmp) / "smolvlm2-256m", Path(tmp) / "build"
            subprocess.run(smolconv("synth", "--shape", "256m", "--out", str(checkpoint)), check=True)
            subprocess.run(smolconv("build", str(checkpoint), "--out", str(out), "--type", args.type,
                                    "--no-verify", "--no-smoke", "--preset", "general"), check=True,
                           stdout=subprocess.DEVNULL)
        variant = build_variants(out, (args.type,))[0]
        server = find_toolchain().tool("llama-server")

        port = free_port()
        served = measure(smolconv("serve", str(out), "--type", args.type, "--port", str(port)), port, args.runs,
                         args.tokens, signal.SIGTERM)
        port = free_port()
        by_hand = measure([str(server), "-m", str(variant.text_path), "--mmproj", str(variant.projector_path),
                           "--port", str(port)], port, args.runs, args.tokens, signal.SIGTERM)

    print(f"{variant.text_path.name}: {args.runs} runs of {args.tokens} decoded tokens each")
    print(f"{'server':<34}{'decode tok/s (median, min-max)':>32}{'prompt tok/s':>14}{'n_ctx':>7}{'slots':>7}")
    for name, result in (("smolconv serve", served), ("llama-server by hand (defaults)", by_hand)):
        d = result["decode"]
        spread = f"{statistics.median(d):.1f} ({min(d):.1f}-{max(d):.1f})"
        print(f"{name:<34}{spread:>32}{statistics.median(result['prompt']):>14.1f}{result['n_ctx']:>7}"
              f"{result['slots'] or '':>7}")
    ratio = statistics.median(served["decode"]) / statistics.median(by_hand["decode"])
    print(f"smolconv serve / by hand = {ratio:.3f}")


if __name__ == "__main__":
    sys.exit(main())
