"""Advantage estimators and the PPO-clip loss: pure functions of tensors.

Rows come in groups of k consecutive completions of one prompt (``train.num_generations``). An
estimator (``train.advantage``) turns objective values [B] into advantages [B]:

* :func:`whiten` — the paper's batch baseline (obj − batch mean) / batch std;
* :func:`rloo` — leave-one-out group baseline obj_i − mean_{j≠i} obj_j;
* :func:`group_normalized` — GRPO's (obj − group mean) / group std.
"""

from __future__ import annotations

import torch


def whiten(x: torch.Tensor, dim: int = 0, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over ``dim`` (population std; a constant column becomes 0)."""
    mean = x.mean(dim, keepdim=True)
    std = x.std(dim, keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


def groups(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B, ...] -> [B/k, k, ...]: rows i·k … i·k + k − 1 are the k completions of one prompt."""
    if k < 1 or x.shape[0] % k:
        raise ValueError(f"{x.shape[0]} rows do not split into groups of {k}")
    return x.reshape(x.shape[0] // k, k, *x.shape[1:])


def leave_one_out_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B] or [B, K] (each column apart): for each row, the mean of the other k − 1 rows of its group,
    (Σ_group − x_i)/(k − 1)."""
    if k < 2:
        raise ValueError("a leave-one-out mean needs k >= 2 completions per prompt")
    g = groups(x, k)
    return ((g.sum(1, keepdim=True) - g) / (k - 1)).reshape(x.shape)


def rloo(objective: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): A_i = obj_i − mean_{j≠i} obj_j over i's group.

    An unbiased policy-gradient estimate with a baseline from the same prompt's other completions, so
    prompt-to-prompt differences (e.g. in R(x, y_demo)) do not reach the advantage. Equals
    k/(k−1)·(obj_i − group mean)."""
    return objective - leave_one_out_mean(objective, k)


def group_normalized(objective: torch.Tensor, k: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantage: (obj_i − group mean)/(group std + eps), population std over the k completions
    (TRL ``scale_rewards="group"``; a group of equal values gives 0)."""
    if k < 2:
        raise ValueError("a group-normalized advantage needs k >= 2 completions per prompt")
    g = groups(objective, k)
    centred = g - g.mean(1, keepdim=True)
    return (centred / (g.std(1, keepdim=True, unbiased=False) + eps)).reshape(objective.shape)


# Keyed by rcfd.registry.ADVANTAGES: (objective values [B], k) -> advantages [B].
ESTIMATORS = {
    "whiten": lambda obj, k: whiten(obj),
    "rloo": rloo,
    "group": group_normalized,
}


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                  eps: float, max_tokens: int | None = None) -> torch.Tensor:
    """PPO-clip loss per sequence [B]: −mean_t min(ρ_t A, clip(ρ_t, 1−ε, 1+ε) A) over the completion's
    tokens (``mask``), with ρ_t = exp(log π_θ(y_t) − log π_old(y_t)) and one advantage A per sequence.

    With ``max_tokens`` (train.loss_type 'dr_grpo') the sum over the tokens is divided by that constant
    instead of by the completion's own length, so that no token's weight depends on its length."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv)
    mask = mask.to(surrogate.dtype)
    length = mask.sum(-1).clamp(min=1) if max_tokens is None else max_tokens
    return -(surrogate * mask).sum(-1) / length


def sampled_kl(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(π_old ‖ π_θ) per sequence [B] from completions sampled by π_old: Σ_t (ρ_t − 1) − log ρ_t over the
    completion's tokens, ρ_t = π_θ(y_t)/π_old(y_t) (Schulman's k3 estimator: unbiased per token, and never
    negative, so a small batch cannot report a negative divergence)."""
    log_ratio = logp - old_logp
    per_token = torch.expm1(log_ratio) - log_ratio
    return (per_token * mask.to(per_token.dtype)).sum(-1)
