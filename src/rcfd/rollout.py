"""Sampling completions with transformers ``generate``."""

from __future__ import annotations

import torch

from .logprobs import Rollout, _gather_logprobs, decode_completions


def completion_mask(completion_ids: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    """1 up to and including the first EOS of each row, 0 after it."""
    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)
    for eos in eos_ids:
        is_eos |= completion_ids == eos
    # Number of EOS seen strictly before each position: a token is kept while that count is 0.
    before = torch.cumsum(is_eos.int(), 1) - is_eos.int()
    return (before == 0).long()


def newline_token_ids(tokenizer) -> set[int]:
    """Every vocabulary entry whose text contains a line break (so '.\n' ends a line as '\n' does)."""
    cached = getattr(tokenizer, "_rcfd_newline_ids", None)
    if cached is None:
        cached = {i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])}
        tokenizer._rcfd_newline_ids = cached
    return cached


def eos_token_ids(model, tokenizer, stop_at_newline: bool = False) -> set[int]:
    """Token ids that end a completion: the model's and tokenizer's EOS, plus line breaks if asked."""
    ids = set(newline_token_ids(tokenizer)) if stop_at_newline else set()
    cfg_eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif cfg_eos:
        ids.update(cfg_eos)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], gen_cfg, max_new_tokens: int | None = None,
             want_logprobs: bool = False):
    """Sample one completion per prompt.

    Returns (rollout, texts, logprobs) where logprobs [B, C] are the sampling policy's token
    log-probabilities (temperature 1, from generate's raw logits) when ``want_logprobs`` is set:
    they serve as PPO's "old" log-probs without a second forward pass.
    """
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    eos = eos_token_ids(model, tokenizer, getattr(gen_cfg, "stop_at_newline", False))
    was_training = model.training
    model.eval()
    out = model.generate(
        **enc,
        do_sample=True,
        temperature=gen_cfg.temperature,
        top_p=gen_cfg.top_p,
        top_k=0,
        max_new_tokens=max_new_tokens or gen_cfg.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=sorted(eos),
        return_dict_in_generate=True,
        output_logits=want_logprobs,
    )
    if was_training:
        model.train()
    prompt_len = enc["input_ids"].shape[1]
    completion_ids = out.sequences[:, prompt_len:]
    mask = completion_mask(completion_ids, eos)
    completion_ids = completion_ids.masked_fill(mask == 0, tokenizer.pad_token_id)
    rollout = Rollout(enc["input_ids"], enc["attention_mask"], completion_ids, mask)
    texts = decode_completions(tokenizer, rollout)
    logprobs = None
    if want_logprobs:
        # Per decoding step from the raw logits (before temperature/top-p), never stacking them into
        # one [B, C, V] tensor: at B = 128 that copy alone was 0.6 GB.
        logprobs = torch.stack([_gather_logprobs(step_logits, completion_ids[:, t])
                                for t, step_logits in enumerate(out.logits)], 1) * mask
    return rollout, texts, logprobs
