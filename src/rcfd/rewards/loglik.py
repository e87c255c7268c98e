"""Use case 1 reward: average per-token log-likelihood of the completion under the frozen reference.

The paper prints −(1/|y|)·log π_θ0(x|y); the values it reports (−0.19 for β = 0, −1.95 for humans)
match (1/|y|)·log π_θ0(y|x), which is what we compute.
"""

from __future__ import annotations

import torch

from ..logprobs import encode_pairs, reference_logprobs


class LogLikelihoodReward:
    name = "loglik"

    def __init__(self, policy, reference, tokenizer, model_id: str, micro_batch_size: int = 16):
        self.policy = policy
        self.reference = reference
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.micro_batch_size = micro_batch_size

    def identity(self) -> str:
        return f"loglik:{self.model_id}"

    def __call__(self, prompts, completions, rollout=None, ref_logprobs=None, **_) -> torch.Tensor:
        if rollout is None:
            rollout = encode_pairs(self.tokenizer, prompts, completions)
        if ref_logprobs is None:
            ref_logprobs = reference_logprobs(self.policy, self.reference, rollout, self.micro_batch_size)
        lengths = rollout.lengths().clamp(min=1)
        return ref_logprobs.sum(-1) / lengths
