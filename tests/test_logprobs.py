"""The LM-head shortcut of token_logprobs computes the same numbers as the model's own forward."""

import pytest
import torch

from rcfd.config import GenerationConfig
from rcfd.train.logprobs import _gather_logprobs, encode_pairs, split_lm_head, token_logprobs
from rcfd.train.rollout import generate


@pytest.fixture(scope="module")
def pairs(tiny_tokenizer):
    return encode_pairs(tiny_tokenizer, ["The city of Paris", "A much longer prompt about the history"],
                        [" is the capital of France and more", " begins"])


def _reference_path(model, r):
    """The model's own forward with logits_to_keep (what the shortcut replaces)."""
    ids = torch.cat([r.prompt_ids, r.completion_ids], 1)
    mask = torch.cat([r.prompt_mask, r.completion_mask], 1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    c = r.completion_ids.shape[1]
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=c + 1).logits[:, :-1]
    return _gather_logprobs(logits, r.completion_ids) * r.completion_mask


@pytest.mark.parametrize("lora", [False, True])
def test_shortcut_matches_model_forward_with_gradients(tiny_path, pairs, lora):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    assert split_lm_head(model) is not None
    fast = token_logprobs(model, pairs)
    slow = _reference_path(model, pairs)
    assert torch.allclose(fast, slow, atol=1e-5)
    params = [p for p in model.parameters() if p.requires_grad]
    g_fast = torch.autograd.grad(fast.sum(), params)
    g_slow = torch.autograd.grad(slow.sum(), params)
    for a, b in zip(g_fast, g_slow):
        assert torch.allclose(a, b, atol=1e-5)


def test_models_with_transformed_logits_use_their_own_forward(tiny_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    model.config.final_logit_softcapping = 30.0  # as in Gemma 2: logits are not a plain linear head
    assert split_lm_head(model) is None


def test_generation_logprobs_match_forward(tiny_model, tiny_tokenizer):
    torch.manual_seed(1)
    prompts = ["The city of Paris", "A much longer prompt about the history of the world"]
    rollout, texts, logp = generate(tiny_model, tiny_tokenizer, prompts, GenerationConfig(max_new_tokens=12),
                                    want_logprobs=True)
    forward = token_logprobs(tiny_model, rollout)
    assert len(texts) == 2
    assert torch.allclose(logp, forward, atol=1e-4)


def test_encode_pairs_truncates(tiny_tokenizer):
    r = encode_pairs(tiny_tokenizer, ["a b c"], ["one two three four five six seven"], max_tokens=3)
    assert r.completion_ids.shape[1] == 3 and r.lengths().tolist() == [3]
