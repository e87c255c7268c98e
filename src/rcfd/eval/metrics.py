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


def grouped(values, counts) -> list[np.ndarray]:
    """Split ``values`` into consecutive groups of ``counts[i]`` values (a prompt's samples or demonstrations)."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.cumsum([0, *counts])
    return [values[a:b] for a, b in zip(edges[:-1], edges[1:])]


def per_prompt_wasserstein(values, per_prompt: int, demo_values, demo_counts) -> float:
    """Mean over prompts of the Wasserstein-1 distance between a prompt's samples (``per_prompt``
    consecutive ``values``) and the rewards of its own demonstrations (``demo_counts[i]`` consecutive
    ``demo_values``): how well each prompt's reward distribution matches its demonstrations'."""
    samples = grouped(values, [per_prompt] * (len(values) // per_prompt))
    demos = grouped(demo_values, demo_counts)
    return float(np.mean([wasserstein(a, b) for a, b in zip(samples, demos)]))


def mean_group_std(values, counts) -> float:
    """Mean over groups of two or more of the standard deviation within a group (ddof 1): the spread of
    one prompt's rewards, averaged over prompts."""
    stds = [g.std(ddof=1) for g in grouped(values, counts) if len(g) > 1]
    return float(np.mean(stds)) if stds else math.nan


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


def repeated_share(tokens, n: int = 4) -> float | None:
    """Share of a sequence's n-grams that repeat an earlier n-gram of it (None when it has no n-gram)."""
    grams = ngrams(list(tokens), n)
    if not grams:
        return None
    return sum(c - 1 for c in Counter(grams).values()) / len(grams)


def repetition_n(sequences, n: int = 4) -> float:
    """Mean over sequences of the share of n-grams that repeat an earlier n-gram of the same sequence."""
    rates = [r for r in (repeated_share(seq, n) for seq in sequences) if r is not None]
    return float(np.mean(rates)) if rates else 0.0


def texts_repeating(sequences, n: int = 4) -> int:
    """How many sequences repeat at least one of their n-grams: the events behind :func:`repetition_n`, which
    for human text is a handful (one of 256 held-out positive reviews repeats a 4-gram in its first 24 tokens)."""
    return sum(1 for seq in sequences if (repeated_share(seq, n) or 0.0) > 0)


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


def alignment_floor(samples, n_p: int, n_q: int, bins: int = 10, smoothing: float = 0.5, draws: int = 200,
                    seed: int = 0) -> float:
    """Expected :func:`histogram_kl` between two independent samples (sizes ``n_p`` and ``n_q``) of one
    distribution, approximated by resampling ``samples``: the alignment a perfectly calibrated policy
    scores at this sample size, i.e. the metric's noise floor."""
    samples = np.asarray(samples, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return float(np.mean([histogram_kl(rng.choice(samples, n_p), rng.choice(samples, n_q), bins, smoothing)
                          for _ in range(draws)]))


def gap_standard_error(values, demo_values, per_prompt: int) -> float:
    """Standard error of mean(values) − mean(demo_values) over prompts: ``values`` holds ``per_prompt``
    consecutive samples per prompt, ``demo_values`` one demonstration per prompt; the paired per-prompt
    difference keeps what a prompt does to both (its difficulty) out of the error."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, per_prompt).mean(1)
    gaps = values - np.asarray(demo_values, dtype=np.float64)
    return float(gaps.std(ddof=1) / math.sqrt(len(gaps))) if len(gaps) > 1 else math.nan


def mean_standard_error(values, per_prompt: int) -> float:
    """Standard error of the mean of ``values`` (``per_prompt`` consecutive samples per prompt), with
    prompts as the independent units (samples of one prompt are correlated)."""
    means = np.asarray(values, dtype=np.float64).reshape(-1, per_prompt).mean(1)
    return float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else math.nan


def sequence_means(values, mask) -> list[float]:
    """Per-row mean of ``values`` over the positions where ``mask`` is set (e.g. per-token log-likelihoods
    of each completion: its naturalness); rows with no position give nan."""
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    counts = mask.sum(-1)
    sums = np.where(mask, values, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), math.nan).tolist()


def demo_z(mean: float, demo_mean: float, demo_std: float) -> float:
    """How far a mean lies from the demonstrations', in demonstration standard deviations."""
    return (mean - demo_mean) / demo_std if demo_std > 0 else math.nan


def relative(value: float, demo_value: float) -> float:
    """value / demo_value − 1 (e.g. −0.15: 15% below the demonstrations')."""
    return value / demo_value - 1 if demo_value else math.nan
