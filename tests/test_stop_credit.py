"""train.stop_credit=branch: prefixes scored as stopped completions, the stop decision's advantage and loss,
against hand-computed values, and through the trainer."""

import math

import pytest
import torch

from rcfd.errors import RcfdError
from rcfd.train.logprobs import Rollout
from rcfd.train.objectives import (objective_in_batch_units, objective_values, stop_branch_advantages, stop_branch_loss)
from rcfd.train.rollout import stop_prefixes

STOP, PAD = 9, 0


def rollout_of(completions, width=4):
    ids = torch.full((len(completions), width), PAD)
    mask = torch.zeros((len(completions), width), dtype=torch.long)
    for i, c in enumerate(completions):
        ids[i, :len(c)] = torch.tensor(c)
        mask[i, :len(c)] = 1
    prompts = torch.arange(len(completions))[:, None] + 100
    return Rollout(prompts, torch.ones_like(prompts), ids, mask)


def test_stop_prefixes_are_the_positions_where_a_completion_went_on():
    # row 0 ended at its third token; row 1 ran to the cap without stopping
    r = rollout_of([[5, 6, STOP], [7, 8, 4, 3]])
    prefixes, rows, positions = stop_prefixes(r, {STOP}, STOP, PAD)
    assert rows.tolist() == [0, 0, 1, 1, 1, 1]
    assert positions.tolist() == [0, 1, 0, 1, 2, 3]
    assert prefixes.completion_tokens() == [[STOP], [5, STOP], [STOP], [7, STOP], [7, 8, STOP], [7, 8, 4, STOP]]
    assert prefixes.prompt_ids[:, 0].tolist() == [100, 100, 101, 101, 101, 101]
    # positions before generation.min_new_tokens cannot stop, so they are not compared with stopping
    _, rows, positions = stop_prefixes(r, {STOP}, STOP, PAD, min_new_tokens=2)
    assert rows.tolist() == [1, 1] and positions.tolist() == [2, 3]


def test_objective_in_batch_units_reproduces_the_batchs_own_objective():
    torch.manual_seed(0)
    R, demo = torch.randn(8, 2), torch.randn(8, 2)
    batch = objective_values("rcfd", R, demo_rewards=demo)  # whitened columns, summed
    assert torch.allclose(objective_in_batch_units("rcfd", R[:3], demo[:3], R, demo), batch[:3], atol=1e-6)
    # a row outside the batch does not move the batch's statistics: by hand for one column
    extra, extra_demo = torch.tensor([[0.5, 1.0]]), torch.tensor([[0.0, 0.0]])
    terms = -(R - demo) ** 2
    mean, std = terms.mean(0), terms.std(0, unbiased=False)
    expected = ((torch.tensor([-0.25, -1.0]) - mean) / (std + 1e-8)).sum()
    assert objective_in_batch_units("rcfd", extra, extra_demo, R, demo).item() == pytest.approx(expected.item(), 1e-5)
    scale = torch.tensor([2.0, 4.0])
    assert objective_in_batch_units("rcfd", extra, extra_demo, R, demo, scale=scale).item() == pytest.approx(-0.375)
    assert objective_in_batch_units("weighted", extra, None, R, None, alpha=0.1).item() == pytest.approx(0.6)
    assert objective_in_batch_units("reward", extra, None, R, None).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="rcfd-batch"):
        objective_in_batch_units("rcfd-batch", extra, extra_demo, R, demo)


def test_stop_branch_advantages_by_hand():
    # (O_stop − O_final) / unit / (1 − p): stopping here would have scored 1 more (in units of 2), p = 0.5
    got = stop_branch_advantages(torch.tensor([3.0, -1.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.0]), 2.0)
    assert torch.allclose(got, torch.tensor([2.0, -1.0]))


def test_stop_branch_loss_by_hand_at_the_sampling_policy():
    # one completion of 3 tokens: went on twice, then stopped; p_stop 0.2 and 0.5 where it went on
    p = torch.tensor([[0.2, 0.5, 0.9]])
    log_stop = p.log()
    logp = torch.log(torch.tensor([[0.4, 0.25, 0.9]]))
    is_stop = torch.tensor([[False, False, True]])
    mask = torch.ones(1, 3)
    A, branch = torch.tensor([1.5]), torch.tensor([[2.0, -1.0, 0.0]])
    loss = stop_branch_loss(logp, logp, log_stop, log_stop, is_stop, A, branch, mask, 0.2)
    # at ρ = 1 every min() is its unclipped term: content A per going-on token, p_old·B for the stop decision;
    # the sampled stop token has no term; the mean over the completion's 3 tokens
    assert loss.item() == pytest.approx(-((1.5 + 0.2 * 2.0) + (1.5 + 0.5 * -1.0)) / 3)
    assert stop_branch_loss(logp, logp, log_stop, log_stop, is_stop, A, branch, mask, 0.2, max_tokens=4).item() \
        == pytest.approx(-(1.9 + 1.0) / 4)


def test_stop_branch_loss_moves_the_stop_probability_by_its_own_advantage_only():
    """Gradients through the logits of one position: the stop advantage moves p_stop, the sequence's
    advantage moves the choice among the other tokens and leaves p_stop where it is."""
    vocab_stop = 2  # tokens 0 and 1 go on, token 2 stops

    def grads(A, B):
        logits = torch.tensor([[[0.3, -0.2, 0.1]]], requires_grad=True)
        log_probs = torch.log_softmax(logits, -1)
        logp, log_stop = log_probs[..., 0], log_probs[..., vocab_stop]
        loss = stop_branch_loss(logp, logp.detach(), log_stop, log_stop.detach(), torch.tensor([[False]]),
                                torch.tensor([A]), torch.tensor([[B]]), torch.ones(1, 1), 0.2)
        loss.sum().backward()
        return torch.softmax(logits.detach(), -1)[0, 0], logits.grad[0, 0]

    probs, g = grads(A=1.0, B=0.0)
    # −A ∇ log π_c(token 0): π_c over {0, 1}; the stop logit gets no gradient
    pc = probs[:2] / probs[:2].sum()
    assert torch.allclose(g, torch.tensor([-(1 - pc[0]), pc[1], 0.0]), atol=1e-6)
    probs, g = grads(A=0.0, B=1.0)
    # −B ∇ p_stop: ∂p_2/∂z_j = p_2(δ_2j − p_j)
    p2 = probs[2]
    assert torch.allclose(g, -torch.tensor([-p2 * probs[0], -p2 * probs[1], p2 * (1 - p2)]), atol=1e-6)


def test_branch_credit_trains_through_the_trainer(tiny_config, tmp_path, monkeypatch):
    """The trainer scores every going-on position's prefix with the rewards and hands the update nonzero stop
    advantages exactly there; a step moves the weights, and a rerun gives the same numbers."""
    import rcfd.train.trainer as trainer_module

    seen = {}
    real_branches = trainer_module.Trainer.stop_branches

    def spy(self, prompts, rollout, *args):
        old_logp, branch = real_branches(self, prompts, rollout, *args)
        seen["lengths"], seen["branch"], seen["is_stop"] = rollout.lengths(), branch[1], branch[2]
        seen["old_stop"], seen["content"], seen["advantages"] = branch[0].exp(), branch[3], args[-1]
        return old_logp, branch

    monkeypatch.setattr(trainer_module.Trainer, "stop_branches", spy)
    config = tiny_config("train.steps=1", "train.stop_credit=branch", "generation.stop_at_newline=true")
    records = []
    for name in ("a", "b"):
        t = trainer_module.Trainer(config, tmp_path / name, progress=False)
        before = [p.detach().clone() for p in t.policy.parameters() if p.requires_grad]
        t.train()
        records.append((tmp_path / name / "metrics.jsonl").read_text())
        after = [p.detach() for p in t.policy.parameters() if p.requires_grad]
        assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert records[0] == records[1]
    went_on = torch.arange(seen["branch"].shape[1])[None] < seen["lengths"][:, None] - seen["is_stop"].any(-1, keepdim=True).long()
    assert (seen["branch"][~went_on] == 0).all()
    assert (seen["branch"][went_on] != 0).float().mean() > 0.9  # a prefix scores the same as its completion rarely
    assert torch.equal(seen["content"], seen["advantages"])  # 'branch': the other tokens keep the sequence's


def test_branch_baseline_credits_each_token_against_stopping_before_it(tiny_config, tmp_path, monkeypatch):
    """'branch-baseline': a token's advantage is (O − O_stop)/unit, the stop decision's (O_stop − O)/unit/(1 − p),
    so at every scored position content = −stop advantage·(1 − p_old)."""
    import rcfd.train.trainer as trainer_module

    seen = {}
    real_branches = trainer_module.Trainer.stop_branches

    def spy(self, prompts, rollout, *args):
        old_logp, branch = real_branches(self, prompts, rollout, *args)
        seen["branch"] = branch
        return old_logp, branch

    monkeypatch.setattr(trainer_module.Trainer, "stop_branches", spy)
    trainer_module.Trainer(tiny_config("train.steps=1", "train.stop_credit=branch-baseline"), tmp_path / "b",
                           progress=False).train()
    old_log_stop, stop_advantages, _, content = seen["branch"]
    scored = stop_advantages != 0
    assert scored.any() and content.shape == stop_advantages.shape
    assert torch.allclose(content[scored], -stop_advantages[scored] * (1 - old_log_stop[scored].exp()), atol=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (["objective.name=rcfd-batch", "train.num_generations=2", "train.advantage=rloo"], "per-sample objective"),
    (["objective.name=rcfd", "train.num_generations=2", "train.advantage=rloo"], "train.advantage=whiten"),
    (["objective.per_sample=[loglik]"], "objective.per_sample"),
    (["train.stop_credit=always"], "unknown credit 'always' in train.stop_credit"),
])
def test_branch_credit_refuses_what_it_cannot_score(tiny_config, overrides, message):
    extra = [] if overrides[0].startswith("train.stop_credit") else ["train.stop_credit=branch"]
    with pytest.raises(RcfdError, match=message.replace("(", r"\(").replace(".", r"\.")):
        tiny_config(*extra, *overrides)


def test_rewards_are_scored_on_prefixes_as_whole_texts(tiny_config, tmp_path):
    """The prefix rewards come from the same reward stack as the batch's: a length reward sees t + 1 tokens."""
    from rcfd.train.trainer import Trainer

    t = Trainer(tiny_config("train.steps=1", "train.stop_credit=branch", "reward.names=[length]",
                            "objective.name=reward"), tmp_path / "r", progress=False)
    r = rollout_of([[5, 6, 7]], width=3)
    prefixes, rows, positions = stop_prefixes(r, t.stop_ids, t.stop_token, t.tokenizer.pad_token_id)
    texts = [t.tokenizer.decode(c) for c in prefixes.completion_tokens()]
    values = t.rewards(["x"] * len(rows), texts, rollout=prefixes)[:, 0]
    assert values.tolist() == [-(p + 1.0) for p in positions.tolist()]
    assert math.isclose(float(positions.max()), 2.0)
