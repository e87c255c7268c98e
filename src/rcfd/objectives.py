"""Objectives turn rewards R [B, K] into one scalar per sequence that the policy maximizes.

* ``reward``: R summed over rewards (β = 0; plain reward maximization).
* ``kl``:     R − β · log π_θ(y|x)/π_0(y|x), the log-ratio summed over completion tokens
              (paper, "KL-regularized RL"); β fixed or linearly scheduled.
* ``rcfd``:   −(R(x,y) − R(x,y_d))² (paper, "Reward Calibration from Demonstration"). With K rewards
              each one is calibrated separately, whitened over the batch, and the K terms summed.
* ``weighted``: R_1 + α·(R_2 + … + R_K), the paper's R_quality + α·R_length baseline (α swept).
"""

from __future__ import annotations

import torch


def whiten(x: torch.Tensor, dim: int = 0, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over ``dim`` (population std; a constant column becomes 0)."""
    mean = x.mean(dim, keepdim=True)
    std = x.std(dim, keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


def beta_at(step: int, total_steps: int, beta: float, beta_end: float | None) -> float:
    """Linear β schedule from ``beta`` at step 0 to ``beta_end`` at the last step."""
    if beta_end is None or total_steps <= 1:
        return beta
    frac = min(max(step / (total_steps - 1), 0.0), 1.0)
    return beta + frac * (beta_end - beta)


def calibrated(rewards: torch.Tensor, demo_rewards: torch.Tensor) -> torch.Tensor:
    """Per-reward calibration r_i = −(R_i(x,y) − R_i(x,y_d))², shape [B, K]."""
    return -(rewards - demo_rewards) ** 2


def rcfd(rewards: torch.Tensor, demo_rewards: torch.Tensor) -> torch.Tensor:
    """R_CfD [B]: for one reward −(R − R_d)²; for K > 1 the whitened calibrated terms are summed."""
    terms = calibrated(rewards, demo_rewards)
    if terms.shape[-1] == 1:
        return terms[:, 0]
    return whiten(terms, dim=0).sum(-1)


def kl_penalized(rewards: torch.Tensor, logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """R_β [B] = ΣR − β · Σ_t (log π_θ − log π_0)."""
    return rewards.sum(-1) - beta * logratio


def weighted(rewards: torch.Tensor, alpha: float) -> torch.Tensor:
    """R_α [B] = R_1 + α · Σ_{k≥2} R_k."""
    return rewards[:, 0] + alpha * rewards[:, 1:].sum(-1)


def objective_values(name: str, rewards, *, demo_rewards=None, logratio=None, beta: float = 0.0,
                     alpha: float = 1.0):
    if name == "reward":
        return rewards.sum(-1)
    if name == "kl":
        return kl_penalized(rewards, logratio, beta)
    if name == "rcfd":
        return rcfd(rewards, demo_rewards)
    if name == "weighted":
        return weighted(rewards, alpha)
    raise ValueError(f"unknown objective {name!r}")
