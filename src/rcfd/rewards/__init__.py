"""Rewards: callables ``reward(prompts, completions, **kwargs) -> Tensor[B]``.

Keyword arguments a reward may use when the caller has them: ``rollout`` (token ids and masks of
prompts and completions) and ``ref_logprobs`` ([B, C] token log-probs under the frozen reference).
Several rewards are stacked into R of shape [B, K] by :class:`RewardStack`.
"""

from __future__ import annotations

from ..errors import RcfdError
from .base import Reward, RewardStack
from .callable import CallableReward
from .loglik import LogLikelihoodReward

__all__ = ["Reward", "RewardStack", "LogLikelihoodReward", "CallableReward", "build_rewards"]


def build_rewards(names, *, policy, reference, tokenizer, model_id: str) -> RewardStack:
    rewards = []
    for name in names:
        if name == "loglik":
            rewards.append(LogLikelihoodReward(policy, reference, tokenizer, model_id))
        elif ":" in name:
            rewards.append(CallableReward.from_spec(name))
        else:
            raise RcfdError(f"unknown reward '{name}'; choose loglik or a callable as module:function")
    return RewardStack(rewards)
