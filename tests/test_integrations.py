"""RCfD inside other engines: the TRL reward function (with two real GRPOTrainer steps) and the
verl-style per-sample score."""

import json

import pytest
import torch

from rcfd.errors import RcfdError
from rcfd.integrations.trl import RCfDReward
from rcfd.integrations.verl import make_compute_score, rcfd_score, with_demo_rewards
from rcfd.train.objectives import whiten


def n_words(prompts, completions, **kwargs):
    n_words.calls = getattr(n_words, "calls", 0) + len(completions)
    return [float(len(c.split())) for c in completions]


def n_chars(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def test_trl_reward_is_calibrated_and_caches_demonstrations(tmp_path):
    cache = tmp_path / "demo.jsonl"
    reward = RCfDReward(n_words, cache_file=cache)
    prompts = ["p1", "p1", "p2"]
    completions = ["a b c", "a", "a b c d e"]
    demos = ["x y", "x y", "x y z w"]
    n_words.calls = 0
    got = reward(prompts, completions, demonstration=demos, completion_ids=[[1], [2], [3]])
    assert got == [-(3 - 2) ** 2, -(1 - 2) ** 2, -(5 - 4) ** 2]
    assert n_words.calls == 3 + 2  # completions, then each distinct (prompt, demonstration) once
    reward(prompts, completions, demonstration=demos)
    assert n_words.calls == 5 + 3  # demonstrations come from the cache now
    again = RCfDReward(n_words, cache_file=cache)  # a new run reads the cache file
    n_words.calls = 0
    again(prompts, completions, demonstration=demos)
    assert n_words.calls == 3
    assert len(cache.read_text().splitlines()) == 2 and reward.__name__ == "rcfd"


def test_trl_reward_with_two_rewards_whitens_each_calibrated_term():
    reward = RCfDReward([n_words, n_chars])
    prompts, completions, demos = ["a", "b", "c"], ["one two", "one", "one two three"], ["uno dos", "x", "a b c d"]
    got = torch.tensor(reward(prompts, completions, demonstration=demos))
    R = torch.tensor([[2.0, 7.0], [1.0, 3.0], [3.0, 13.0]])
    Rd = torch.tensor([[2.0, 7.0], [1.0, 1.0], [4.0, 7.0]])
    expected = whiten(-(R - Rd) ** 2, dim=0).sum(-1)
    assert torch.allclose(got, expected, atol=1e-5)


def test_trl_reward_batch_form_by_hand_in_any_row_order():
    """objective='rcfd-batch': A_i = −ḡ_{−x}(R_i − R̄_{−i}); rows of a prompt need not be consecutive."""
    reward = RCfDReward(n_words, objective="rcfd-batch")
    prompts = ["p", "q", "p", "q", "r", "r"]
    completions = ["a b c", "a", "a", "a b c d e", "a b", "a b"]  # R: p 3, 1; q 1, 5; r 2, 2
    demos = ["x", "x y", "x", "x y", "x y z", "x y z"]  # R_d: p 1, q 2, r 3
    gaps = {"p": 2 - 1, "q": 3 - 2, "r": 2 - 3}  # mean reward − demonstration reward
    others = {x: (sum(gaps.values()) - g) / 2 for x, g in gaps.items()}  # mean gap of the other prompts
    R, loo = [3, 1, 1, 5, 2, 2], [1, 5, 3, 1, 2, 2]  # each row's reward and its prompt's other reward
    expected = [-others[x] * (r - m) for x, r, m in zip(prompts, R, loo)]
    assert torch.allclose(torch.tensor(reward(prompts, completions, demonstration=demos)), torch.tensor(expected))
    with pytest.raises(RcfdError, match="at least 2 prompts with the same number"):
        reward(["p", "p", "q"], ["a", "b", "c"], demonstration=["x", "x", "y"])
    with pytest.raises(RcfdError, match="unknown objective 'batch' in objective.name"):
        RCfDReward(n_words, objective="batch")
    with pytest.raises(RcfdError, match="objective 'kl' gives no per-completion reward"):
        RCfDReward(n_words, objective="kl")


def test_trl_reward_batch_form_against_a_fixed_demonstration_mean():
    """fix_demo_mean: every prompt's gap is taken against the training set's mean demonstration reward."""
    train = {"prompt": ["a", "b", "c", "d"], "demonstration": ["x", "x y", "x y z", "x y z w w w"], "id": [1, 2, 3, 4]}
    reward = RCfDReward(n_words, objective="rcfd-batch")
    assert reward.fix_demo_mean(train, chunk=3) == [3.0]  # (1 + 2 + 3 + 6) / 4, scored in two chunks
    prompts, completions = ["p", "p", "q", "q"], ["a b c", "a", "a", "a b c d e"]  # R: p 3, 1; q 1, 5
    demos = ["ignored", "ignored", "not used either", "not used either"]
    gaps = {"p": 2 - 3, "q": 3 - 3}
    expected = [-gaps["q"] * (3 - 1), -gaps["q"] * (1 - 3), -gaps["p"] * (1 - 5), -gaps["p"] * (5 - 1)]
    assert reward(prompts, completions, demonstration=demos) == pytest.approx(expected)
    assert RCfDReward(n_words, objective="rcfd-batch", demo_mean=[3.0])(
        prompts, completions, demonstration=demos) == pytest.approx(expected)
    with pytest.raises(RcfdError, match="applies to objective='rcfd-batch' only"):
        RCfDReward(n_words, demo_mean=[1.0])
    with pytest.raises(RcfdError, match="needs 2 finite value"):
        RCfDReward([n_words, n_chars], objective="rcfd-batch", demo_mean=[1.0])
    with pytest.raises(RcfdError, match="needs columns 'prompt' and 'demonstration', got text"):
        reward.fix_demo_mean({"text": ["a"]})


def test_trl_reward_reads_chat_messages_and_names_a_missing_column():
    reward = RCfDReward(n_words)
    chat_prompts = [[{"role": "user", "content": "hi"}]]
    chat_completions = [[{"role": "assistant", "content": "one two three"}]]
    assert reward(chat_prompts, chat_completions, demonstration=["one"]) == [-4.0]
    with pytest.raises(RcfdError, match="no column 'demonstration'.*columns passed: label"):
        reward(["p"], ["c"], label=[1])
    # TRL passes every dataset column by name; rcfd's own datasets have 'demonstrations' (a list per prompt).
    assert reward(prompts=["p"], completions=["a b"], demonstration=["x"], demonstrations=[["x"]]) == [-1.0]


def test_verl_score_function():
    assert rcfd_score(2.0, 5.0) == -9.0
    assert rcfd_score([1.0, 10.0], [2.0, 0.0], scales=[1.0, 10.0]) == -2.0
    with pytest.raises(ValueError, match="scales"):
        rcfd_score([1.0], [2.0], scales=[0.0])
    score_fn = lambda text, extra: float(len(text.split()))  # noqa: E731
    rows = with_demo_rewards([{"prompt": "p", "demonstration": "a b c"}], score_fn)
    assert rows[0]["extra_info"]["demo_reward"] == [3.0]
    compute_score = make_compute_score(score_fn)
    assert compute_score("wiki", "a b c d e", None, rows[0]["extra_info"]) == -4.0
    assert compute_score("wiki", "a", "3.0") == -4.0  # demonstration reward given as ground truth
    with pytest.raises(ValueError, match="no demonstration reward"):
        compute_score("wiki", "a", None, {})


def test_two_real_grpo_steps_with_rcfd_reward(tiny_path, tiny_tokenizer, tmp_path):
    trl = pytest.importorskip("trl", reason="TRL is in the test extra")
    import datasets
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    ds = datasets.Dataset.from_dict({
        "prompt": ["The river flows", "A city of", "In the year", "The first king"],
        "demonstration": [" through the valley to the sea", " many bridges", " of the great flood", " ruled the land"],
    })
    reward = RCfDReward(n_words)
    args = trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4, num_generations=2,
                          max_completion_length=8, max_steps=2, logging_steps=1, report_to="none",
                          save_strategy="no", seed=0, disable_tqdm=True, gradient_checkpointing=False)
    trainer = trl.GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_path), reward_funcs=[reward],
                              args=args, train_dataset=ds, processing_class=tiny_tokenizer)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/rcfd/mean" in h]
    assert len(logged) == 2
    assert all(h["rewards/rcfd/mean"] <= 0 for h in logged)  # −(R − R_demo)² is never positive
    assert json.dumps(logged)  # plain numbers


def test_an_edited_callable_reward_never_reads_the_demonstration_rewards_cached_for_its_old_code(tmp_path, monkeypatch):
    """A reward edited from len/10 to len/5 must not calibrate to its old demonstration rewards (the cache
    key names the code, not only module.function)."""
    import importlib
    import sys

    from rcfd.rewards.callable import CallableReward

    module = tmp_path / "edited_reward.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    cache = tmp_path / "demo.jsonl"
    prompts, demos = ["p"], ["b" * 40]

    def score():
        sys.modules.pop("edited_reward", None)
        importlib.invalidate_caches()
        reward = CallableReward.from_spec("edited_reward:brevity", trust_code=True)
        return RCfDReward(reward, cache_file=cache).demo_rewards(prompts, demos).item(), reward.identity()

    module.write_text("def brevity(prompts, completions, **kw):\n    return [len(c) / 10 for c in completions]\n")
    first, key_before = score()
    module.write_text("def brevity(prompts, completions, **kw):\n    return [len(c) / 5 for c in completions]\n")
    second, key_after = score()
    assert (first, second) == (4.0, 8.0) and key_before != key_after
    assert score()[1] == key_after  # the same code keeps its key (the cache still serves it)
