"""verify's arithmetic and llama-perplexity parsing (the runs against real files are in test_verify.py)."""

from __future__ import annotations

import numpy as np
import pytest

from smolconv.core.errors import SmolconvError
from smolconv.formats.gguf.verify import KldResult, PromptResult, VerifyReport, VisionResult, parse_kld
from smolconv.reference.gates import Gates
from smolconv.reference.metrics import centred, nmse

PERPLEXITY_TAIL = """
chunk   PPL   ln(PPL(Q)/PPL(base))   KL Divergence   Δp RMS   Same top p
   1      38.1234 ±  4.1234   0.01234 ± 0.01234   0.06234 ± 0.00434   2.123 ± 0.123 %   91.234 ± 1.234 %
====== Perplexity statistics ======
Mean PPL(Q)                   :  47.470000 ±   2.500000
Mean PPL(Q)/PPL(base)         :   1.104625 ±   0.010000
====== KL divergence statistics ======
Mean    KLD:   0.065279 ±   0.003000
Maximum KLD:   1.500000
99.9%   KLD:   0.900000
99.0%   KLD:   0.415347
Median  KLD:   0.030000
====== Token probability statistics ======
Same top p: 88.235 ± 1.008 %
"""


def test_parse_kld_reads_the_summary_not_the_chunk_table():
    parsed = parse_kld(PERPLEXITY_TAIL)
    assert parsed == {"mean_kld": 0.065279, "kld_p99": 0.415347, "same_top": pytest.approx(0.88235),
                      "ppl_ratio": 1.104625}


def test_parse_kld_without_a_summary_is_an_error():
    with pytest.raises(SmolconvError, match="no KL divergence summary"):
        parse_kld("main: error: you need at least 1024 tokens")


def test_nmse_of_logprobs_equals_that_of_logits_once_centred():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=1000) * 5
    logprobs = logits - np.log(np.exp(logits).sum())
    assert nmse(centred(logits), centred(logprobs)) < 1e-20
    assert nmse(logits, logits * 1.01) == pytest.approx(1e-4)


def test_gates_decide_the_result():
    text = [PromptResult("p", 3, 5e-7, 1, 1, True)]
    kld = [KldResult("Q8_0", 0.004, None, 0.98, 1.0, 0.005), KldResult("Q4_K_M", 0.06, None, 0.9, 1.1, 0.05)]
    report = VerifyReport(text, VisionResult(True, 3e-7, 64), kld, Gates())
    assert report.failures == ["Q4_K_M mean KLD 0.0600 is over the gate 0.05"]
    damaged = VerifyReport([PromptResult("p", 3, 2e-3, 1, 2, True)], VisionResult(False, reason="x"), [], Gates())
    assert not damaged.passed and "F16 logits NMSE" in damaged.failures[0]


def test_default_kld_gates_apply_to_real_checkpoints_and_explicit_ones_always():
    real = Gates(max_kld={"Q4_K_M": 0.1})
    assert real.kld_gate("Q4_K_M") == 0.1 and real.kld_gate("Q8_0") == 0.005 and real.kld_gate("IQ3_M") is None
    fixture = Gates(max_kld={"Q4_K_M": 0.1}, default_kld=False)
    assert fixture.kld_gate("Q4_K_M") == 0.1 and fixture.kld_gate("Q8_0") is None
    unguarded = VerifyReport([], VisionResult(False), [KldResult("Q8_0", 0.2, None, 0.5, 2.0, None)], fixture)
    assert unguarded.passed


def test_a_tokenizer_mismatch_and_a_check_that_could_not_run_fail():
    same = [PromptResult("a", 3, 5e-7, 1, 1, True)]
    kept = VerifyReport(same, VisionResult(True, 3e-7, 64), [], Gates())
    assert kept.passed and kept.unchecked == []
    differs = VerifyReport([*same, PromptResult("The capital", 2, 5e-7, 1, 1, False)],
                           VisionResult(True, 3e-7, 64), [], Gates())
    assert differs.failures == ["the GGUF tokenizes 1 of 2 prompts differently from the HF tokenizer "
                                "(first: 'The capital')"]
    no_hook = VisionResult(False, could_not_run=True, reason="not checked: no hook")
    assert VerifyReport(same, no_hook, [], Gates()).failures == [
        "projector not checked: no hook; --allow-unchecked vision accepts that"]
    allowed = VerifyReport(same, no_hook, [], Gates(allow_unchecked=("vision",)))
    assert allowed.passed and allowed.unchecked == ["vision"] and allowed.to_dict()["unchecked"] == ["vision"]
    wrong_shape = VisionResult(False, wrong_shape=True, reason="llama.cpp's output for one tile is (16, 64)")
    assert not VerifyReport(same, wrong_shape, [], Gates(allow_unchecked=("vision",))).passed
    # --no-vision is the user's choice, not a check that could not run.
    assert VerifyReport(same, VisionResult(False, reason="not checked (--no-vision)"), [], Gates()).passed


@pytest.mark.parametrize("shape", ["tiny", "256m", "500m", "2.2b"])
def test_transformers_gives_a_full_tile_the_plain_patch_positions(shape):
    """What the hand-built reference of transformers 4.55-4.57's days (huggingface/transformers#41190: a full
    float32 tile's positions one bucket low) had to work around is gone: positions are 0..N-1, as llama.cpp's."""
    import torch
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig
    from transformers.models.smolvlm.modeling_smolvlm import SmolVLMVisionEmbeddings

    from smolconv.core.models import get_shape

    vision = get_shape(shape).vision
    side = vision.image_size // vision.patch_size
    embeddings = SmolVLMVisionEmbeddings(SmolVLMVisionConfig(
        hidden_size=1, image_size=vision.image_size, patch_size=vision.patch_size, num_channels=3))
    with torch.no_grad():  # no pixel term; each position embeds as its own index
        embeddings.patch_embedding.weight.zero_()
        embeddings.patch_embedding.bias.zero_()
        embeddings.position_embedding.weight.copy_(torch.arange(side * side, dtype=torch.float32)[:, None])
        out = embeddings(torch.zeros(1, 3, vision.image_size, vision.image_size),
                         torch.ones(1, side, side, dtype=torch.bool))
    assert out[0, :, 0].tolist() == list(range(side * side))


def test_the_vision_reference_is_transformers_own_forward(fixture_tiny):
    """reference_tile_embeddings runs transformers' get_image_features; on a full tile that is the tower with
    positions 0..N-1 and the connector, which is what llama.cpp computes (written out here by hand)."""
    import torch

    from smolconv.reference.prompts import _test_tile
    from smolconv.reference.transformers import _load_reference, reference_tile_embeddings, tile_pixel_values

    _, model = _load_reference(fixture_tiny)
    size = model.config.vision_config.image_size
    tile = _test_tile(size)
    reference = reference_tile_embeddings(model, fixture_tiny, tile)
    vision = model.model.vision_model
    with torch.no_grad():
        patches = vision.embeddings.patch_embedding(tile_pixel_values(fixture_tiny, tile)[0]).flatten(2).transpose(1, 2)
        positions = torch.arange(patches.shape[1])[None]
        hidden = vision.encoder(inputs_embeds=patches + vision.embeddings.position_embedding(positions))
        by_hand = model.model.connector(vision.post_layernorm(hidden.last_hidden_state))[0].double().numpy()
    assert reference.shape == by_hand.shape == (model.config.vision_config.image_size ** 2
                                                // model.config.vision_config.patch_size ** 2
                                                // model.config.scale_factor ** 2, model.config.text_config.hidden_size)
    assert nmse(by_hand, reference) < 1e-10
