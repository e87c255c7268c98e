"""Sampling: the inverse-CDF sampler draws from softmax(logits); merged-LoRA generation computes the
same policy and leaves the trained weights untouched; so do oneDNN-packed linears."""

import contextlib

import pytest
import torch

from rcfd.train.rollout import (InverseCDFSampler, _onednn_packing_works, completion_mask, merged_lora, packed_linears,
                          sampling_processors)


def test_inverse_cdf_sampler_matches_softmax_frequencies():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0, -30.0]]).repeat(40_000, 1)
    out = InverseCDFSampler()(None, logits)
    assert torch.isfinite(out).sum(-1).eq(1).all()  # exactly one token left per row
    drawn = out.argmax(-1)
    freq = torch.bincount(drawn, minlength=5).double() / len(drawn)
    expected = torch.softmax(logits[0].double(), -1)
    # 40k draws: standard error <= 0.0025 per entry.
    assert torch.allclose(freq, expected, atol=0.01), (freq, expected)


def test_top_p_removed_tokens_are_never_drawn():
    torch.manual_seed(0)
    logits = torch.tensor([[3.0, 2.5, 0.0, -1.0]]).repeat(5_000, 1)
    drawn = sampling_processors(temperature=1.0, top_p=0.8)(None, logits).argmax(-1)
    assert set(drawn.tolist()) <= {0, 1}
    assert {0, 1} <= set(drawn.tolist())


def test_temperature_is_applied_before_sampling():
    torch.manual_seed(0)
    logits = torch.tensor([[1.0, 0.0]]).repeat(40_000, 1)
    freq = sampling_processors(temperature=0.5, top_p=1.0)(None, logits).argmax(-1).eq(0).double().mean()
    assert freq == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=0.01)


def _lora_model(tiny_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))


def test_merged_lora_same_logits_and_weights_restored(tiny_path):
    model = _lora_model(tiny_path).eval()
    ids = torch.tensor([[5, 9, 13, 2, 7, 21]])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        with merged_lora(model):
            merged = model(input_ids=ids).logits
        with model.disable_adapter():
            reference = model(input_ids=ids).logits
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert not torch.allclose(reference, unmerged, atol=1e-3)  # the adapters do change the model
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n  # bit for bit, no merge/unmerge rounding


def test_merged_lora_leaves_a_disabled_adapter_disabled(tiny_path):
    model = _lora_model(tiny_path).eval()
    ids = torch.tensor([[5, 9, 13, 2]])
    with torch.no_grad(), model.disable_adapter():
        reference = model(input_ids=ids).logits
        with merged_lora(model):
            inside = model(input_ids=ids).logits
    assert torch.equal(inside, reference)


needs_onednn = pytest.mark.skipif(not _onednn_packing_works(), reason="this torch build has no oneDNN packed linear")


@needs_onednn
@pytest.mark.parametrize("adapters", ["active", "disabled", "none"])
def test_packed_linears_same_logits_and_model_untouched(tiny_path, adapters):
    from transformers import AutoModelForCausalLM

    model = (AutoModelForCausalLM.from_pretrained(tiny_path) if adapters == "none" else _lora_model(tiny_path)).eval()
    ids = torch.tensor([[5, 9, 13, 2, 7, 21], [3, 4, 8, 1, 1, 30]])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    off = model.disable_adapter() if adapters == "disabled" else contextlib.nullcontext()
    with torch.no_grad(), off:
        plain = model(input_ids=ids).logits
        with packed_linears(model, rows=2):
            packed = model(input_ids=ids).logits
            patched = [m for m in model.modules() if "forward" in vars(m)]
        after = model(input_ids=ids).logits
    assert torch.allclose(packed, plain, atol=1e-4)
    assert len(patched) > 0
    assert torch.equal(after, plain)  # the class forward is back
    assert not any("forward" in vars(m) for m in model.modules())
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_completion_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]])
    assert completion_mask(ids, {2}).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_stop_at_newline_ends_completions_at_the_first_line_break(tiny_path, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from rcfd.train.rollout import completion_mask, eos_token_ids

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    newline = tiny_tokenizer("a\nb", add_special_tokens=False)["input_ids"]
    nl = [i for i in newline if "\n" in tiny_tokenizer.decode([i])]
    assert nl and set(nl) <= eos_token_ids(model, tiny_tokenizer, stop_at_newline=True)
    assert not set(nl) & eos_token_ids(model, tiny_tokenizer)
    ids = torch.tensor([[5, 6, nl[0], 7, 8]])
    assert completion_mask(ids, eos_token_ids(model, tiny_tokenizer, True)).tolist() == [[1, 1, 1, 0, 0]]


def test_min_new_tokens_keeps_completions_from_ending_early(tiny_path, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from rcfd.config import GenerationConfig
    from rcfd.train.rollout import generate

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    # Half the vocabulary ends a completion, so without the minimum nearly every one ends within a few tokens.
    model.generation_config.eos_token_id = list(range(model.config.vocab_size // 2))
    prompts = ["The cat", "A long time ago", "In 1990 the", "Rain"] * 2
    torch.manual_seed(0)
    short, _, _ = generate(model, tiny_tokenizer, prompts, GenerationConfig(max_new_tokens=6))
    torch.manual_seed(0)
    full, _, _ = generate(model, tiny_tokenizer, prompts, GenerationConfig(max_new_tokens=6, min_new_tokens=6))
    assert short.completion_mask.sum(1).float().mean() < 3
    assert full.completion_mask.sum(1).tolist() == [6] * len(prompts)


def test_min_new_tokens_above_max_is_refused(tiny_config):
    from rcfd.errors import RcfdError

    with pytest.raises(RcfdError, match="generation.min_new_tokens must be between 0 and generation.max_new_tokens"):
        tiny_config("generation.max_new_tokens=8", "generation.min_new_tokens=9")
