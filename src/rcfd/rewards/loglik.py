"""Use case 1 reward: average per-token log-likelihood of the completion under the frozen reference.

The paper prints −(1/|y|)·log π_θ0(x|y); the values it reports (−0.19 for β = 0, −1.95 for humans)
match (1/|y|)·log π_θ0(y|x), which is what we compute.

Statistics beyond the mean (an extension, not the paper's): a scalar average can be met by degenerate
text, e.g. a loop whose first tokens are unlikely and whose repeats are predictable averages to the
demonstrations' log-likelihood. Calibrating several statistics of the same per-token values at once
(multi-reward RCfD) narrows that door: ``[loglik, loglik-spread]`` (what the positive-reviews preset
calibrates, with ``repetition``) asks for the demonstrations' mean and their unevenness, which a loop's mix of unlikely
and near-certain tokens does not have; ``[loglik-head, loglik-tail]`` asks for each half's mean.

* ``loglik``: mean over the completion's tokens;
* ``loglik-spread``: population standard deviation of the per-token log-likelihoods.
"""

from __future__ import annotations

import torch

from ..train.logprobs import encode_pairs, reference_logprobs


def loglik_statistic(ref_logprobs: torch.Tensor, mask: torch.Tensor, statistic: str = "mean") -> torch.Tensor:
    """[B] statistic of the per-token log-likelihoods ``ref_logprobs`` [B, C] over ``mask``'s tokens."""
    mask = mask.to(ref_logprobs.dtype)
    values = ref_logprobs * mask
    n = mask.sum(-1).clamp(min=1)
    mean = values.sum(-1) / n
    if statistic == "mean":
        return mean
    if statistic == "spread":
        return ((((ref_logprobs - mean[:, None]) * mask) ** 2).sum(-1) / n).sqrt()
    raise ValueError(f"unknown log-likelihood statistic {statistic!r}")


class LogLikelihoodReward:
    def __init__(self, policy, reference, tokenizer, model_id: str, micro_batch_size: int = 16,
                 statistic: str = "mean"):
        self.policy = policy
        self.reference = reference
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.micro_batch_size = micro_batch_size
        self.statistic = statistic
        self.name = "loglik" if statistic == "mean" else f"loglik-{statistic}"

    def identity(self) -> str:
        return f"{self.name}:{self.model_id}"

    def __call__(self, prompts, completions, rollout=None, ref_logprobs=None, **_) -> torch.Tensor:
        if rollout is None:
            rollout = encode_pairs(self.tokenizer, prompts, completions)
        if ref_logprobs is None:
            ref_logprobs = reference_logprobs(self.policy, self.reference, rollout, self.micro_batch_size)
        return loglik_statistic(ref_logprobs, rollout.completion_mask, self.statistic)
