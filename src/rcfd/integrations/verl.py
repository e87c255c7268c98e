"""RCfD as a per-sample reward function for engines that score one response at a time.

verl calls ``compute_score(data_source, solution_str, ground_truth, extra_info=None)`` from a file
named in its config; OpenRLHF's remote/custom reward functions are alike. A per-sample function
cannot see the batch, so the demonstration's reward is precomputed into the data (see
:func:`with_demo_rewards`) and the K calibrated terms are divided by fixed ``scales`` (e.g. each
reward's standard deviation over the demonstrations) instead of being whitened over the batch.

A reward file for verl (``custom_reward_function.path=my_reward.py``, ``.name=compute_score``)::

    from rcfd.integrations.verl import make_compute_score
    from my_project import sentiment            # text -> float (or a list of floats)

    compute_score = make_compute_score(lambda text, extra_info: sentiment(text))
"""

from __future__ import annotations

import math
from typing import Callable, Sequence


def _as_list(x) -> list[float]:
    return [float(v) for v in x] if isinstance(x, (list, tuple)) else [float(x)]


def rcfd_score(reward, demo_reward, scales: Sequence[float] | None = None) -> float:
    """−Σ_k ((R_k − R_k,demo) / scale_k)² for one response (K = 1: −(R − R_demo)²)."""
    r, d = _as_list(reward), _as_list(demo_reward)
    if len(r) != len(d):
        raise ValueError(f"reward has {len(r)} values but demo_reward has {len(d)}")
    s = _as_list(scales) if scales is not None else [1.0] * len(r)
    if len(s) != len(r) or any(v <= 0 for v in s):
        raise ValueError(f"scales must be {len(r)} positive numbers, got {scales!r}")
    value = -sum(((a - b) / c) ** 2 for a, b, c in zip(r, d, s))
    if not math.isfinite(value):
        raise ValueError(f"RCfD score is not finite (reward {r}, demonstration reward {d})")
    return value


def make_compute_score(reward_fn: Callable, scales: Sequence[float] | None = None,
                       demo_key: str = "demo_reward") -> Callable:
    """verl-style ``compute_score`` returning the RCfD score of ``solution_str``.

    ``reward_fn(text, extra_info)`` gives R (a float or K floats). The demonstration's reward is read
    from ``extra_info[demo_key]`` when present, else from ``ground_truth`` (a number or K numbers).
    """

    def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        extra_info = extra_info or {}
        demo = extra_info.get(demo_key, ground_truth)
        if demo is None or demo == "":
            raise ValueError(f"no demonstration reward: put it in extra_info['{demo_key}'] or ground_truth "
                             f"(see rcfd.integrations.verl.with_demo_rewards)")
        if isinstance(demo, str):
            demo = [float(v) for v in demo.split(",")]
        return rcfd_score(reward_fn(solution_str, extra_info), demo, scales)

    return compute_score


def with_demo_rewards(rows: list[dict], reward_fn: Callable, demo_column: str = "demonstration",
                      demo_key: str = "demo_reward") -> list[dict]:
    """Copy of ``rows`` with ``extra_info[demo_key] = reward_fn(row[demo_column], extra_info)``:
    the one-off pass that precomputes what :func:`make_compute_score` reads."""
    out = []
    for row in rows:
        extra = dict(row.get("extra_info") or {})
        extra[demo_key] = _as_list(reward_fn(row[demo_column], extra))
        out.append({**row, "extra_info": extra})
    return out
