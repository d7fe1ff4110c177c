"""How far a candidate's numbers are from the reference's: NMSE, cosine, log-softmax, KL divergence.

Written once for every format's verify: llama.cpp's logits (GGUF), onnxruntime's and MLX's.
"""

from __future__ import annotations

import numpy as np


def nmse(reference: np.ndarray, candidate: np.ndarray) -> float:
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    return float(((candidate - reference) ** 2).sum() / (reference**2).sum())


def centred(values: np.ndarray) -> np.ndarray:
    return values - values.mean()


def comparable(reference: np.ndarray, logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference logits and llama-server's log-probabilities at the tokens where the server gave a value: a
    probability below float's range comes back as log(0)."""
    finite = np.isfinite(logprobs)
    return reference[finite], logprobs[finite]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis."""
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def kl_per_position(base_logprobs: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    """KL(base ‖ candidate) in nats at each position of two [..., vocab] log-probability arrays."""
    return (np.exp(base_logprobs) * (base_logprobs - logprobs)).sum(-1)


def kl_divergence(logits_p: np.ndarray, logits_q: np.ndarray) -> float:
    """KL(p ‖ q) of the two softmax distributions of one position's logits, in nats."""
    p = np.asarray(logits_p, np.float64)
    q = np.asarray(logits_q, np.float64)
    return float(kl_per_position(log_softmax(p), log_softmax(q)))


def next_token_kld(base: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """Mean KL(base ‖ candidate) over positions of two [positions, vocab] log-probability arrays, and the
    fraction of positions whose top token is the same."""
    kld = kl_per_position(base, candidate)
    return float(kld.mean()), float((base.argmax(-1) == candidate.argmax(-1)).mean())
