"""Rewards: callables ``reward(prompts, completions, **kwargs) -> Tensor[B]``.

Keyword arguments a reward may use when the caller has them: ``rollout`` (token ids and masks of
prompts and completions) and ``ref_logprobs`` ([B, C] token log-probs under the frozen reference).
Several rewards are stacked into R of shape [B, K] by :class:`RewardStack`.
"""

from __future__ import annotations

from ..errors import RcfdError
from .base import Reward, RewardStack
from .callable import CallableReward
from .length import LengthReward
from .loglik import LogLikelihoodReward

__all__ = ["Reward", "RewardStack", "LogLikelihoodReward", "LengthReward", "CallableReward", "build_rewards"]


def build_rewards(names, *, policy, reference, tokenizer, model_id: str, config=None,
                  progress: bool = True) -> RewardStack:
    """The rewards listed in ``names``; ``config`` (a RewardConfig) carries the scorers' settings."""
    from ..config import RewardConfig

    cfg = config or RewardConfig(names=list(names))
    rewards = []
    for name in names:
        if name == "loglik":
            rewards.append(LogLikelihoodReward(policy, reference, tokenizer, model_id))
        elif name == "length":
            rewards.append(LengthReward(tokenizer))
        elif name == "sentiment":
            from .sentiment import SentimentReward

            rewards.append(SentimentReward(cfg.sentiment_model, progress=progress))
        elif name == "vader":
            from .sentiment import VaderReward

            rewards.append(VaderReward())
        elif name == "classifier":
            from .sentiment import ClassifierReward

            rewards.append(ClassifierReward(cfg.classifier_model, cfg.classifier_label))
        elif name == "similarity":
            from .quality import SimilarityReward

            rewards.append(SimilarityReward(cfg.embedding_model))
        elif name == "reward-model":
            from .quality import RewardModelReward

            rewards.append(RewardModelReward(cfg.reward_model))
        elif ":" in name:
            rewards.append(CallableReward.from_spec(name))
        else:
            from ..config import REWARDS

            raise RcfdError(f"unknown reward '{name}'; choose one of {', '.join(REWARDS)} or a callable module:function")
    return RewardStack(rewards)
