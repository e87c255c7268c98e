"""The optional vLLM backend: what runs without vLLM (its rollout layout and its error)."""

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM

from rcfd.config import GenerationConfig, load_config
from rcfd.errors import RcfdError
from rcfd.train.rollout import eos_token_ids, generate
from rcfd.train.vllm_rollout import import_vllm, rollout_from_token_lists


def test_token_lists_pad_like_transformers_generate(tiny_path, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    eos = eos_token_ids(model, tiny_tokenizer)
    prompts = ["a short one", "a somewhat longer prompt than the first", "x"]
    torch.manual_seed(0)
    ref, _, _ = generate(model, tiny_tokenizer, prompts, GenerationConfig(max_new_tokens=12))
    prompt_ids = [tiny_tokenizer(p)["input_ids"] for p in prompts]
    completions = [c[m.bool()].tolist() for c, m in zip(ref.completion_ids, ref.completion_mask)]
    # vLLM stops at EOS itself; an engine that kept sampling past it must be cut the same way.
    completions[0] = completions[0] + [sorted(eos)[0], 5, 6]
    got = rollout_from_token_lists(prompt_ids, completions, tiny_tokenizer.pad_token_id, eos, 12)
    got_c = got.completion_ids[:, :ref.completion_ids.shape[1]]
    assert torch.equal(got.prompt_ids, ref.prompt_ids) and torch.equal(got.prompt_mask, ref.prompt_mask)
    assert torch.equal(got_c, ref.completion_ids)
    assert torch.equal(got.completion_mask[:, :got_c.shape[1]], ref.completion_mask)
    assert int(got.completion_mask[:, got_c.shape[1]:].sum()) == 0


def test_empty_completion_is_all_padding():
    got = rollout_from_token_lists([[1, 2]], [[]], pad_id=0, eos_ids={2}, max_new_tokens=4)
    assert got.completion_ids.shape == (1, 1) and int(got.completion_mask.sum()) == 0


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_backend_without_vllm_names_the_extra():
    assert load_config(None, ["generation.backend=vllm"]).generation.backend == "vllm"
    with pytest.raises(RcfdError, match=r"rcfd\[vllm\].*generation.backend=transformers"):
        import_vllm()


def test_unknown_backend_is_rejected():
    with pytest.raises(RcfdError, match="unknown backend .* in generation.backend"):
        load_config(None, ["generation.backend=sglang"])
