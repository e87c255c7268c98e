"""Per-token log-probabilities of completions, under the policy or the frozen reference.

Sequences are laid out as generation produces them: left-padded prompt, then the completion,
right-padded after EOS. Position ids are derived from the attention mask so a padded row sees the
same positions as during generation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass
class Rollout:
    """A batch of prompts with one sampled (or given) completion each."""

    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    completion_ids: torch.Tensor  # [B, C] right-padded
    completion_mask: torch.Tensor  # [B, C] 1 on real tokens (EOS included)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def select(self, index) -> "Rollout":
        return Rollout(self.prompt_ids[index], self.prompt_mask[index],
                       self.completion_ids[index], self.completion_mask[index])

    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)


def encode_pairs(tokenizer, prompts: list[str], completions: list[str], max_tokens: int | None = None) -> Rollout:
    """Tokenize text completions (e.g. demonstrations) in the same layout as generated ones."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    p = tokenizer(list(prompts), return_tensors="pt", padding=True)
    tokenizer.padding_side = "right"
    c = tokenizer(list(completions), return_tensors="pt", padding=True, add_special_tokens=False,
                  truncation=max_tokens is not None, max_length=max_tokens)
    tokenizer.padding_side = side
    return Rollout(p["input_ids"], p["attention_mask"], c["input_ids"], c["attention_mask"])


def decode_completions(tokenizer, rollout: Rollout) -> list[str]:
    """Text of each completion's real tokens (padding dropped)."""
    return [
        tokenizer.decode(ids[mask.bool()].tolist(), skip_special_tokens=True)
        for ids, mask in zip(rollout.completion_ids, rollout.completion_mask)
    ]


def _gather_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[targets] without materializing the full log-softmax tensor."""
    logits = logits.float()
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_logprobs(model, rollout: Rollout, micro_batch_size: int | None = None) -> torch.Tensor:
    """[B, C] log π(y_t | x, y_<t) for each completion token (zeros on padding)."""
    bsz = len(rollout)
    step = micro_batch_size or bsz
    parts = [_token_logprobs(model, rollout.select(slice(i, i + step))) for i in range(0, bsz, step)]
    return torch.cat(parts, 0)


def _token_logprobs(model, r: Rollout) -> torch.Tensor:
    input_ids = torch.cat([r.prompt_ids, r.completion_ids], 1)
    mask = torch.cat([r.prompt_mask, r.completion_mask], 1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    c = r.completion_ids.shape[1]
    # Only the last C+1 positions predict completion tokens: skip the LM head on the prompt.
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                logits_to_keep=c + 1, use_cache=False)
    logp = _gather_logprobs(out.logits[:, :-1], r.completion_ids)
    return logp * r.completion_mask


def reference_context(policy, reference):
    """Context in which ``policy`` acts as the reference (LoRA adapters disabled), if no copy exists."""
    if reference is None and hasattr(policy, "disable_adapter"):
        return policy.disable_adapter()
    return contextlib.nullcontext()


@torch.no_grad()
def reference_logprobs(policy, reference, rollout: Rollout, micro_batch_size=None) -> torch.Tensor:
    with reference_context(policy, reference):
        return token_logprobs(reference if reference is not None else policy, rollout, micro_batch_size)
