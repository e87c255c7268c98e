"""Rewards: callables ``reward(prompts, completions, **kwargs) -> Tensor[B]``.

Keyword arguments a reward may use when the caller has them: ``rollout`` (token ids and masks of
prompts and completions) and ``ref_logprobs`` ([B, C] token log-probs under the frozen reference).
Several rewards are stacked into R of shape [B, K] by :class:`RewardStack`.
"""

from __future__ import annotations

import torch

from .base import Reward, RewardStack
from .callable import CallableReward
from .length import LengthReward
from .loglik import LogLikelihoodReward
from .repetition import RepeatMassReward, RepetitionReward

__all__ = ["Reward", "RewardStack", "LogLikelihoodReward", "LengthReward", "CallableReward", "RepetitionReward",
           "RepeatMassReward", "build_rewards"]


def _sentiment(ctx):
    from .sentiment import SentimentReward

    return SentimentReward(ctx.cfg.sentiment_model, progress=ctx.progress)


def _vader(ctx):
    from .sentiment import VaderReward

    return VaderReward()


def _classifier(ctx):
    from .sentiment import ClassifierReward

    return ClassifierReward(ctx.cfg.classifier_model, ctx.cfg.classifier_label, device=ctx.device)


def _similarity(ctx):
    from .quality import SimilarityReward

    return SimilarityReward(ctx.cfg.embedding_model, device=ctx.device)


def _reward_model(ctx):
    from .quality import RewardModelReward

    return RewardModelReward(ctx.cfg.reward_model, device=ctx.device)


# Keyed by rcfd.registry.REWARDS; the scorers with heavy dependencies import on use.
BUILDERS = {
    "loglik": lambda ctx: LogLikelihoodReward(ctx.policy, ctx.reference, ctx.tokenizer, ctx.model_id),
    "loglik-spread": lambda ctx: LogLikelihoodReward(ctx.policy, ctx.reference, ctx.tokenizer, ctx.model_id,
                                                     statistic="spread"),
    "length": lambda ctx: LengthReward(ctx.tokenizer),
    "repetition": lambda ctx: RepetitionReward(ctx.tokenizer),
    "repetition-4": lambda ctx: RepetitionReward(ctx.tokenizer, n=4),
    "repeat-mass": lambda ctx: RepeatMassReward(ctx.policy, ctx.reference, ctx.tokenizer, ctx.model_id),
    "sentiment": _sentiment,
    "vader": _vader,
    "classifier": _classifier,
    "similarity": _similarity,
    "reward-model": _reward_model,
}


def _device_of(policy):
    """The policy's device (the CPU for scorers built without a policy)."""
    return next(policy.parameters()).device if policy is not None else torch.device("cpu")


def build_rewards(names, *, policy, reference, tokenizer, model_id: str, config=None,
                  progress: bool = True, device=None) -> RewardStack:
    """The rewards listed in ``names``; ``config`` (a RewardConfig) carries the scorers' settings; scorers
    with a model of their own run it on ``device`` (default: the policy's)."""
    from types import SimpleNamespace

    from ..config import RewardConfig
    from ..registry import REWARDS

    ctx = SimpleNamespace(cfg=config or RewardConfig(names=list(names)), policy=policy, reference=reference,
                          tokenizer=tokenizer, model_id=model_id, progress=progress,
                          device=device if device is not None else _device_of(policy))
    rewards = []
    for name in names:
        if ":" in name:
            rewards.append(CallableReward.from_spec(name))
        else:
            REWARDS.check(name)
            rewards.append(BUILDERS[name](ctx))
    return RewardStack(rewards)
