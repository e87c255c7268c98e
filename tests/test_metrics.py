import math

import numpy as np
import pytest

from rcfd.eval import metrics as M


def test_distinct_n_pooled():
    seqs = [[1, 2, 3], [1, 2, 4]]
    assert M.distinct_n(seqs, 1) == pytest.approx(4 / 6)
    # bigrams: (1,2),(2,3),(1,2),(2,4) -> 3 unique of 4
    assert M.distinct_n(seqs, 2) == pytest.approx(3 / 4)
    assert M.distinct_n([[1]], 2) == 0.0


def test_repetition_4():
    # 7 tokens -> 4 four-grams: (1,2,3,4),(2,3,4,1),(3,4,1,2),(4,1,2,3): no repeats
    assert M.repetition_n([[1, 2, 3, 4, 1, 2, 3]], 4) == 0.0
    # 1,2,1,2,1,2,1 -> 4-grams (1,2,1,2),(2,1,2,1),(1,2,1,2),(2,1,2,1): 2 repeats of 4
    assert M.repetition_n([[1, 2, 1, 2, 1, 2, 1]], 4) == pytest.approx(0.5)
    # mean over sequences; a sequence shorter than n is ignored
    assert M.repetition_n([[1, 2, 1, 2, 1, 2, 1], [1, 2, 3, 4], [1]], 4) == pytest.approx(0.25)
    # texts that repeat at least one 4-gram: the first only
    assert M.texts_repeating([[1, 2, 1, 2, 1, 2, 1], [1, 2, 3, 4], [1], [1, 2, 3, 4, 5]], 4) == 1


def test_histogram_kl_hand_computed():
    p = [0.0, 0.0, 1.0, 1.0]
    q = [0.0, 1.0, 1.0, 1.0]
    # 2 bins on [0, 1]: p counts [2, 2], q counts [1, 3]; smoothing 0 -> KL(p||q)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert M.histogram_kl(p, q, bins=2, smoothing=0.0) == pytest.approx(expected)
    # with smoothing 1: p [3,3]/6, q [2,4]/6
    expected_s = 0.5 * math.log(0.5 / (2 / 6)) + 0.5 * math.log(0.5 / (4 / 6))
    assert M.histogram_kl(p, q, bins=2, smoothing=1.0) == pytest.approx(expected_s)


def test_histogram_kl_identical_is_zero_and_disjoint_is_large():
    x = np.linspace(0, 1, 50)
    assert M.histogram_kl(x, x) == pytest.approx(0.0)
    assert M.histogram_kl(np.zeros(50), np.ones(50) * 5) > 2.0


def test_wasserstein():
    assert M.wasserstein([0, 0], [1, 1]) == pytest.approx(1.0)
    assert M.wasserstein([0, 1, 2], [0, 1, 2]) == pytest.approx(0.0)


def test_truncate_pairwise_and_position_means():
    a, b = M.truncate_pairwise([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]])
    assert a == [[1, 2], [4]] and b == [[5, 6], [7]]
    assert M.mean_by_position([[1.0, 3.0], [3.0]]) == [2.0, 3.0]


def test_mean_std():
    assert M.mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert all(math.isnan(v) for v in M.mean_std([]))


def test_diversity_fields_count_the_texts_behind_repetition_4():
    from rcfd.eval.evaluate import diversity_fields
    loop, plain = [5, 6, 5, 6, 5, 6, 5], [1, 2, 3, 4, 7, 8, 9]
    # two held-out prompts x two samples (rows grouped by prompt: p0 s0, p0 s1, p1 s0, p1 s1)
    completions = [loop, plain, loop, loop]
    demos = [plain, loop]
    out = diversity_fields(completions, demos, per_prompt=2)
    assert out["repeat_4_texts"] == 3  # of all four completions
    assert out["demo_repeat_4_texts"] == 1  # of the two demonstrations
    # replica 0 = (loop, loop): 0.5 each; replica 1 = (plain, loop): 0.25; mean over replicas
    assert out["repetition_4"] == pytest.approx((0.5 + 0.25) / 2)
    assert out["demo_repetition_4"] == pytest.approx(0.25)
