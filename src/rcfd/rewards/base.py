"""The reward protocol and a stack of rewards evaluated together."""

from __future__ import annotations

import pickle
from typing import Protocol, runtime_checkable

import torch

from ..errors import NonFiniteError, RcfdError, pickled_weights


@runtime_checkable
class Reward(Protocol):
    name: str
    """Short name used in logs (``rewards/<name>/mean``)."""

    def identity(self) -> str:
        """Everything that changes the reward's values (model, settings): the cache key."""

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> torch.Tensor:
        """Scores of shape [B]."""


class RewardStack:
    """K rewards evaluated on the same batch: returns R of shape [B, K]."""

    def __init__(self, rewards: list):
        self.rewards = list(rewards)
        self.names = [r.name for r in self.rewards]

    def identity(self) -> str:
        return "|".join(r.identity() for r in self.rewards)

    def __call__(self, prompts, completions, /, **kwargs) -> torch.Tensor:
        """R [B, K] on the CPU in float32, wherever each scorer ran (rcfd.train.device's convention)."""
        columns = []
        for reward in self.rewards:
            value = torch.as_tensor(reward(prompts, completions, **kwargs), dtype=torch.float32, device="cpu")
            if value.shape != (len(prompts),):
                raise RcfdError(f"reward '{reward.name}' returned shape {tuple(value.shape)} for {len(prompts)} "
                                f"completions; it must return one number per completion")
            columns.append(value)
        return torch.stack(columns, -1)


def check_finite(values: torch.Tensor, what: str, step: int | None = None) -> None:
    bad = ~torch.isfinite(values)
    if bad.any():
        where = f" at step {step}" if step is not None else ""
        rows = bad.reshape(bad.shape[0], -1).any(-1).nonzero().flatten().tolist()
        raise NonFiniteError(
            f"{what} is not finite{where} (rows {rows[:8]}); check the reward function, or set "
            f"train.skip_nonfinite=true to drop such samples"
        )


def load_sequence_classifier(model_name, field: str, reward_name: str, device=None):
    """(tokenizer, eval-mode AutoModelForSequenceClassification) for a reward, or a field-named error."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not model_name:
        raise RcfdError(f"reward '{reward_name}' needs {field} (a hub id or local path)")
    try:
        return (AutoTokenizer.from_pretrained(model_name),
                AutoModelForSequenceClassification.from_pretrained(model_name).eval().to(device or "cpu"))
    except pickle.UnpicklingError:
        raise pickled_weights(field, model_name) from None
    except OSError as exc:
        raise RcfdError(f"could not load {field} '{model_name}' ({str(exc).splitlines()[0]})") from None
