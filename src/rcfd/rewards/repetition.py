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

``repeat-mass``: how strongly the text invites its own repetition, measured on every token rather than
only where a repeat happened. At each completion token t, the frozen base model's probability of the
tokens that followed an earlier occurrence of the previous token y_{t−1} in the completion (the
continuations that would repeat a bigram it already wrote), averaged over the completion's tokens:
(1/|y|) Σ_t Σ_{v ∈ S_t} π_0(v | x, y_<t), S_t = {y_{j+1} : j < t − 1, y_j = y_{t−1}}. Human text has
some of it (common words recur, and what follows them too); in a loop it tends to 1, and it rises
with the first repeated phrase, before any 4-gram repeats, so unlike ``repetition-4`` every text
carries a signal. Costs one forward pass of the base model over the completions.
"""

from __future__ import annotations

import torch

from ..eval import metrics as M
from ..train.logprobs import completion_logits, encode_pairs, per_micro_batch, reference_context, reference_model


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
                            dtype=torch.float32, device="cpu")


def repeat_sets(tokens: list[int]) -> list[list[int]]:
    """For each position t of ``tokens``, S_t: the tokens that followed an earlier occurrence of tokens[t − 1]
    (distinct, in order of first appearance; empty at t = 0 and where tokens[t − 1] is new)."""
    followers: dict[int, list[int]] = {}
    sets = [[]]
    for t in range(1, len(tokens)):
        sets.append(list(followers.get(tokens[t - 1], [])))
        after = followers.setdefault(tokens[t - 1], [])
        if tokens[t] not in after:
            after.append(tokens[t])
    return sets


def repeat_mass(logprobs: torch.Tensor, completion_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] mean over each completion's tokens of Σ_{v ∈ S_t} p(v | y_<t), from next-token log-probs
    ``logprobs`` [B, C, V] at the completion's positions (0 for an empty completion)."""
    out = torch.zeros(len(completion_ids), device="cpu")
    for b in range(len(completion_ids)):
        tokens = completion_ids[b][mask[b].bool()].tolist()
        if not tokens:
            continue
        probs = logprobs[b, :len(tokens)].exp()
        total = sum(float(probs[t, s].sum()) for t, s in enumerate(repeat_sets(tokens)) if s)
        out[b] = total / len(tokens)
    return out


class RepeatMassReward:
    """``repeat-mass`` (see the module's docstring), under the frozen base model."""

    name = "repeat-mass"

    def __init__(self, policy, reference, tokenizer, model_id: str, micro_batch_size: int = 8):
        self.policy, self.reference, self.tokenizer = policy, reference, tokenizer
        self.model_id = model_id
        self.micro_batch_size = micro_batch_size

    def identity(self) -> str:
        return f"{self.name}:{self.model_id}"

    @torch.no_grad()
    def __call__(self, prompts, completions, rollout=None, **_) -> torch.Tensor:
        if rollout is None:
            rollout = encode_pairs(self.tokenizer, prompts, completions)
        if len(rollout) == 0:
            return torch.zeros(0, device="cpu")
        model = reference_model(self.policy, self.reference)

        def score(part):
            logprobs = torch.log_softmax(completion_logits(model, part).float(), -1)
            return repeat_mass(logprobs, part.completion_ids, part.completion_mask)

        with reference_context(self.policy, self.reference):  # [b, C, V] at a time: the vocabulary is large
            return per_micro_batch(rollout, self.micro_batch_size, score)
