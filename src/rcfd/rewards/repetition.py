"""Repetition of the completion's own tokens, a statistic of the text for RCfD to calibrate (an extension).

``repetition``: the share of the completion's tokens that repeat an earlier token of it (1 − distinct
tokens / tokens; 0 for an empty completion). Human text repeats some words ("the", ",") and a loop
repeats most of them: on positive-reviews the demonstrations' first 24 tokens score 0.085 ± 0.06, with
one in nine at 0. Listed in ``reward.calibrate_also``, RCfD asks the policy's texts to repeat themselves
as much as the demonstrations do, a target that a degenerate loop cannot meet and that, unlike the
log-likelihood, no mix of unlikely and predictable tokens averages to.

``repetition-4``: the share of the completion's 4-grams that repeat an earlier 4-gram of it (0 when it
has none). A 4-gram repeat is rare in human text (none in 99% of the positive-reviews
demonstrations), so as a mean-matching column it is zero on almost every sample and says little about
a batch; calibrated per text (``objective.per_sample=[repetition-4]``, the paper's −(R − R_d)²) it
charges each looping text its own distance from its demonstration's, usually 0.
"""

from __future__ import annotations

import torch

from .. import metrics as M
from ..logprobs import encode_pairs


class RepetitionReward:
    def __init__(self, tokenizer, n: int = 1):
        self.tokenizer = tokenizer
        self.n = n
        self.name = "repetition" if n == 1 else f"repetition-{n}"

    def identity(self) -> str:
        return f"{self.name}:{getattr(self.tokenizer, 'name_or_path', '')}"

    def __call__(self, prompts, completions, rollout=None, **_) -> torch.Tensor:
        if rollout is None:
            rollout = encode_pairs(self.tokenizer, prompts, completions)
        return torch.tensor([M.repeated_share(row, self.n) or 0.0 for row in rollout.completion_tokens()],
                            dtype=torch.float32)
