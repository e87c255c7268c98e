import pytest
import torch

from rcfd.rewards import CallableReward, LogLikelihoodReward, build_rewards
from rcfd.errors import NonFiniteError, RcfdError
from rcfd.rewards.base import RewardStack, check_finite
from rcfd.rewards.loglik import loglik_statistic




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


def test_loglik_statistics_by_hand():
    # Row 0: five tokens [-1, -2, -3, -4, -5]. Row 1: one token.
    logp = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0], [-2.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert loglik_statistic(logp, mask, "mean").tolist() == [-3.0, -2.0]
    assert torch.allclose(loglik_statistic(logp, mask, "spread"), torch.tensor([2.0 ** 0.5, 0.0]))
    # A loop: one unlikely start, then predictable repeats, averages like a natural text but is uneven.
    natural = torch.tensor([[-3.0, -3.0, -3.0, -3.0]])
    loop = torch.tensor([[-6.5, -4.5, -0.5, -0.5]])
    full = torch.ones(1, 4)
    assert loglik_statistic(loop, full).item() == loglik_statistic(natural, full).item()
    assert loglik_statistic(loop, full, "spread").item() > loglik_statistic(natural, full, "spread").item() == 0
    with pytest.raises(ValueError, match="statistic"):
        loglik_statistic(logp, mask, "median")


def test_loglik_statistic_rewards_share_the_reference_pass(tiny_model, tiny_tokenizer):
    stack = build_rewards(["loglik", "loglik-spread"], policy=tiny_model, reference=tiny_model,
                          tokenizer=tiny_tokenizer, model_id="tiny")
    assert stack.names == ["loglik", "loglik-spread"]
    assert len({r.identity() for r in stack.rewards}) == 2  # separate demonstration-reward cache keys
    values = stack(["The city of Paris"], [" is the capital of France."])
    mean, spread = values[0].tolist()
    assert mean < 0 < spread


def test_repetition_reward_by_hand(tiny_tokenizer):
    from rcfd.train.logprobs import Rollout

    # Row 0: tokens 5 6 5 7 5 (two repeats of five); row 1: no repeat; row 2: empty completion.
    ids = torch.tensor([[5, 6, 5, 7, 5], [8, 9, 0, 0, 0], [0, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    rollout = Rollout(torch.zeros(3, 1, dtype=torch.long), torch.ones(3, 1, dtype=torch.long), ids, mask)
    stack = build_rewards(["repetition"], policy=None, reference=None, tokenizer=tiny_tokenizer,
                          model_id="tiny")
    assert stack(["a", "b", "c"], ["", "", ""], rollout=rollout)[:, 0].tolist() == pytest.approx([0.4, 0.0, 0.0])
    # From text: a loop repeats more of its tokens than a sentence that repeats no word.
    loop, plain = stack(["p", "p"], [" the cat the cat the cat the cat", " a small grey cat sat down"])[:, 0].tolist()
    assert loop > plain + 0.2


def test_repetition_4_reward_by_hand(tiny_tokenizer):
    from rcfd.train.logprobs import Rollout

    # Row 0: 4-grams (1 2 3 4) (2 3 4 1) (3 4 1 2) (4 1 2 3) (1 2 3 4): one repeat of five; row 1: three
    # tokens, no 4-gram; row 2: the same token six times, three 4-grams, two of them repeats.
    ids = torch.tensor([[1, 2, 3, 4, 1, 2, 3, 4], [5, 6, 7, 0, 0, 0, 0, 0], [9, 9, 9, 9, 9, 9, 0, 0]])
    mask = torch.tensor([[1] * 8, [1, 1, 1, 0, 0, 0, 0, 0], [1] * 6 + [0, 0]])
    rollout = Rollout(torch.zeros(3, 1, dtype=torch.long), torch.ones(3, 1, dtype=torch.long), ids, mask)
    stack = build_rewards(["repetition-4"], policy=None, reference=None, tokenizer=tiny_tokenizer,
                          model_id="tiny")
    assert stack.names == ["repetition-4"]
    assert stack(["a", "b", "c"], ["", "", ""], rollout=rollout)[:, 0].tolist() == pytest.approx([0.2, 0.0, 2 / 3])


def test_repeat_sets_and_repeat_mass_by_hand():
    from rcfd.rewards.repetition import repeat_mass, repeat_sets

    # 5 6 5 6 7: at t = 3 the previous token 5 was followed by 6 before; at t = 4 the previous 6 by 5
    assert repeat_sets([5, 6, 5, 6, 7]) == [[], [], [], [6], [5]]
    assert repeat_sets([9, 9, 9]) == [[], [], [9]]
    probs = torch.full((2, 5, 8), 0.05)
    probs[0, 3, 6], probs[0, 4, 5] = 0.6, 0.3
    probs[1, 2, 2] = 0.5
    ids = torch.tensor([[5, 6, 5, 6, 7], [2, 2, 2, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    got = repeat_mass(probs.log(), ids, mask)
    assert got.tolist() == pytest.approx([(0.6 + 0.3) / 5, 0.5 / 3])
    assert repeat_mass(probs.log(), ids, torch.zeros_like(mask)).tolist() == [0.0, 0.0]  # empty: 0


def test_repeat_mass_reward_reads_the_base_models_next_token_probabilities(tiny_model, tiny_tokenizer):
    from rcfd.rewards.repetition import repeat_sets

    prompts, completions = ["The city of Paris"], [" is is is the the city city of of Paris"]
    stack = build_rewards(["repeat-mass"], policy=tiny_model, reference=tiny_model, tokenizer=tiny_tokenizer,
                          model_id="tiny")
    got = float(stack(prompts, completions)[0, 0])
    p_ids = tiny_tokenizer(prompts[0], add_special_tokens=False)["input_ids"]
    c_ids = tiny_tokenizer(completions[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(tiny_model(torch.tensor([p_ids + c_ids])).logits[0].float(), -1)
    # the position before completion token t predicts it
    expected = sum(float(probs[len(p_ids) + t - 1, s].sum()) for t, s in enumerate(repeat_sets(c_ids)) if s)
    assert got == pytest.approx(expected / len(c_ids), rel=1e-4)
    assert got > 0


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
    with pytest.raises(RcfdError, match="'short' returned 1 values for 2 completions"):
        bad(["a", "b"], ["x", "y"])
    silent = RewardStack([CallableReward(lambda p, c, **k: [1.0, None], "half_done")])
    with pytest.raises(RcfdError, match=r"'half_done' returned None \(NoneType\) for completion 1"):
        silent(["a", "b"], ["x", "y"])  # was TypeError: must be real number, not NoneType
    with pytest.raises(RcfdError, match="'scalar' returned float, not a list"):
        CallableReward(lambda p, c, **k: 0.5, "scalar")(["a"], ["x"])
    assert CallableReward(lambda p, c, **k: [True, False], "flags")(["a", "b"], ["x", "y"]).tolist() == [1.0, 0.0]
    with pytest.raises(NonFiniteError, match="step 3"):
        check_finite(torch.tensor([[1.0], [float("nan")]]), "the reward", 3)
