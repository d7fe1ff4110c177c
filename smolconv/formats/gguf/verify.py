"""`smolconv verify`: how far the GGUF files are from the Hugging Face model, and what quantization cost.

F16 text, the projector and a video prompt against transformers in float32, each quantized variant's KL divergence
against F16; docs/ARCHITECTURE.md ("How verify compares") says how each side is measured.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np

from smolconv.core.choices import VerifyCheck, VerifyPart
from smolconv.core.errors import SmolconvError
from smolconv.llamacpp.toolchain import Toolchain
from smolconv.media.drawn import write_clip
from smolconv.media.video import prompt_parts, sample
from smolconv.plan import Variant
from smolconv.process.runner import run_tool
from smolconv.record.builddir import BuildDir
from smolconv.record.lock import hold_folder
from smolconv.record.reports import save_report
from smolconv.reference.gates import Gates, model_size
from smolconv.reference.metrics import centred, comparable, kl_divergence, nmse
from smolconv.reference.prompts import DEFAULT_PROMPTS, KLD_TEXT, _test_tile
from smolconv.reference.transformers import (
    _load_reference,
    adapter_effect,
    reference_logits,
    reference_prompt_logits,
    reference_tile_embeddings,
)
from smolconv.runtime.chat import Message
from smolconv.runtime.preprocess import Tiles, image_prompt
from smolconv.runtime.serve import ServeOptions, start_server
from smolconv.runtime.vlm import ConversationPrompt
from smolconv.source.checkpoint import fixture_info

KLD_CTX = 512
VIDEO_SECONDS = 4             # 4 frames at 1 fps: frames between text, and a short check
VIDEO_QUESTION = "What moves in this video, and where does it go?"







@dataclass
class VerifyOptions:
    out_dir: Path
    checkpoint: Path | None = None      # default: the source recorded in build.json
    types: tuple[str, ...] | None = None  # variants for the KLD table (default: every quantized one)
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    text: Path = KLD_TEXT
    gates: Gates = field(default_factory=Gates)
    skip: frozenset[str] = frozenset()  # VerifyPart values left out; the report says so
    threads: int | None = None
    wait: bool = False                # another smolconv writing the folder: wait for it (else refuse)


@dataclass
class PromptResult:
    prompt: str
    n_tokens: int
    nmse: float
    top1_hf: int
    top1_gguf: int
    tokenizer_same: bool | None
    # With an adapter: KL(base + adapter ‖ base) of the HF reference here; how far the fine-tune moved it.
    adapter_kl: float | None = None

    @property
    def top1_same(self) -> bool:
        return self.top1_hf == self.top1_gguf


@dataclass
class VisionResult:
    checked: bool                  # an NMSE was measured
    nmse: float | None = None
    n_tokens: int | None = None
    reason: str = ""
    could_not_run: bool = False    # asked for, but this llama.cpp cannot show the projector's output
    wrong_shape: bool = False      # llama.cpp's output has another shape than transformers': a wrong projector


@dataclass
class VideoResult:
    checked: bool
    reason: str = ""
    frames: int = 0
    nmse: float | None = None              # llama-server's last-position logits against transformers' on its layout
    kl: float | None = None                # KL(transformers ‖ llama-server) on that prompt
    top1_same: bool | None = None
    tokens_llama_cpp: int | None = None    # prompt tokens llama-server evaluated
    tokens_expected: int | None = None     # llama.cpp's layout, as transformers tokenizes it
    tokens_transformers: int | None = None  # transformers' own video prompt (one tile a frame)
    layout_kl: float | None = None         # KL(transformers' own prompt ‖ transformers on llama.cpp's layout)

    @property
    def layout_differs(self) -> bool:
        return self.checked and self.tokens_llama_cpp != self.tokens_expected


@dataclass
class KldResult:
    variant: str
    mean_kld: float
    kld_p99: float | None
    same_top: float          # fraction of positions whose top token equals F16's
    ppl_ratio: float | None
    gate: float | None

    @property
    def passed(self) -> bool:
        return self.gate is None or self.mean_kld <= self.gate


@dataclass
class VerifyReport:
    text: list[PromptResult]
    vision: VisionResult
    kld: list[KldResult]
    gates: Gates
    video: VideoResult = field(default_factory=lambda: VideoResult(False, reason="not checked"))
    f16_ppl: float | None = None
    skipped: tuple[str, ...] = ()  # VerifyPart values left out on request
    seconds: float = 0.0
    path: Path | None = None

    @property
    def max_nmse(self) -> float:
        return max(r.nmse for r in self.text) if self.text else math.nan

    @property
    def failures(self) -> list[str]:
        problems = []
        if self.text and not self.max_nmse < self.gates.max_nmse:
            problems.append(f"F16 logits NMSE {self.max_nmse:.2e} is over the gate {self.gates.max_nmse:.0e}")
        differing = [r for r in self.text if r.tokenizer_same is False]
        if differing:
            problems.append(f"the GGUF tokenizes {len(differing)} of {len(self.text)} prompts differently from the "
                            f"HF tokenizer (first: {differing[0].prompt[:40]!r})")
        if self.vision.checked and not (self.vision.nmse or 0) < self.gates.max_vision_nmse:
            problems.append(f"projector NMSE {self.vision.nmse:.2e} is over the gate "
                            f"{self.gates.max_vision_nmse:.0e}")
        if self.vision.wrong_shape:
            problems.append(f"projector: {self.vision.reason}")
        if self.vision.could_not_run and VerifyCheck.VISION not in self.gates.allow_unchecked:
            problems.append(f"projector {self.vision.reason}; --allow-unchecked {VerifyCheck.VISION} accepts that")
        if self.video.layout_differs:
            problems.append(f"video prompt: llama-server evaluated {self.video.tokens_llama_cpp} tokens where "
                            f"llama.cpp's frame layout gives {self.video.tokens_expected}")
        elif self.video.checked and not self.video.nmse < self.gates.max_video_nmse:
            problems.append(f"video prompt logits NMSE {self.video.nmse:.2e} is over the gate "
                            f"{self.gates.max_video_nmse:.0e}")
        problems += [f"{k.variant} mean KLD {k.mean_kld:.4f} is over the gate {k.gate}"
                     for k in self.kld if not k.passed]
        return problems

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def unchecked(self) -> list[str]:
        """The checks that could not run (VerifyCheck values), allowed or not."""
        return [VerifyCheck.VISION.value] if self.vision.could_not_run else []

    @property
    def adapter_kl(self) -> float | None:
        """The largest KL(base + adapter ‖ base) over the prompts; None without an adapter."""
        values = [r.adapter_kl for r in self.text if r.adapter_kl is not None]
        return max(values) if values else None

    def to_dict(self) -> dict:
        return {
            "passed": self.passed, "failures": self.failures, "seconds": round(self.seconds, 2),
            "gates": asdict(self.gates), "unchecked": self.unchecked, "skipped": list(self.skipped),
            "text": {"max_nmse": self.max_nmse, "top1_agree": sum(r.top1_same for r in self.text),
                     "adapter_kl": self.adapter_kl,
                     "prompts": [asdict(r) | {"top1_same": r.top1_same} for r in self.text]},
            "vision": asdict(self.vision),
            "video": asdict(self.video),
            "kld": {"f16_ppl": self.f16_ppl, "text": KLD_TEXT.name, "n_ctx": KLD_CTX,
                    "variants": [asdict(k) | {"passed": k.passed} for k in self.kld]},
        }








# --------------------------------------------------------------------------------------------------
# The Hugging Face reference
















# --------------------------------------------------------------------------------------------------
# llama.cpp's side


def gguf_logprobs(url: str, ids: list[int], n_vocab: int) -> np.ndarray:
    return gguf_completion(url, ids, n_vocab)[0]


def gguf_completion(url: str, prompt: list[int] | dict, n_vocab: int) -> tuple[np.ndarray, dict]:
    """Last-position log-probabilities over the vocabulary for a prompt (ids, or llama-server's multimodal
    object), and the server's answer (its prompt token count in `tokens_evaluated`)."""
    # llama-server holds a token back while its text is an incomplete UTF-8 sequence (a byte token), and its
    # probabilities with it: when the greedy next token is one, a few more tokens complete the text, and the
    # first entry is still the first position's.
    for n_predict in (1, 4):
        response = httpx.post(f"{url}/completion", timeout=1800, json={
            "prompt": prompt, "n_predict": n_predict, "n_probs": n_vocab, "temperature": 0, "cache_prompt": False,
            "post_sampling_probs": False,
        })
        if response.status_code != 200:
            raise SmolconvError(f"llama-server refused the logits request (HTTP {response.status_code}: "
                                f"{response.text[:200]})", "check that the F16 GGUF loads with llama-server")
        answer = response.json()
        if answer.get("completion_probabilities"):
            break
    else:
        raise SmolconvError("llama-server sent no token probabilities for a verify prompt",
                            "check that this llama.cpp's llama-server answers /completion with n_probs")
    first = answer["completion_probabilities"][0]
    out = np.full(n_vocab, -np.inf)
    for entry in first["top_logprobs"]:
        out[entry["id"]] = entry["logprob"]
    if first.get("id") is not None and first["id"] != int(np.argmax(out)):
        raise SmolconvError("llama-server's first token is not the greedy one of the probabilities it sent",
                            "report this with the llama.cpp commit (`smolconv --version`)")
    return out, answer


def gguf_tokens(url: str, text: str) -> list[int]:
    response = httpx.post(f"{url}/tokenize", json={"content": text, "add_special": False, "parse_special": True},
                          timeout=60)
    return response.json().get("tokens", [])


def text_server(variant: Variant, toolchain: Toolchain, threads: int | None):
    """llama-server on the variant's text model alone, for compare_text (a context manager that stops it)."""

    options = ServeOptions(variant.text_path.parent, variant.name, port=0, num_ctx=2048, projector=False,
                           threads=threads)
    return start_server(options, toolchain, variant=variant)


def compare_text(url: str, prompts: tuple[str, ...], tokenizer, model) -> list[PromptResult]:
    """Each prompt's next-token distribution from the server at `url` against the reference model's."""
    results = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reference = reference_logits(model, ids)
        logprobs = gguf_logprobs(url, ids, len(reference))
        a, b = comparable(reference, logprobs)
        results.append(PromptResult(
            prompt=prompt, n_tokens=len(ids), nmse=nmse(centred(a), centred(b)),
            top1_hf=int(np.argmax(reference)), top1_gguf=int(np.argmax(logprobs)),
            tokenizer_same=gguf_tokens(url, prompt) == ids,
            adapter_kl=adapter_effect(model, ids, reference),
        ))
    return results




def compare_vision(variant: Variant, checkpoint: Path, toolchain: Toolchain, model,
                   threads: int | None) -> VisionResult:
    from PIL import Image

    projector = variant.projector
    tokens = projector.tokens_per_tile
    with tempfile.TemporaryDirectory(prefix="smolconv-verify-") as tmp:
        tile = _test_tile(projector.image_size)
        image_path, dump = Path(tmp) / "tile.png", Path(tmp) / "embeddings.bin"
        Image.fromarray(tile).save(image_path)
        args = [toolchain.tool("llama-mtmd-cli"), "-m", variant.text_path, "--mmproj", variant.projector_path,
                "--image", image_path, "-p", "Describe.", "-n", "1", "--temp", "0",
                "--image-min-tokens", str(tokens), "--image-max-tokens", str(tokens)]
        if variant.adapter_path is not None:
            args += ["--lora", variant.adapter_path]
        if threads:
            args += ["-t", str(threads)]
        run_tool(args, what="encoding a test tile with llama-mtmd-cli", env={"MTMD_DEBUG_EMBEDDINGS": str(dump)},
                 fix="check that the projector loads with llama-mtmd-cli", timeout=1800)
        if not dump.is_file():
            return VisionResult(False, could_not_run=True, reason="not checked: this llama.cpp does not write "
                                "projector embeddings (MTMD_DEBUG_EMBEDDINGS)")
        n_tokens, n_embd = np.fromfile(dump, dtype=np.int32, count=2)
        gguf = np.fromfile(dump, dtype=np.float32, offset=8).reshape(n_tokens, n_embd)
    reference = reference_tile_embeddings(model, checkpoint, tile)
    if reference.shape != gguf.shape:
        return VisionResult(False, wrong_shape=True, reason=f"llama.cpp's output for one tile is "
                            f"{tuple(gguf.shape)}, transformers' {tuple(reference.shape)}")
    return VisionResult(True, nmse=nmse(reference, gguf), n_tokens=int(n_tokens))




def compare_video(variant: Variant, checkpoint: Path, toolchain: Toolchain, model,
                  threads: int | None) -> VideoResult:
    """llama-server with the video projector against transformers on a clip's video prompt (module docstring, 3)."""
    import base64

    if variant.video_projector_path is None:
        return VideoResult(False, reason="not checked: this build has no video projector (build it again)")
    video_variant = variant.for_video()
    with tempfile.TemporaryDirectory(prefix="smolconv-verify-video-") as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", seconds=VIDEO_SECONDS)
        video = sample(clip, frame_size=video_variant.projector.image_size)
    conversation = ConversationPrompt(checkpoint)
    text, frames = conversation.render([Message("user", prompt_parts(video, VIDEO_QUESTION), video=True)])
    seq_len = conversation.image_seq_len
    # transformers' own prompt: a frame is one tile. llama.cpp's: the tile as a 1×1 grid, then the overview, the
    # same pixels twice (mtmd's idefics3 layout is SmolVLMProcessor's for a 1×1 split).
    own_ids = conversation.encode(conversation.expand(text, [image_prompt(f, seq_len) for f in frames]))
    two_tiles = [Tiles(np.concatenate([f.pixels, f.pixels]), 1, 1) for f in frames]
    ids = conversation.encode(conversation.expand(text, [image_prompt(t, seq_len) for t in two_tiles]))
    reference = reference_prompt_logits(model, ids, np.concatenate([t.pixels for t in two_tiles]))
    own = reference_prompt_logits(model, own_ids, np.concatenate([f.pixels for f in frames]))

    options = ServeOptions(variant.text_path.parent, variant.name, port=0, num_ctx=max(2048, len(ids) + 64),
                           threads=threads)
    with start_server(options, toolchain, variant=video_variant) as server:
        # Where each multimodal_data entry goes: a marker the server draws at random when it starts.
        marker = httpx.get(f"{server.url}/props", timeout=60).json()["media_marker"]
        server_prompt = {"prompt_string": conversation.expand(text, [marker] * len(frames)),
                         "multimodal_data": [base64.b64encode(f.image.data).decode() for f in video.frames]}
        logprobs, answer = gguf_completion(server.url, server_prompt, len(reference))
    a, b = comparable(reference, logprobs)
    return VideoResult(
        True, frames=len(frames), nmse=nmse(centred(a), centred(b)), kl=kl_divergence(a, b),
        top1_same=int(np.argmax(reference)) == int(np.argmax(logprobs)),
        tokens_llama_cpp=int(answer.get("tokens_evaluated", 0)), tokens_expected=len(ids),
        tokens_transformers=len(own_ids), layout_kl=kl_divergence(own, reference))


_FLOAT = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def parse_kld(output: str) -> dict:
    def find(pattern: str) -> float | None:
        # The summary lines have "name: value"; the per-chunk table's header names the same columns.
        match = re.search(r"^\s*" + pattern + r"\s*:\s*" + _FLOAT, output, re.MULTILINE)
        return float(match.group(1)) if match else None

    mean = find(r"Mean\s+KLD")
    same = find(r"Same top p")
    if mean is None or same is None:
        raise SmolconvError("llama-perplexity printed no KL divergence summary",
                            "check its output by hand: the text may be shorter than two contexts")
    return {"mean_kld": mean, "kld_p99": find(r"99\.0%\s+KLD"), "same_top": same / 100,
            "ppl_ratio": find(r"Mean PPL\(Q\)/PPL\(base\)")}


def compare_quants(base: Variant, variants: list[Variant], text: Path, gates: Gates, toolchain: Toolchain,
                   threads: int | None) -> tuple[float | None, list[KldResult]]:
    if not variants:
        return None, []
    if not text.is_file():
        raise SmolconvError(f"text {text} does not exist", "pass a UTF-8 text file with --text")
    perplexity = toolchain.tool("llama-perplexity")
    common = ["-f", text, "-c", str(KLD_CTX)] + (["-t", str(threads)] if threads else [])
    if base.adapter_path is not None:  # a GGUF LoRA: every variant is measured with it, as it is served
        common += ["--lora", base.adapter_path]
    results = []
    with tempfile.TemporaryDirectory(prefix="smolconv-kld-") as tmp:
        logits = Path(tmp) / "f16.kld"
        fix = f"the text must hold at least {2 * KLD_CTX} tokens; check the GGUF loads with llama-perplexity"
        done = run_tool([perplexity, "-m", base.text_path, *common, "--kl-divergence-base", logits],
                        what="F16 logits for the KL divergence", fix=fix, timeout=3600)
        match = re.search(r"Final estimate: PPL = " + _FLOAT, done.output)
        f16_ppl = float(match.group(1)) if match else None
        for variant in variants:
            out = run_tool([perplexity, "-m", variant.text_path, *common, "--kl-divergence-base", logits,
                            "--kl-divergence"], what=f"KL divergence of {variant.name}", fix=fix, timeout=3600)
            results.append(KldResult(variant=variant.name, gate=gates.kld_gate(variant.name),
                                     **parse_kld(out.output)))
    return f16_ppl, results


# --------------------------------------------------------------------------------------------------


def verify(options: VerifyOptions, toolchain: Toolchain, progress=lambda stage, fraction=None: None,
           build: BuildDir | None = None, key: str | None = None) -> VerifyReport:
    """`key`: what the result depends on (pipeline's check key), recorded with it in build.json."""
    started = time.monotonic()
    out_dir = Path(options.out_dir)
    with hold_folder(out_dir, wait=options.wait, on_wait=lambda text: progress(text, None)):
        build = build or BuildDir.open(out_dir)
        manifest = build.manifest
        checkpoint = options.checkpoint or manifest.source.checkpoint or Path("")
        if not checkpoint or not (checkpoint / "config.json").is_file():
            raise SmolconvError(f"the Hugging Face checkpoint of {out_dir} is not at {checkpoint}",
                                "pass --checkpoint DIR, or run `smolconv pull` for the model again")
        variants = {v.name: v for v in build.variants()}
        if "F16" not in variants:
            raise SmolconvError(f"{out_dir} has no F16 conversion to compare",
                                "run `smolconv convert` (verify compares F16 with the HF model)")
        base = variants["F16"]
        wanted = options.types if options.types is not None else tuple(n for n in variants if n != "F16")
        missing = [t for t in wanted if t not in variants]
        if missing:
            raise SmolconvError(f"{out_dir} has no {missing[0]} variant", f"choose from {', '.join(variants)}")

        gates = options.gates
        if gates.size is None:  # the default KLD gates are per model size
            gates = replace(gates, size=model_size(base.text.n_embd))
        if fixture_info(checkpoint) is not None:
            gates = replace(gates, default_kld=False)
        adapter_record = manifest.adapter
        adapter = Path(adapter_record.path) if adapter_record else None
        if adapter is not None and not (adapter / "adapter_config.json").is_file():
            raise SmolconvError(f"the adapter of {out_dir} is not at {adapter}",
                                "run `smolconv build` with --adapter again")
        # The server first: it fails fast on a bad GGUF, before the slow import of transformers and the reference
        # load, and it sits in memory no longer than before (compare_text holds both at once anyway).
        progress("starting llama-server with F16", None)
        with text_server(base, toolchain, options.threads) as server:
            progress("loading the Hugging Face reference (float32)" + (" with the adapter" if adapter else ""), None)
            tokenizer, model = _load_reference(checkpoint, adapter)
            progress("F16 logits against transformers", None)
            text = compare_text(server.url, options.prompts, tokenizer, model)
        skipped = tuple(part.value for part in VerifyPart if part in options.skip)
        vision = VisionResult(False, reason=f"not checked (--skip-check {VerifyPart.VISION})")
        if VerifyPart.VISION not in options.skip:
            progress("projector output against the HF connector", None)
            vision = compare_vision(base, checkpoint, toolchain, model, options.threads)
        video = VideoResult(False, reason=f"not checked (--skip-check {VerifyPart.VIDEO})")
        if VerifyPart.VIDEO not in options.skip:
            progress("a video prompt against transformers", None)
            video = compare_video(base, checkpoint, toolchain, model, options.threads)
        del model
        f16_ppl, kld = None, []
        if VerifyPart.KLD not in options.skip:
            progress("KL divergence of each variant against F16", None)
            f16_ppl, kld = compare_quants(base, [variants[t] for t in wanted], options.text, gates, toolchain,
                                          options.threads)
        report = VerifyReport(text=text, vision=vision, kld=kld, gates=gates, video=video, f16_ppl=f16_ppl,
                              skipped=skipped, seconds=time.monotonic() - started)
        report.path = save_report(out_dir, report.to_dict(), {
            "max_nmse": report.max_nmse, "top1_agree": f"{sum(r.top1_same for r in text)}/{len(text)}"},
            manifest=manifest, key=key)
        return report


