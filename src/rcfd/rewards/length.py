"""Length reward (paper, use case 3): −|y|, the completion's length in tokens."""

from __future__ import annotations

import torch

from ..train.logprobs import encode_pairs


class LengthReward:
    name = "length"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def identity(self) -> str:
        return f"length:{getattr(self.tokenizer, 'name_or_path', '')}"

    def __call__(self, prompts, completions, rollout=None, **_) -> torch.Tensor:
        if rollout is None:
            rollout = encode_pairs(self.tokenizer, prompts, completions)
        return -rollout.lengths().float()
