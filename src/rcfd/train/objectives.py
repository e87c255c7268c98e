"""Objectives: what the policy maximizes, each a registered object that turns a scored batch into one
value per sequence and then into advantages.

* ``reward``: R summed over rewards (β = 0; plain reward maximization).
* ``kl``:     R − β · log π_θ(y|x)/π_0(y|x), the log-ratio summed over completion tokens
              (paper, "KL-regularized RL"); β fixed or linearly scheduled.
* ``rcfd``:   −(R(x,y) − R(x,y_d))² (paper, "Reward Calibration from Demonstration"). With K rewards
              each one is calibrated separately, whitened over the batch, and the K terms summed.
* ``rcfd-mean``: −(μ_x − R(x,y_d))² with μ_x = E_π[R(x,·)] — RCfD on each prompt's *mean* reward (an
              extension, not the paper's). The paper's per-sample loss has expectation
              −(μ_x − R_d)² − σ_x², so it also pays the policy to narrow its reward spread; this one does
              not. Needs k ≥ 2 completions per prompt; its value is already an advantage
              (:func:`rcfd_mean_advantages`).
* ``rcfd-batch``: −(E_x[μ_x] − E_x[R(x,y_d)])² — calibrates the mean reward over prompts instead of each
              prompt's (an extension), against the mean target of every training prompt. Its gradient
              factor is the mean gap of the batch's *other* prompts, whose noise shrinks with the number
              of prompts; per-prompt targets are then lost (:func:`rcfd_batch_advantages`).
* ``weighted``: R_1 + α·(R_2 + … + R_K), the paper's R_quality + α·R_length baseline (α swept).

``rcfd-mean`` and ``rcfd-batch`` can calibrate chosen reward columns per sample instead
(``objective.per_sample``: the paper's −(R − R_d)² under a leave-one-out baseline), for statistics whose
tail matters more than their mean, e.g. a text's repetition.

An objective declares what it needs (``needs_targets``: R(x, y_demo) of the training prompts, and the
``reward.calibrate_also`` columns; ``needs_groups``: k ≥ 2 completions per prompt), checks the config
for it (:meth:`Objective.check`), and keeps any state in ``state_dict``/``load_state_dict``, so the
trainer never names an objective. :data:`OBJECTIVES` is the only list of their names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import RcfdError
from ..registry import PAPER_OBJECTIVE, Registry
from .advantages import ESTIMATORS, groups, leave_one_out_mean, rloo, whiten

# ---------------------------------------------------------------------------------------------
# Formulas


def beta_at(step: int, total_steps: int, beta: float, beta_end: float | None) -> float:
    """Linear β schedule from ``beta`` at step 0 to ``beta_end`` at the last step."""
    if beta_end is None or total_steps <= 1:
        return beta
    frac = min(max(step / (total_steps - 1), 0.0), 1.0)
    return beta + frac * (beta_end - beta)


def calibrated(rewards: torch.Tensor, demo_rewards: torch.Tensor) -> torch.Tensor:
    """Per-reward calibration r_i = −(R_i(x,y) − R_i(x,y_d))², shape [B, K]."""
    return -(rewards - demo_rewards) ** 2


def combine_terms(terms: torch.Tensor, centre: bool = False) -> torch.Tensor:
    """[B, K] per-reward terms -> [B], the one place K reward terms are added up. One term is itself;
    each of K > 1 is divided by its batch std (and with ``centre`` first centred: the paper whitens its
    K calibrated terms), so every reward pulls with the same force whatever its scale."""
    if terms.shape[-1] == 1:
        return terms[:, 0]
    if centre:
        return whiten(terms, dim=0).sum(-1)
    return (terms / (terms.std(0, keepdim=True, unbiased=False) + 1e-8)).sum(-1)


def rcfd(rewards: torch.Tensor, demo_rewards: torch.Tensor) -> torch.Tensor:
    """R_CfD [B]: for one reward −(R − R_d)²; for K > 1 the whitened calibrated terms summed (the paper's)."""
    return combine_terms(calibrated(rewards, demo_rewards), centre=True)


def rcfd_in_demo_std(rewards: torch.Tensor, demo_rewards: torch.Tensor, demo_std: torch.Tensor) -> torch.Tensor:
    """[B] −Σ_k ((R_k − R_k,d) / σ_k)², σ [K] the demonstrations' reward std: K calibrated terms on one
    fixed scale, so a row's value does not depend on its batch (an extension for ``rcfd serve``: the
    paper's whitening over the batch is undefined for one row)."""
    return calibrated(rewards / demo_std, demo_rewards / demo_std).sum(-1)


def per_sample_columns(terms: torch.Tensor, rewards: torch.Tensor, demo_rewards: torch.Tensor, k: int,
                       per_sample: torch.Tensor | None) -> torch.Tensor:
    """[B, K] terms with the columns flagged in ``per_sample`` [K] (bool) replaced by the paper's per-sample
    term −(R − R_d)² under the leave-one-out baseline (``objective.per_sample``, an extension). A mean-
    matching term only sees the group's or batch's mean, so one degenerate text is free while others
    offset it; the per-sample term charges each text its own squared distance to the target."""
    if per_sample is None or not bool(per_sample.any()):
        return terms
    own = rloo(calibrated(rewards, demo_rewards), k)  # [B, K], each column's leave-one-out baseline
    return torch.where(per_sample.to(terms.device), own, terms)


def rcfd_mean_advantages(rewards: torch.Tensor, demo_rewards: torch.Tensor, k: int,
                         per_sample: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased advantage [B] for −(μ_x − R_d)² from k completions per prompt:

        A_i = −(R̄_{−i} − R_d)(R_i − R̄_{−i}),  R̄_{−i} = mean of the other k − 1 rewards of i's prompt.

    R_i is independent of R̄_{−i}, so E[A_i ∇log π(y_i)] = −(μ_x − R_d) ∇μ_x = ½ ∇(−(μ_x − R_d)²). With K
    rewards the K terms are summed by :func:`combine_terms`; columns flagged in ``per_sample`` use the
    per-sample term instead (:func:`per_sample_columns`)."""
    others = leave_one_out_mean(rewards, k)
    terms = -(others - demo_rewards) * (rewards - others)
    return combine_terms(per_sample_columns(terms, rewards, demo_rewards, k, per_sample))


def prompt_gaps(rewards: torch.Tensor, demo_rewards: torch.Tensor, k: int) -> torch.Tensor:
    """[B/k, K]: each prompt's mean reward over its k completions minus its demonstration's reward."""
    return groups(rewards, k).mean(1) - groups(demo_rewards, k)[:, 0]


def rcfd_batch_advantages(rewards: torch.Tensor, demo_rewards: torch.Tensor, k: int,
                          gap_sum: torch.Tensor | None = None, num_prompts: int | None = None,
                          per_sample: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased advantage [B] for −(E_x μ_x − E_x R_d)² (the batch's mean reward against the
    demonstrations' mean) from k completions per prompt:

        A_i = −ḡ_{−x}(R_i − R̄_{−i}),  ḡ_{−x} = mean of g_z = R̄_z − R_d(z) over the batch's prompts z ≠ x.

    ḡ_{−x} uses other prompts only, so it is independent of y_i and E[A_i ∇log π(y_i)] = −ḡ ∇μ_x. The
    factor's noise is one demonstration's spread over √(prompts − 1), not one demonstration's spread.
    ``gap_sum`` [K] and ``num_prompts`` are the sum of g_z and the prompt count over every process (this
    process's prompts when not given). With K rewards the terms are summed by :func:`combine_terms`,
    columns flagged in ``per_sample`` replaced as in :func:`per_sample_columns`."""
    gaps = prompt_gaps(rewards, demo_rewards, k)  # [P, K]
    total = gaps.sum(0) if gap_sum is None else gap_sum
    n = gaps.shape[0] if num_prompts is None else num_prompts
    if n < 2:
        raise ValueError("rcfd-batch needs at least 2 prompts per step (the gap comes from the other prompts)")
    others = ((total - gaps) / (n - 1)).repeat_interleave(k, 0)  # [B, K]: mean gap of the other prompts
    terms = -others * (rewards - leave_one_out_mean(rewards, k))
    return combine_terms(per_sample_columns(terms, rewards, demo_rewards, k, per_sample))


def by_prompt(prompts: list[str], rewards: torch.Tensor, demo_rewards: torch.Tensor) -> torch.Tensor:
    """:func:`rcfd_batch_advantages` for rows in any order (another trainer's batch): each prompt's rows are
    made consecutive, and the result is returned in the rows' order."""
    rows_of: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        rows_of.setdefault(prompt, []).append(i)
    sizes = {len(rows) for rows in rows_of.values()}
    if len(rows_of) < 2 or len(sizes) != 1 or min(sizes) < 2:
        raise RcfdError(f"objective {RCfDBatch.name!r} needs at least 2 prompts with the same number (>= 2) of "
                        f"completions each per call, got {len(rows_of)} prompt(s) with {sorted(sizes)} completions; "
                        f"raise num_generations / the per-device batch, or use objective {RCfD.name!r}")
    order = torch.tensor([i for rows in rows_of.values() for i in rows], device="cpu")
    advantages = rcfd_batch_advantages(rewards[order], demo_rewards[order], sizes.pop())
    return torch.empty_like(advantages).index_copy_(0, order, advantages)


def with_second_moments(rewards: torch.Tensor) -> torch.Tensor:
    """[B, K] -> [B, 2K]: (R, R²). RCfD on these calibrates each reward's mean and second moment, hence its
    spread (``objective.match_spread``, an extension): E[R²] − E[R]² is the variance."""
    return torch.cat([rewards, rewards ** 2], -1)


def kl_penalized(rewards: torch.Tensor, logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """R_β [B] = ΣR − β · Σ_t (log π_θ − log π_0)."""
    return rewards.sum(-1) - beta * logratio


def weighted(rewards: torch.Tensor, alpha: float) -> torch.Tensor:
    """R_α [B] = R_1 + α · Σ_{k≥2} R_k."""
    return rewards[:, 0] + alpha * rewards[:, 1:].sum(-1)


# ---------------------------------------------------------------------------------------------
# Objectives as objects


@dataclass
class ScoredBatch:
    """One step's rollouts after scoring: what an objective reads."""

    rows: list  # dataset rows of the prompts (k consecutive rows per prompt)
    prompts: list
    texts: list
    rollout: object  # rcfd.train.logprobs.Rollout
    old_logp: torch.Tensor  # [B, C] log π_old per completion token
    rewards: torch.Tensor  # [B, K] every reward column (reward.names, then reward.calibrate_also)
    logratio: torch.Tensor  # [B] Σ_t log π_θ/π_0, the sampled KL estimate per sequence
    targets: torch.Tensor | None = None  # [B, K] (or [B, 2K] with match_spread) R(x, y_demo) per row


class Objective:
    """Base class: maximize the batch's values under ``train.advantage``. Subclasses set ``name`` and
    ``description`` and override :meth:`values` (and :meth:`check` for their own config errors)."""

    name = ""
    description = ""
    needs_targets = False  # calibrates to R(x, y_demo): training targets, reward.calibrate_also columns
    needs_groups = False  # a leave-one-out estimate over k >= 2 completions per prompt: train.advantage=rloo
    gives_advantage = False  # its values are already advantages

    def __init__(self, config, targets: torch.Tensor | None = None):
        self.config = config
        self.num_rewards = len(config.reward.names)

    @classmethod
    def check(cls, config) -> None:
        """Raise a field-named RcfdError for settings this objective cannot run with."""
        k = config.train.num_generations
        if cls.needs_groups:
            if k < 2:
                raise RcfdError(f"objective.name={cls.name} needs train.num_generations >= 2 (its estimate uses "
                                "each prompt's other completions)")
            if config.train.advantage != "rloo":
                raise RcfdError(f"objective.name={cls.name} is a leave-one-out estimate; set train.advantage=rloo")

    @classmethod
    def matches_spread(cls, config) -> bool:
        """Whether targets and rewards carry second moments too (``objective.match_spread``)."""
        return False

    @classmethod
    def check_demonstrations(cls, train_ds) -> None:
        """Raise where the training prompts' demonstrations cannot give this objective its targets."""

    def columns(self, batch: ScoredBatch) -> torch.Tensor:
        """The reward columns this objective reads: reward.names only, unless it calibrates."""
        return batch.rewards[:, :self.num_rewards]

    def values(self, batch: ScoredBatch, step: int, procs) -> torch.Tensor:
        raise NotImplementedError

    def advantages(self, values: torch.Tensor, procs) -> torch.Tensor:
        """``train.advantage`` over the batch; the whitened baseline spans every process."""
        if self.gives_advantage:
            return values
        estimator = self.config.train.advantage
        if estimator == "whiten" and procs.world > 1:
            mean, std = procs.moments(values)
            return (values - mean) / (std + 1e-8)
        return ESTIMATORS[estimator](values, self.config.train.num_generations)

    def beta(self, step: int) -> float:
        """The KL coefficient at ``step`` (logged as train/beta; 0 without a KL term)."""
        return 0.0

    @classmethod
    def calibrated_reward(cls, prompts, rewards: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """[B] reward for another trainer (TRL, verl, OpenRLHF) from R [B, K] and targets [B, K]."""
        raise NotImplementedError

    @classmethod
    def gives_calibrated_reward(cls) -> bool:
        """Whether :meth:`calibrated_reward` serves other trainers."""
        return cls.calibrated_reward.__func__ is not Objective.calibrated_reward.__func__

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Reward(Objective):
    name = "reward"
    description = "R summed over rewards (β = 0: plain reward maximization)"

    def values(self, batch, step, procs):
        return self.columns(batch).sum(-1)


class KL(Objective):
    name = "kl"
    description = "R − β·Σ_t log π_θ/π_0 (`objective.beta`, `objective.beta_end`)"

    def beta(self, step):
        o = self.config.objective
        return beta_at(step, self.config.train.steps, o.beta, o.beta_end)

    def values(self, batch, step, procs):
        return kl_penalized(self.columns(batch), batch.logratio, self.beta(step))


class Weighted(Objective):
    name = "weighted"
    description = "R_1 + α·(R_2 + … + R_K), the paper's R_quality + α·R_length baseline (`objective.alpha`)"

    @classmethod
    def check(cls, config):
        super().check(config)
        if len(config.reward.names) < 2:
            raise RcfdError(f"objective.name={cls.name} needs at least two rewards in reward.names, e.g. "
                            "[loglik, length]")

    def values(self, batch, step, procs):
        return weighted(self.columns(batch), self.config.objective.alpha)


class RCfD(Objective):
    name = PAPER_OBJECTIVE
    description = ("the paper's RCfD, −(R(x,y) − R(x,y_demo))² per sample; several rewards: each term "
                   "whitened, summed")
    needs_targets = True

    def columns(self, batch):
        return batch.rewards

    def values(self, batch, step, procs):
        return rcfd(self.columns(batch), batch.targets)

    @classmethod
    def calibrated_reward(cls, prompts, rewards, targets):
        return rcfd(rewards, targets)


class _MeanMatching(Objective):
    """rcfd-mean and rcfd-batch: leave-one-out estimates, with per-sample columns and second moments."""

    needs_targets = True
    needs_groups = True
    gives_advantage = True

    def __init__(self, config, targets=None):
        super().__init__(config, targets)
        names = list(config.reward.names) + list(config.reward.calibrate_also)
        flags = torch.tensor([name in config.objective.per_sample for name in names], device="cpu")
        self.per_sample = torch.cat([flags, flags]) if self.matches_spread(config) else flags

    @classmethod
    def check(cls, config):
        super().check(config)
        if config.objective.match_spread and config.objective.target != "demo":
            raise RcfdError("objective.match_spread needs the demonstrations' own rewards; set objective.target=demo")

    @classmethod
    def matches_spread(cls, config):
        return config.objective.match_spread

    def columns(self, batch):
        return with_second_moments(batch.rewards) if self.matches_spread(self.config) else batch.rewards


class RCfDMean(_MeanMatching):
    name = "rcfd-mean"
    description = ("extension: −(E_π R(x,·) − R(x,y_demo))² per prompt, leave-one-out estimate "
                   "(needs train.num_generations ≥ 2, train.advantage=rloo)")

    @classmethod
    def check_demonstrations(cls, train_ds):
        counts = [len(d) for d in train_ds["demonstrations"]]
        if min(counts) < 2:
            raise RcfdError(f"objective.match_spread with objective.name={cls.name} matches each prompt's reward "
                            f"spread to its demonstrations', but training row {counts.index(min(counts))} has "
                            f"{min(counts)}; use data.group_demonstrations=true with data.min_demonstrations=2, or "
                            f"{RCfDBatch.name}")

    def values(self, batch, step, procs):
        return rcfd_mean_advantages(self.columns(batch), batch.targets, self.config.train.num_generations,
                                    self.per_sample)


class RCfDBatch(_MeanMatching):
    name = "rcfd-batch"
    description = ("extension: −(mean over prompts of E_π R − mean of R(x,y_demo))², the batch's mean reward "
                   "calibrated against every training target's mean (needs train.num_generations ≥ 2, "
                   "train.advantage=rloo)")

    def __init__(self, config, targets=None):
        super().__init__(config, targets)
        # Every prompt is compared with the mean over all training targets, computed once: a demonstration's
        # reward barely predicts the policy's on the same prompt, so pairing them only adds noise.
        self.target_mean = targets.nanmean(0) if targets is not None else None

    def values(self, batch, step, procs):
        k = self.config.train.num_generations
        rewards = self.columns(batch)
        targets = self.target_mean.expand(len(rewards), -1)
        gaps = prompt_gaps(rewards, targets, k)  # the mean gap is the whole batch's, over every process
        totals = procs.sum(torch.cat([gaps.sum(0), torch.tensor([float(len(gaps))], device="cpu")])).double()
        return rcfd_batch_advantages(rewards, targets, k, totals[:-1].to(rewards.dtype), float(totals[-1]),
                                     self.per_sample)

    @classmethod
    def calibrated_reward(cls, prompts, rewards, targets):
        return by_prompt(prompts, rewards, targets)


CLASSES = {cls.name: cls for cls in (Reward, KL, RCfD, RCfDMean, RCfDBatch, Weighted)}
OBJECTIVES = Registry("objective", "objective.name", {name: cls.description for name, cls in CLASSES.items()})
PAPER = RCfD.name  # the paper's objective: RCfDReward's and `rcfd sweep --with-rcfd`'s default


def objective_class(name: str) -> type[Objective]:
    OBJECTIVES.check(name)
    return CLASSES[name]


def build_objective(config, targets: torch.Tensor | None = None) -> Objective:
    """The configured objective, with the training targets [N, K] if it calibrates to them."""
    return objective_class(config.objective.name)(config, targets)


def objective_values(name: str, rewards, *, demo_rewards=None, logratio=None, beta: float = 0.0,
                     alpha: float = 1.0, k: int = 1, per_sample=None) -> torch.Tensor:
    """One value per sequence [B] of objective ``name`` for rewards [B, K] outside a run (for ``rcfd-mean``
    and ``rcfd-batch``: its advantage, rcfd-batch against the rows' own targets)."""
    cls = objective_class(name)
    if cls is KL:
        return kl_penalized(rewards, logratio, beta)
    if cls is Weighted:
        return weighted(rewards, alpha)
    if cls is RCfDMean:
        return rcfd_mean_advantages(rewards, demo_rewards, k, per_sample)
    if cls is RCfDBatch:
        return rcfd_batch_advantages(rewards, demo_rewards, k, per_sample=per_sample)
    return rcfd(rewards, demo_rewards) if cls is RCfD else rewards.sum(-1)
