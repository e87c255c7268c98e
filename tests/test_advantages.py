"""Advantage estimators, rcfd-mean and the PPO-clip loss against hand-computed values."""

import math

import pytest
import torch

from rcfd.config import make_config
from rcfd.train.advantages import ESTIMATORS, group_normalized, leave_one_out_mean, ppo_clip_loss, rloo
from rcfd.train.objectives import objective_values, rcfd_batch_advantages, rcfd_mean_advantages
from rcfd.train.rollout import group_rows
from rcfd.train.schedule import batch_indices, step_rows, whole_groups

# Two prompts, k = 3 completions each.
OBJ = torch.tensor([1.0, 2.0, 6.0, -1.0, -1.0, 2.0])


def test_leave_one_out_mean_by_hand():
    assert torch.allclose(leave_one_out_mean(OBJ, 3), torch.tensor([4.0, 3.5, 1.5, 0.5, 0.5, -1.0]))


def test_rloo_by_hand():
    # A_i = obj_i − mean of the other two of its prompt
    assert torch.allclose(rloo(OBJ, 3), torch.tensor([-3.0, -1.5, 4.5, -1.5, -1.5, 3.0]))
    # k/(k−1)·(obj − group mean): group means 3 and 0
    assert torch.allclose(rloo(OBJ, 3), 1.5 * (OBJ - torch.tensor([3.0] * 3 + [0.0] * 3)))


def test_group_normalized_by_hand():
    # group 1: mean 3, population std sqrt(14/3); group 2: mean 0, std sqrt(2)
    s1, s2 = math.sqrt(14 / 3), math.sqrt(2)
    expected = torch.tensor([-2 / s1, -1 / s1, 3 / s1, -1 / s2, -1 / s2, 2 / s2])
    assert torch.allclose(group_normalized(OBJ, 3, eps=0.0), expected, atol=1e-6)
    assert torch.equal(group_normalized(torch.full((4,), 2.0), 2), torch.zeros(4))  # equal values: no signal


def test_each_estimator_by_name():
    whitened = ESTIMATORS["whiten"](OBJ, 1)
    assert whitened.mean().abs() < 1e-6 and whitened.std(unbiased=False) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(ESTIMATORS["rloo"](OBJ, 3), rloo(OBJ, 3))
    assert torch.equal(ESTIMATORS["group"](OBJ, 3), group_normalized(OBJ, 3))
    with pytest.raises(ValueError, match="groups of 4"):
        rloo(OBJ, 4)


def test_rcfd_mean_advantage_by_hand():
    r = torch.tensor([[1.0], [2.0], [6.0], [0.0], [0.0], [3.0]])
    demo = torch.tensor([[2.0]] * 3 + [[1.0]] * 3)
    # others: [4, 3.5, 1.5, 1.5, 1.5, 0]; A = −(others − R_d)(R − others)
    expected = torch.tensor([-(4 - 2) * (1 - 4), -(3.5 - 2) * (2 - 3.5), -(1.5 - 2) * (6 - 1.5),
                             -(1.5 - 1) * (0 - 1.5), -(1.5 - 1) * (0 - 1.5), -(0 - 1) * (3 - 0)])
    assert torch.allclose(rcfd_mean_advantages(r, demo, 3), expected)
    assert torch.allclose(objective_values("rcfd-mean", r, demo_rewards=demo, k=3), expected)


def test_rcfd_mean_advantage_is_unbiased_for_the_mean_gap():
    """For a two-outcome policy, E[A · ∇log π] matches −(μ − R_d) ∇μ, the gradient of −½(μ − R_d)²."""
    torch.manual_seed(0)
    p, demo, k, n = 0.3, 0.9, 4, 200_000  # reward 1 with probability p, else 0; μ = p
    draws = (torch.rand(n * k) < p).float()
    adv = rcfd_mean_advantages(draws[:, None], torch.full((n * k, 1), demo), k)
    # score function of a Bernoulli(p) in its logit θ: ∂log π/∂θ = y − p, and ∂μ/∂θ = p(1 − p)
    estimate = float((adv * (draws - p)).mean())
    assert estimate == pytest.approx(-(p - demo) * p * (1 - p), rel=0.03)


def test_rcfd_mean_with_several_rewards_scales_each_term():
    r = torch.tensor([[1.0, 10.0], [3.0, 50.0], [2.0, 20.0], [0.0, 40.0]])
    demo = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 10.0], [1.0, 10.0]])
    one = rcfd_mean_advantages(r, demo, 2)
    r2, demo2 = r.clone(), demo.clone()
    r2[:, 1] *= 100
    demo2[:, 1] *= 100
    assert torch.allclose(rcfd_mean_advantages(r2, demo2, 2), one, atol=1e-5)  # a reward's units do not matter


def test_rcfd_batch_advantage_by_hand():
    r = torch.tensor([[1.0], [3.0], [0.0], [4.0], [5.0], [5.0]])  # three prompts, k = 2
    demo = torch.tensor([[1.0]] * 2 + [[1.0]] * 2 + [[8.0]] * 2)
    # prompt gaps g = mean − R_d: 2 − 1 = 1, 2 − 1 = 1, 5 − 8 = −3; the other prompts' mean gap:
    # prompt 0: (1 − 3)/2 = −1, prompt 1: −1, prompt 2: (1 + 1)/2 = 1. A = −ḡ_{−x}(R_i − R̄_{−i})
    expected = torch.tensor([1 * (1 - 3), 1 * (3 - 1), 1 * (0 - 4), 1 * (4 - 0), -1 * 0.0, -1 * 0.0])
    assert torch.allclose(rcfd_batch_advantages(r, demo, 2), expected)
    assert torch.allclose(objective_values("rcfd-batch", r, demo_rewards=demo, k=2), expected)
    # totals from every process: a fourth prompt elsewhere with gap 7 moves every factor
    four = rcfd_batch_advantages(r, demo, 2, gap_sum=torch.tensor([1.0 + 1 - 3 + 7]), num_prompts=4)
    assert torch.allclose(four[:2], -((1 - 3 + 7) / 3) * torch.tensor([-2.0, 2.0]))
    with pytest.raises(ValueError, match="at least 2 prompts"):
        rcfd_batch_advantages(r[:2], demo[:2], 2)


def test_per_sample_column_charges_each_text_its_own_distance_by_hand():
    from rcfd.train.objectives import per_sample_columns

    # two prompts, k = 2; column 0 a mean-matched reward, column 1 a repetition share with target 0.1
    r = torch.tensor([[1.0, 0.1], [3.0, 0.5], [2.0, 0.1], [2.0, 0.1]])
    demo = torch.tensor([[2.0, 0.1]] * 4)
    # column 1 per sample: prompt 0's −(R − 0.1)² = 0, −0.16 → leave-one-out: 0 − (−0.16) = 0.16 and −0.16;
    # prompt 1's: 0, 0
    flags = torch.tensor([False, True])
    mean_terms = torch.tensor([[7.0, 7.0]] * 4)  # whatever the mean-matching term was
    mixed = per_sample_columns(mean_terms, r, demo, 2, flags)
    assert torch.allclose(mixed, torch.tensor([[7.0, 0.16], [7.0, -0.16], [7.0, 0.0], [7.0, 0.0]]))
    assert torch.equal(per_sample_columns(mean_terms, r, demo, 2, torch.tensor([False, False])), mean_terms)
    # inside rcfd-batch: column 0's prompt gaps are 0 and 0; column 1's are 0.2 and 0, and each prompt's
    # factor is the *other* prompt's gap, times R_i − R̄_{−i}: 0 × ±0.4 for prompt 0, 0.2 × 0 for prompt 1.
    plain = rcfd_batch_advantages(r, demo, 2)
    assert torch.allclose(plain, torch.zeros(4), atol=1e-6)  # the batch's means are on target: no signal
    curved = rcfd_batch_advantages(r, demo, 2, per_sample=flags)
    z = torch.tensor([0.16, -0.16, 0.0, 0.0])
    assert torch.allclose(curved, z / z.std(unbiased=False), atol=1e-5)  # batch-std unit, as combine_terms
    assert torch.allclose(objective_values("rcfd-batch", r, demo_rewards=demo, k=2, per_sample=flags), curved)
    assert curved[1] < 0 < curved[0]  # the text that repeats itself is pushed down, its sibling up


def test_per_sample_names_a_reward_column():
    with pytest.raises(Exception, match="objective.per_sample names"):
        make_config({"reward": {"names": ["sentiment"], "calibrate_also": ["repetition"]},
                     "objective": {"per_sample": ["loglik"]}})
    make_config({"reward": {"names": ["sentiment"], "calibrate_also": ["repetition"]},
                 "objective": {"per_sample": ["repetition"]}})


def test_rcfd_batch_advantage_is_unbiased_for_the_batch_gap():
    """Each prompt's policy is a two-outcome one with its own p. With these fixed prompts
    E[A_i ∇log π] = −ḡ_{−x} ∇μ_x, ḡ_{−x} the other prompts' mean gap μ_z − R_d(z); with prompts drawn
    independently from the data its expectation is the population gap (the objective's gradient)."""
    torch.manual_seed(0)
    ps, demos, k, n = torch.tensor([0.2, 0.5, 0.7, 0.4]), torch.tensor([0.9, 0.1, 0.6, 0.3]), 3, 100_000
    draws = (torch.rand(n, len(ps), k) < ps[None, :, None]).float()  # [steps, prompts, k]
    rewards = draws.reshape(n, -1)
    demo = demos.repeat_interleave(k)[None].expand(n, -1)
    adv = torch.stack([rcfd_batch_advantages(rewards[i, :, None], demo[i, :, None], k) for i in range(0, n, 50)])
    score = draws.reshape(n, -1)[::50] - ps.repeat_interleave(k)  # ∂log π/∂θ_x = y − p_x
    estimate = (adv * score).mean(0).reshape(len(ps), k).mean(1)
    gaps = ps - demos
    others = (gaps.sum() - gaps) / (len(ps) - 1)
    expected = -others * ps * (1 - ps)  # ∂μ_x/∂θ_x = p(1 − p)
    assert torch.allclose(estimate, expected, atol=0.004)


def test_ppo_clip_loss_by_hand():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0], [1.1, 2.0, 1.0]]))
    old = torch.zeros(2, 3)  # ratios = exp(logp) = the tensor above
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    eps = 0.2
    # row 0 (A = 1): min(1.5, 1.2) = 1.2, min(0.5, 0.8) = 0.5 → −(1.2 + 0.5)/2
    # row 1 (A = −2): min(−2.2, −2.2) = −2.2, min(−4, −2.4) = −4, min(−2, −2) = −2 → −(−8.2)/3
    expected = torch.tensor([-(1.2 + 0.5) / 2, 8.2 / 3])
    assert torch.allclose(ppo_clip_loss(logp, old, adv, mask, eps), expected, atol=1e-6)
    # train.loss_type=dr_grpo: the same sums over a constant 4, whatever each row's length
    dr = torch.tensor([-(1.2 + 0.5) / 4, 8.2 / 4])
    assert torch.allclose(ppo_clip_loss(logp, old, adv, mask, eps, max_tokens=4), dr, atol=1e-6)


def test_dr_grpo_weighs_every_token_alike_whatever_its_completions_length():
    """At ρ = 1 the gradient on a token's log-probability is −A/|y| for 'grpo' and −A/max_tokens for 'dr_grpo'."""
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    adv = torch.tensor([1.0, 1.0])
    for max_tokens, first, second in ((None, -1.0, -0.25), (4, -0.25, -0.25)):
        logp = torch.zeros(2, 4, requires_grad=True)
        ppo_clip_loss(logp, torch.zeros(2, 4), adv, mask, 0.2, max_tokens).sum().backward()
        assert logp.grad[0, 0] == pytest.approx(first) and logp.grad[1, 0] == pytest.approx(second)
        assert logp.grad[0, 1:].abs().sum() == 0  # padding gets nothing


def test_ppo_clip_loss_gradient_vanishes_where_clipped():
    logp = torch.log(torch.tensor([[1.5, 1.0]])).requires_grad_()
    loss = ppo_clip_loss(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), 0.2).sum()
    loss.backward()
    assert logp.grad[0, 0] == 0  # ratio 1.5 > 1.2 with A > 0: clipped
    assert logp.grad[0, 1] == pytest.approx(-0.5)  # −ρ·A/2 at ρ = 1


def test_every_prompt_of_a_step_appears_k_times_in_whole_groups_across_processes():
    n, batch, k, seed = 50, 24, 4, 3
    one = step_rows(5, n, batch, k, seed)
    assert len(one) == batch and len(set(one)) == batch // k
    assert all(len(set(one[i:i + k])) == 1 for i in range(0, batch, k))  # consecutive groups
    shards = [step_rows(5, n, batch, k, seed, rank, 2) for rank in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(one)
    assert not set(shards[0]) & set(shards[1])  # a group never straddles processes
    # minibatches of batch/num_minibatches rows (validated divisible by k) hold whole groups
    minibatch = 8
    for start in range(0, batch, minibatch):
        chunk = one[start:start + minibatch]
        assert all(chunk.count(i) == k for i in set(chunk))
    # k = 1 is the paper's (and the earlier releases') batch
    assert step_rows(5, n, batch, 1, seed) == batch_indices(5, n, batch, seed)


def test_group_helpers():
    assert group_rows([7, 2], 3) == [7, 7, 7, 2, 2, 2]
    keep = torch.tensor([True, True, True, False, True, True])
    assert whole_groups(keep, 3).tolist() == [True, True, True, False, False, False]
    assert whole_groups(keep, 1).tolist() == keep.tolist()
