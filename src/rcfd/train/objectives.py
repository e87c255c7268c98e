"""Objectives turn rewards R [B, K] into one scalar per sequence that the policy maximizes.

* ``reward``: R summed over rewards (β = 0; plain reward maximization).
* ``kl``:     R − β · log π_θ(y|x)/π_0(y|x), the log-ratio summed over completion tokens
              (paper, "KL-regularized RL"); β fixed or linearly scheduled.
* ``rcfd``:   −(R(x,y) − R(x,y_d))² (paper, "Reward Calibration from Demonstration"). With K rewards
              each one is calibrated separately, whitened over the batch, and the K terms summed.
* ``rcfd-mean``: −(μ_x − R(x,y_d))² with μ_x = E_π[R(x,·)] — RCfD on each prompt's *mean* reward (an
              extension, not the paper's). The paper's per-sample loss has expectation
              −(μ_x − R_d)² − σ_x², so it also pays the policy to narrow its reward spread; this one does
              not. Needs k ≥ 2 completions per prompt; its advantage is :func:`rcfd_mean_advantages`.
* ``rcfd-batch``: −(E_x[μ_x] − E_x[R(x,y_d)])² — calibrates the mean reward over prompts instead of each
              prompt's (an extension). Its gradient factor is the mean gap of the batch's *other* prompts,
              whose noise shrinks with the number of prompts, where rcfd-mean's is one demonstration's
              own spread; per-prompt targets are then lost. :func:`rcfd_batch_advantages`. The trainer
              passes the mean of all training targets as every row's R_d (``objective.demo_mean=all``).
* ``weighted``: R_1 + α·(R_2 + … + R_K), the paper's R_quality + α·R_length baseline (α swept).

``rcfd-mean`` and ``rcfd-batch`` can calibrate chosen reward columns per sample instead
(``objective.per_sample``: the paper's −(R − R_d)² under a leave-one-out baseline), for statistics whose
tail matters more than their mean, e.g. a text's repetition.

Advantage estimators (``train.advantage``) turn objective values [B] into advantages [B]. Rows come
in groups of k consecutive completions of one prompt (``train.num_generations``):

* :func:`whiten` — the paper's batch baseline (obj − batch mean) / batch std;
* :func:`rloo` — leave-one-out group baseline obj_i − mean_{j≠i} obj_j, optionally scaled
  (:func:`scale_advantages`: ``none``, ``batch`` std, or the ``first`` step's std, then frozen);
* :func:`group_normalized` — GRPO's (obj − group mean) / group std.
"""

from __future__ import annotations

import torch


def whiten(x: torch.Tensor, dim: int = 0, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over ``dim`` (population std; a constant column becomes 0)."""
    mean = x.mean(dim, keepdim=True)
    std = x.std(dim, keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


def groups(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B, ...] -> [B/k, k, ...]: rows i·k … i·k + k − 1 are the k completions of one prompt."""
    if k < 1 or x.shape[0] % k:
        raise ValueError(f"{x.shape[0]} rows do not split into groups of {k}")
    return x.reshape(x.shape[0] // k, k, *x.shape[1:])


def leave_one_out_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B] or [B, K] (each column apart): for each row, the mean of the other k − 1 rows of its group,
    (Σ_group − x_i)/(k − 1)."""
    if k < 2:
        raise ValueError("a leave-one-out mean needs k >= 2 completions per prompt")
    g = groups(x, k)
    return ((g.sum(1, keepdim=True) - g) / (k - 1)).reshape(x.shape)


def rloo(objective: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): A_i = obj_i − mean_{j≠i} obj_j over i's group.

    An unbiased policy-gradient estimate with a baseline from the same prompt's other completions, so
    prompt-to-prompt differences (e.g. in R(x, y_demo)) do not reach the advantage. Equals
    k/(k−1)·(obj_i − group mean)."""
    return objective - leave_one_out_mean(objective, k)


def group_normalized(objective: torch.Tensor, k: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantage: (obj_i − group mean)/(group std + eps), population std over the k completions
    (TRL ``scale_rewards="group"``; a group of equal values gives 0)."""
    if k < 2:
        raise ValueError("a group-normalized advantage needs k >= 2 completions per prompt")
    g = groups(objective, k)
    centred = g - g.mean(1, keepdim=True)
    return (centred / (g.std(1, keepdim=True, unbiased=False) + eps)).reshape(objective.shape)


def best_of_group(objective: torch.Tensor, k: int) -> torch.Tensor:
    """Best-of-k selection as an advantage: A_i = 1 for the completion with the highest objective among
    its prompt's k (the first on a tie), 0 for the others. Under the PPO-clip loss this is supervised
    fine-tuning on the selected completions, with each token's ratio clipped at 1 + ε (reward-ranked
    fine-tuning, RAFT: Dong et al. 2023). No completion is pushed down, so the policy only moves towards
    texts it already writes that score best — for RCfD, the ones closest to their demonstration's reward."""
    g = groups(objective, k)
    best = torch.zeros_like(g)
    best.scatter_(1, g.argmax(1, keepdim=True), 1.0)
    return best.reshape(objective.shape)


def batch_std(x: torch.Tensor) -> float:
    return float(x.std(unbiased=False))


def scale_advantages(advantages: torch.Tensor, scale: str, first_std: float | None = None,
                     eps: float = 1e-8, std_fn=batch_std) -> tuple[torch.Tensor, float | None]:
    """Divide by a standard deviation: ``none`` (leave as is), ``batch`` (this batch's std of A) or
    ``first`` (the std of A on the run's first step, then frozen, so updates shrink as the objective's
    spread does). Returns (scaled A, the frozen std to keep for later steps). ``std_fn`` computes the
    batch std (across processes in the trainer)."""
    if scale not in SCALES:
        raise ValueError(f"unknown advantage scale {scale!r}")
    if SCALES[scale] is None:
        return advantages, first_std
    divisor, first_std = SCALES[scale](std_fn(advantages), first_std)
    return advantages / (divisor + eps), first_std


# Keyed by rcfd.registry.ADVANTAGE_SCALES: (this batch's std, the frozen first std) -> (divisor, frozen std).
SCALES = {
    "none": None,  # A as it is
    "batch": lambda std, first: (std, first),
    "first": lambda std, first: (std, std) if first is None else (first, first),
}


def advantages_from(objective: torch.Tensor, estimator: str, k: int = 1, scale: str = "none",
                    first_std: float | None = None, std_fn=batch_std) -> tuple[torch.Tensor, float | None]:
    """Advantages [B] of ``train.advantage`` = ``whiten`` | ``rloo`` | ``group`` | ``best-of-k`` | ``given`` (the objective
    is already an advantage, as :func:`rcfd_mean_advantages` is), with ``rloo``/``given`` scaled by
    ``scale``. Returns (A, the frozen first-step std for ``scale='first'``)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}")
    advantages = ESTIMATORS[estimator](objective, k)
    if estimator in ("rloo", "given"):
        return scale_advantages(advantages, scale, first_std, std_fn=std_fn)
    return advantages, first_std


# Keyed by rcfd.registry.ADVANTAGES (plus "given": the objective is already an advantage).
ESTIMATORS = {
    "whiten": lambda obj, k: whiten(obj),
    "rloo": rloo,
    "group": group_normalized,
    "best-of-k": best_of_group,
    "given": lambda obj, k: obj,
}


def beta_at(step: int, total_steps: int, beta: float, beta_end: float | None) -> float:
    """Linear β schedule from ``beta`` at step 0 to ``beta_end`` at the last step."""
    if beta_end is None or total_steps <= 1:
        return beta
    frac = min(max(step / (total_steps - 1), 0.0), 1.0)
    return beta + frac * (beta_end - beta)


def calibrated(rewards: torch.Tensor, demo_rewards: torch.Tensor) -> torch.Tensor:
    """Per-reward calibration r_i = −(R_i(x,y) − R_i(x,y_d))², shape [B, K]."""
    return -(rewards - demo_rewards) ** 2


def rcfd(rewards: torch.Tensor, demo_rewards: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """R_CfD [B]: for one reward −(R − R_d)²; for K > 1 the whitened calibrated terms are summed (the
    paper's). With ``scale`` [K] (``objective.reward_scale=demo``, an extension) the terms are divided by a
    fixed unit instead, −Σ_i (R_i − R_d,i)² / scale_i: a reward far from its target then costs more than
    one near it, where whitening gives every term the same spread in the batch whatever its gap."""
    terms = calibrated(rewards, demo_rewards)
    if scale is not None:
        return combine_columns(terms, scale)
    if terms.shape[-1] == 1:
        return terms[:, 0]
    return whiten(terms, dim=0).sum(-1)


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


def combine_columns(terms: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """[B, K] per-reward advantage terms -> [B], summed over rewards. By default (``objective.reward_scale``
    'batch') each of K > 1 terms is divided by its batch std, as the paper whitens its K calibrated
    terms: every reward then pulls with the same force whatever its gap, so steps stay full-size at the
    target. ``scale`` [K] ('demo': the squared spread of the training targets of each reward) divides by a
    fixed unit instead, so a term shrinks as its gap closes and rewards far from their target pull harder
    (an extension)."""
    if scale is not None:
        return (terms / scale).sum(-1)
    if terms.shape[-1] == 1:
        return terms[:, 0]
    return (terms / (terms.std(0, keepdim=True, unbiased=False) + 1e-8)).sum(-1)


def rcfd_mean_advantages(rewards: torch.Tensor, demo_rewards: torch.Tensor, k: int,
                         scale: torch.Tensor | None = None, per_sample: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased advantage [B] for −(μ_x − R_d)² from k completions per prompt:

        A_i = −(R̄_{−i} − R_d)(R_i − R̄_{−i}),  R̄_{−i} = mean of the other k − 1 rewards of i's prompt.

    R_i is independent of R̄_{−i}, so E[A_i ∇log π(y_i)] = −(μ_x − R_d) ∇μ_x = ½ ∇(−(μ_x − R_d)²). With K
    rewards the K terms are summed, each divided by its batch std or by ``scale`` (:func:`combine_columns`);
    columns flagged in ``per_sample`` use the per-sample term instead (:func:`per_sample_columns`)."""
    others = leave_one_out_mean(rewards, k)
    terms = -(others - demo_rewards) * (rewards - others)
    return combine_columns(per_sample_columns(terms, rewards, demo_rewards, k, per_sample), scale)


def prompt_gaps(rewards: torch.Tensor, demo_rewards: torch.Tensor, k: int) -> torch.Tensor:
    """[B/k, K]: each prompt's mean reward over its k completions minus its demonstration's reward."""
    return groups(rewards, k).mean(1) - groups(demo_rewards, k)[:, 0]


def rcfd_batch_advantages(rewards: torch.Tensor, demo_rewards: torch.Tensor, k: int,
                          gap_sum: torch.Tensor | None = None, num_prompts: int | None = None,
                          scale: torch.Tensor | None = None, per_sample: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased advantage [B] for −(E_x μ_x − E_x R_d)² (the batch's mean reward against the
    demonstrations' mean) from k completions per prompt:

        A_i = −ḡ_{−x}(R_i − R̄_{−i}),  ḡ_{−x} = mean of g_z = R̄_z − R_d(z) over the batch's prompts z ≠ x.

    ḡ_{−x} uses other prompts only, so it is independent of y_i and E[A_i ∇log π(y_i)] = −ḡ ∇μ_x. The
    factor's noise is one demonstration's spread over √(prompts − 1), not one demonstration's spread.
    ``gap_sum`` [K] and ``num_prompts`` are the sum of g_z and the prompt count over every process (this
    process's prompts when not given). With K rewards the terms are summed as in :func:`combine_columns`,
    columns flagged in ``per_sample`` replaced as in :func:`per_sample_columns`."""
    gaps = prompt_gaps(rewards, demo_rewards, k)  # [P, K]
    total = gaps.sum(0) if gap_sum is None else gap_sum
    n = gaps.shape[0] if num_prompts is None else num_prompts
    if n < 2:
        raise ValueError("rcfd-batch needs at least 2 prompts per step (the gap comes from the other prompts)")
    others = ((total - gaps) / (n - 1)).repeat_interleave(k, 0)  # [B, K]: mean gap of the other prompts
    loo = leave_one_out_mean(rewards, k)
    terms = -others * (rewards - loo)
    return combine_columns(per_sample_columns(terms, rewards, demo_rewards, k, per_sample), scale)


def pool_gaps(totals: torch.Tensor, past: torch.Tensor | None, memory: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """rcfd-batch's gap totals pooled with past steps' (``objective.gap_memory``, an extension).

    ``totals`` = [Σ_z g_z (K values), number of prompts] of this step; ``past`` the same, decayed, of the
    steps before. Returns (this step's pooled totals, the pool to carry to the next step): the prompts of
    the step j steps back count (1 − 1/memory)^j, so ḡ_{−x} averages about ``memory`` steps of prompts,
    all of them other than x and so still independent of y_i. ``memory`` 0: this step alone."""
    pooled = totals if past is None else totals + past
    carried = (1 - 1 / memory) * pooled if memory else None
    return pooled, carried


def with_second_moments(rewards: torch.Tensor) -> torch.Tensor:
    """[B, K] -> [B, 2K]: (R, R²). RCfD on these calibrates each reward's mean and second moment, hence its
    spread (``objective.match_spread``, an extension): E[R²] − E[R]² is the variance."""
    return torch.cat([rewards, rewards ** 2], -1)


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                  eps: float, max_tokens: int | None = None) -> torch.Tensor:
    """PPO-clip loss per sequence [B]: −mean_t min(ρ_t A, clip(ρ_t, 1−ε, 1+ε) A) over the completion's
    tokens (``mask``), with ρ_t = exp(log π_θ(y_t) − log π_old(y_t)) and one advantage A per sequence.

    With ``max_tokens`` (train.loss_type 'dr_grpo') the sum over the tokens is divided by that constant
    instead of by the completion's own length, so that no token's weight depends on its length."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv)
    mask = mask.to(surrogate.dtype)
    length = mask.sum(-1).clamp(min=1) if max_tokens is None else max_tokens
    return -(surrogate * mask).sum(-1) / length


def objective_in_batch_units(name: str, rewards: torch.Tensor, demo_rewards: torch.Tensor | None,
                             batch_rewards: torch.Tensor, batch_demo: torch.Tensor | None, alpha: float = 0.0,
                             scale: torch.Tensor | None = None) -> torch.Tensor:
    """The objective [N] of extra rows (counterfactual completions, train.stop_credit 'branch') on the scale
    of a batch [B, K] whose objective was computed by :func:`objective_values`: the paper's whitened sum of
    calibrated terms uses the batch's per-column mean and std, so an extra row does not move them. Only the
    per-sample objectives ('reward', 'weighted', 'rcfd') have such a value."""
    if name == "reward":
        return rewards.sum(-1)
    if name == "weighted":
        return weighted(rewards, alpha)
    if name != "rcfd":
        raise ValueError(f"objective {name!r} has no per-sample value outside its batch")
    terms = calibrated(rewards, demo_rewards)
    if scale is not None:
        return combine_columns(terms, scale)
    if terms.shape[-1] == 1:
        return terms[:, 0]
    batch = calibrated(batch_rewards, batch_demo)
    return ((terms - batch.mean(0)) / (batch.std(0, unbiased=False) + 1e-8)).sum(-1)


def stop_branch_advantages(stop_value: torch.Tensor, final_value: torch.Tensor, old_stop_prob: torch.Tensor,
                           unit: float) -> torch.Tensor:
    """Advantage of stopping at a position where the completion went on (train.stop_credit 'branch'):
    (O(stop here) − O(the sampled completion)) / unit / (1 − p_stop), elementwise over [N] positions.

    At a position the policy reached, the expected objective is p·Q_stop + (1 − p)·Q_continue, whose gradient
    is ∇p·(Q_stop − Q_continue). Q_stop is known exactly (the prefix scored as a finished completion) and the
    sampled continuation is an unbiased sample of Q_continue; the division by 1 − p_old reweights the
    positions where the policy did go on to all positions it reached. ``unit`` is the std that turned the
    objective into the sequence's advantage, so both are on one scale."""
    return (stop_value - final_value) / unit / (1 - old_stop_prob).clamp(min=1e-6)


def stop_branch_loss(logp: torch.Tensor, old_logp: torch.Tensor, log_stop: torch.Tensor,
                     old_log_stop: torch.Tensor, is_stop: torch.Tensor, advantages: torch.Tensor,
                     branch: torch.Tensor, mask: torch.Tensor, eps: float,
                     max_tokens: int | None = None) -> torch.Tensor:
    """PPO-clip loss per sequence [B] with each token's choice split in two (train.stop_credit 'branch'):
    whether to stop, and which token if not. log π(y_t) = log(1 − p_t) + log π_c(y_t), with p_t the
    probability of the stop tokens and π_c the policy over the other tokens.

    - The content choice at positions where the completion went on (``is_stop`` false) takes the
      sequence's advantage A [B] (or a per-token one [B, C]), as :func:`ppo_clip_loss` does, on the ratio of π_c.
    - The stop decision at those positions takes its own advantage ``branch`` [B, C] (from
      :func:`stop_branch_advantages`) on the probability itself, −p_old·min(ρ B, clip(ρ) B) with
      ρ = p_t/p_old, whose gradient at ρ = 1 is −B·∇p_t.
    - The sampled stop token gets no term: its alternative, going on, has no sample to score.

    Terms add up per sequence over its tokens and are divided as ``ppo_clip_loss`` divides them."""
    mask = mask.to(logp.dtype)
    go_on = mask * (~is_stop).to(logp.dtype)
    content = logp - torch.log1p(-log_stop.exp().clamp(max=1 - 1e-6))
    old_content = old_logp - torch.log1p(-old_log_stop.exp().clamp(max=1 - 1e-6))
    ratio = torch.exp(content - old_content)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    content_term = torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv)
    stop_ratio = torch.exp(log_stop - old_log_stop)
    stop_term = old_log_stop.exp() * torch.min(stop_ratio * branch, torch.clamp(stop_ratio, 1 - eps, 1 + eps) * branch)
    length = mask.sum(-1).clamp(min=1) if max_tokens is None else max_tokens
    return -((content_term + stop_term) * go_on).sum(-1) / length


def sampled_kl(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(π_old ‖ π_θ) per sequence [B] from completions sampled by π_old: Σ_t (ρ_t − 1) − log ρ_t over the
    completion's tokens, ρ_t = π_θ(y_t)/π_old(y_t) (Schulman's k3 estimator: unbiased per token, and never
    negative, so a small batch cannot report a negative divergence)."""
    log_ratio = logp - old_logp
    per_token = torch.expm1(log_ratio) - log_ratio
    return (per_token * mask.to(per_token.dtype)).sum(-1)


def kl_penalized(rewards: torch.Tensor, logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """R_β [B] = ΣR − β · Σ_t (log π_θ − log π_0)."""
    return rewards.sum(-1) - beta * logratio


def weighted(rewards: torch.Tensor, alpha: float) -> torch.Tensor:
    """R_α [B] = R_1 + α · Σ_{k≥2} R_k."""
    return rewards[:, 0] + alpha * rewards[:, 1:].sum(-1)


# Keyed by rcfd.registry.OBJECTIVES: (R, keyword arguments of objective_values) -> [B].
OBJECTIVE_FUNCTIONS = {
    "reward": lambda R, **kw: R.sum(-1),
    "kl": lambda R, logratio, beta, **kw: kl_penalized(R, logratio, beta),
    "rcfd": lambda R, demo_rewards, scale, **kw: rcfd(R, demo_rewards, scale),
    "rcfd-mean": lambda R, demo_rewards, k, scale, per_sample, **kw:
        rcfd_mean_advantages(R, demo_rewards, k, scale, per_sample),
    "rcfd-batch": lambda R, demo_rewards, k, gap_sum, num_prompts, scale, per_sample, **kw:
        rcfd_batch_advantages(R, demo_rewards, k, gap_sum, num_prompts, scale, per_sample),
    "weighted": lambda R, alpha, **kw: weighted(R, alpha),
}
ADVANTAGE_OBJECTIVES = ("rcfd-mean", "rcfd-batch")  # their value is already an advantage (estimator "given")


def objective_values(name: str, rewards, *, demo_rewards=None, logratio=None, beta: float = 0.0,
                     alpha: float = 1.0, k: int = 1, gap_sum=None, num_prompts=None, scale=None, per_sample=None):
    """One value per sequence [B] that the policy maximizes (for ``rcfd-mean``/``rcfd-batch``: its
    advantage; ``gap_sum``/``num_prompts`` are rcfd-batch's batch-wide totals, ``scale`` their per-reward
    unit, :func:`combine_columns`, ``per_sample`` [K] the columns calibrated per sample,
    :func:`per_sample_columns`)."""
    if name not in OBJECTIVE_FUNCTIONS:
        raise ValueError(f"unknown objective {name!r}")
    return OBJECTIVE_FUNCTIONS[name](rewards, demo_rewards=demo_rewards, logratio=logratio, beta=beta, alpha=alpha,
                                     k=k, gap_sum=gap_sum, num_prompts=num_prompts, scale=scale,
                                     per_sample=per_sample)
