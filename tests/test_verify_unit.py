"""verify's arithmetic and llama-perplexity parsing (the runs against real files are in test_verify.py)."""

from __future__ import annotations

import numpy as np
import pytest

from smolconv.errors import SmolconvError
from smolconv.verify import Gates, KldResult, PromptResult, VerifyReport, VisionResult, centred, nmse, parse_kld

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
