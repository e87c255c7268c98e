"""Reward callables referenced by tests as 'test_rewards_fixtures:NAME'."""

import math


def word_count(prompts, completions, **kwargs):
    return [float(len(c.split())) for c in completions]


def nan_after_first(prompts, completions, **kwargs):
    """Finite on the first call, NaN for one sample afterwards (a reward that breaks mid-run)."""
    nan_after_first.calls = getattr(nan_after_first, "calls", 0) + 1
    values = [float(len(c)) for c in completions]
    if nan_after_first.calls > 1:
        values[0] = math.nan
    return values


def always_nan(prompts, completions, **kwargs):
    return [math.nan for _ in completions]
