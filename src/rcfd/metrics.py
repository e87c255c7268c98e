"""Pure metric functions of over-optimization (no models involved; unit-tested on known inputs)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np


def histogram_kl(p_samples, q_samples, bins: int = 10, smoothing: float = 0.5) -> float:
    """Alignment A = KL(ρ_p ‖ ρ_q) between reward histograms.

    Both samples are binned on the same ``bins`` equal-width bins spanning the union of their
    ranges; ``smoothing`` pseudo-counts are added to every bin (so an empty policy bin gives a
    large, finite KL) before normalizing. 0 means identical histograms.
    """
    p_samples = np.asarray(p_samples, dtype=np.float64)
    q_samples = np.asarray(q_samples, dtype=np.float64)
    lo = min(p_samples.min(), q_samples.min())
    hi = max(p_samples.max(), q_samples.max())
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, bins + 1)
    p = np.histogram(p_samples, edges)[0] + smoothing
    q = np.histogram(q_samples, edges)[0] + smoothing
    p = p / p.sum()
    q = q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def wasserstein(a, b) -> float:
    """Wasserstein-1 distance between two 1-D empirical distributions."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(np.asarray(a, float), np.asarray(b, float)))


def ngrams(tokens, n: int):
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(sequences, n: int) -> float:
    """Distinct-n over a set of token sequences: unique n-grams / total n-grams (pooled)."""
    total = 0
    unique = set()
    for seq in sequences:
        grams = ngrams(list(seq), n)
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def repetition_n(sequences, n: int = 4) -> float:
    """Mean over sequences of the share of n-grams that repeat an earlier n-gram of the same sequence."""
    rates = []
    for seq in sequences:
        grams = ngrams(list(seq), n)
        if not grams:
            continue
        counts = Counter(grams)
        repeated = sum(c - 1 for c in counts.values())
        rates.append(repeated / len(grams))
    return float(np.mean(rates)) if rates else 0.0


def truncate_pairwise(a_seqs, b_seqs):
    """Cut each pair (a_i, b_i) to their common length so diversity figures compare like with like."""
    out_a, out_b = [], []
    for a, b in zip(a_seqs, b_seqs):
        n = min(len(a), len(b))
        out_a.append(list(a)[:n])
        out_b.append(list(b)[:n])
    return out_a, out_b


def mean_by_position(rows) -> list[float]:
    """Average of ragged per-position values: entry t averages the rows that reach position t."""
    length = max((len(r) for r in rows), default=0)
    means = []
    for t in range(length):
        vals = [r[t] for r in rows if len(r) > t]
        means.append(float(np.mean(vals)))
    return means


def mean_std(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std())
