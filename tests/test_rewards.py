import pytest
import torch

from rcfd.rewards import CallableReward, LogLikelihoodReward, build_rewards
from rcfd.errors import NonFiniteError, RcfdError
from rcfd.rewards.base import RewardStack, check_finite




def _manual_avg_loglik(model, tokenizer, prompt, completion):
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    picked = [logp[len(p) - 1 + t, c[t]].item() for t in range(len(c))]
    return sum(picked) / len(picked)


def test_loglik_reward_matches_hand_computation(tiny_model, tiny_tokenizer):
    prompts = ["The city of Paris", "A short history of the world and its many peoples"]
    completions = [" is the capital of France.", " begins long ago"]
    reward = LogLikelihoodReward(tiny_model, tiny_model, tiny_tokenizer, "tiny")
    got = reward(prompts, completions)
    expected = [_manual_avg_loglik(tiny_model, tiny_tokenizer, p, c) for p, c in zip(prompts, completions)]
    assert got.shape == (2,)
    assert torch.allclose(got.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-4)


def test_callable_reward_and_stack():
    stack = build_rewards(["reward_fixtures:word_count"], policy=None, reference=None, tokenizer=None, model_id="x")
    values = stack(["p", "q"], ["a b c", "d"])
    assert values.tolist() == [[3.0], [1.0]]
    assert isinstance(stack.rewards[0], CallableReward)
    with pytest.raises(RcfdError, match="cannot import module"):
        CallableReward.from_spec("no_such_module_xyz:f")
    with pytest.raises(RcfdError, match="no callable"):
        CallableReward.from_spec("reward_fixtures:missing")


def test_stack_shape_check_and_nonfinite():
    bad = RewardStack([CallableReward(lambda p, c, **k: [1.0], "short")])
    with pytest.raises(ValueError, match="shape"):
        bad(["a", "b"], ["x", "y"])
    with pytest.raises(NonFiniteError, match="step 3"):
        check_finite(torch.tensor([[1.0], [float("nan")]]), "the reward", 3)
