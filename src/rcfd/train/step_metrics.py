"""One RL step's batch metrics (metrics.jsonl, under :mod:`rcfd.eval.metric_names`), shared by rcfd's
loop and the TRL engine so that both write the same record."""

from __future__ import annotations

import torch

from ..eval import metric_names as N
from ..eval import metrics as M
from .objectives import ScoredBatch


def step_record(procs, step: int, b: ScoredBatch, values: torch.Tensor, beta: float, names) -> dict:
    """An RL step's batch metrics over every process (the update's own are added by the caller)."""
    rewards, logratio = procs.gather(b.rewards), procs.gather(b.logratio)
    lengths = procs.gather(b.rollout.lengths().float().cpu())
    record = {N.STEP: step, N.OBJECTIVE: float(procs.gather(values).mean()), N.REWARD: float(rewards[:, 0].mean()),
              N.REWARD_STD: float(rewards[:, 0].std(unbiased=False)), N.KL: float(logratio.mean()), N.BETA: beta,
              N.MEAN_LENGTH: float(lengths.mean()),
              N.DISTINCT_2: M.distinct_n(procs.gather_objects(b.rollout.completion_tokens()), 2)}
    targets = procs.gather(b.targets) if b.targets is not None else None
    for k, name in enumerate(names):
        record[N.reward_mean(name)] = float(rewards[:, k].mean())
        if targets is not None:
            record[N.reward_demo_mean(name)] = float(targets[:, k].mean())
    return record
