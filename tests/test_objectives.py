import math

import pytest
import torch

from rcfd.config import load_config
from rcfd.errors import RcfdError
from rcfd.train.objectives import beta_at, calibrated, kl_penalized, objective_values, rcfd, whiten
from rcfd.tasks import get_task


def test_whiten_hand_computed():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, population std sqrt(1.25)
    expected = (x - 2.5) / math.sqrt(1.25)
    assert torch.allclose(whiten(x), expected, atol=1e-6)


def test_whiten_constant_is_zero():
    assert torch.equal(whiten(torch.full((5,), 3.0)), torch.zeros(5))


def test_rcfd_single_reward():
    r = torch.tensor([[-1.0], [-2.0], [-3.5]])
    rd = torch.tensor([[-2.0], [-2.0], [-3.0]])
    assert torch.allclose(rcfd(r, rd), torch.tensor([-1.0, 0.0, -0.25]))


def test_rcfd_multi_reward_whitens_each_then_sums():
    r = torch.tensor([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]])
    rd = torch.tensor([[1.0, 20.0], [1.0, 20.0], [1.0, 20.0]])
    # calibrated: col0 = -[0, 1, 9], col1 = -[100, 0, 400]
    c0 = torch.tensor([0.0, -1.0, -9.0])
    c1 = torch.tensor([-100.0, 0.0, -400.0])
    z = lambda v: (v - v.mean()) / v.std(unbiased=False)  # noqa: E731
    expected = z(c0) + z(c1)
    assert torch.allclose(calibrated(r, rd), torch.stack([c0, c1], -1))
    assert torch.allclose(rcfd(r, rd), expected, atol=1e-5)
    # scale of one reward does not change its weight: multiplying reward 1 by 1000 leaves the sum
    r2, rd2 = r.clone(), rd.clone()
    r2[:, 1] *= 1000
    rd2[:, 1] *= 1000
    assert torch.allclose(rcfd(r2, rd2), expected, atol=1e-4)


def test_kl_penalty():
    r = torch.tensor([[1.0], [2.0]])
    logratio = torch.tensor([3.0, -1.0])
    assert torch.allclose(kl_penalized(r, logratio, 0.5), torch.tensor([-0.5, 2.5]))


def test_reward_objective_sums_rewards():
    r = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    assert torch.allclose(objective_values("reward", r), torch.tensor([3.0, 2.0]))


def test_beta_schedule():
    assert beta_at(0, 11, 0.1, 0.3) == pytest.approx(0.1)
    assert beta_at(5, 11, 0.1, 0.3) == pytest.approx(0.2)
    assert beta_at(10, 11, 0.1, 0.3) == pytest.approx(0.3)
    assert beta_at(7, 11, 0.2, None) == 0.2


def test_unknown_objective():
    with pytest.raises(RcfdError, match="unknown objective 'nope' in objective.name"):
        objective_values("nope", torch.zeros(2, 1))


def test_learning_rate_schedule_by_hand():
    from rcfd.train.schedule import lr_factor

    assert [lr_factor(s, 4, "linear") for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert [lr_factor(s, 4, "constant") for s in range(4)] == [1.0] * 4
    # two warm-up steps (1/3, 2/3), then the decay over the remaining four steps
    assert [lr_factor(s, 6, "linear", 2) for s in range(6)] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25])
    assert [lr_factor(s, 4, "constant", 1) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_weighted_objective_is_quality_plus_alpha_times_the_rest():
    r = torch.tensor([[1.0, -10.0], [2.0, -4.0]])
    assert torch.allclose(objective_values("weighted", r, alpha=0.1), torch.tensor([0.0, 1.6]))
    with pytest.raises(RcfdError, match="needs at least two rewards"):
        load_config(None, ["objective.name=weighted"])


def test_the_demos_quality_run_trains_on_quality_alone_and_is_scored_on_every_reward():
    from rcfd.plans.demo import RUNS

    config = load_config(get_task("wiki-description").config_path, RUNS["quality"].overrides)
    assert config.reward.names == ["similarity", "length"]  # evaluated on the plane of the α sweep
    r = torch.tensor([[0.9, -24.0], [0.4, -3.0]])
    assert torch.equal(objective_values(config.objective.name, r, alpha=config.objective.alpha), r[:, 0])


