"""The RL loop: rollout → reward → objective → advantage → PPO-clip update.

One step, top to bottom (:meth:`Trainer.step`):
  1. sample k = train.num_generations completions per prompt from π_θ (temperature 1), keeping their
     token log-probs (rows i·k … i·k + k − 1 belong to one prompt);
  2. score with the reference (log π_0 per token) and the rewards R [B, K];
  3. objective: R (β = 0), R − β·Σ log π_θ/π_0, RCfD −(R − R_demo)², …  (:mod:`rcfd.train.objectives`);
  4. advantage: the paper's whitened batch baseline (obj − mean_batch)/std_batch, or a group estimator
     (leave-one-out, GRPO's) chosen by train.advantage;
  5. loss = −mean_seq mean_t min(ρ_t A, clip(ρ_t, 1−ε, 1+ε) A), ρ_t = π_θ(y_t)/π_old(y_t) (PPO;
     :func:`rcfd.train.objectives.ppo_clip_loss`), minibatches of whole groups;
  6. with train.max_step_kl, a trust region: the update is halved until KL(π_old ‖ π_θ) on the step's
     completions is within the bound (:meth:`Trainer.limit_step`).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from ..eval import metric_names as N
from ..eval import metrics as M
from ..config import Config, reward_columns
from .components import DEMO_OBJECTIVES, Components, build_components
from ..data import validation_dataset
from .distributed import Processes
from ..errors import NonFiniteError, RcfdError
from ..eval.evaluate import evaluate, evaluate_components
from ..files import append_jsonl, save_torch
from .logprobs import decode_completions, reference_logprobs, token_and_stop_logprobs, token_logprobs
from ..models import describe
from .objectives import (ADVANTAGE_OBJECTIVES, advantages_from, beta_at, objective_in_batch_units, objective_values,
                         pool_gaps, ppo_clip_loss, prompt_gaps, sampled_kl, stop_branch_advantages, stop_branch_loss,
                         with_second_moments)
from ..rewards.base import check_finite
from ..rewards.demo_cache import demo_rewards
from .rundir import DEMO_REWARDS, METRICS, SAMPLES, RunDir
from .targets import spread_matched, target_variance
from .best_step import AVERAGE_FILE, BEST_FILE, BestWeights, WeightAverage
from .rollout import eos_token_ids, generate, group_rows, stop_prefixes


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Indices of the prompts for ``step``: epochs of seeded permutations (a pure function of step)."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(batch_size - len(out), n - offset)
        out.extend(perm[offset:offset + take].tolist())
    return out


def lr_factor(step: int, steps: int, scheduler: str, warmup_steps: int = 0) -> float:
    """Learning-rate multiplier at RL step ``step`` (0-based): a linear warm-up over the first
    ``warmup_steps`` steps ((step + 1)/(warmup_steps + 1), so no step is wasted at 0), then constant or
    a linear decay to 0 at ``steps`` (transformers' linear schedule, counted in RL steps)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if scheduler == "constant":
        return 1.0
    return max(0.0, 1.0 - (step - warmup_steps) / max(1, steps - warmup_steps))


def step_rows(step: int, n: int, batch_size: int, k: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Dataset rows of process ``rank``'s rollouts at ``step``: the step's batch_size/k prompts are drawn
    and dealt out to processes first, then each is repeated k times, so a group never straddles two
    processes (or, since minibatches hold whole groups, two optimizer steps)."""
    chosen = batch_indices(step, n, batch_size // k, seed)
    return group_rows(chosen[rank::world], k)


def whole_groups(keep: torch.Tensor, k: int) -> torch.Tensor:
    """Row mask that keeps a group only if all k of its rows are kept (group estimators need them all)."""
    return keep.reshape(-1, k).all(1).repeat_interleave(k) if k > 1 else keep


def build_optimizer(params, train) -> torch.optim.Optimizer:
    """``train.optimizer``: Adam/AdamW (fused: one kernel over all parameters instead of a per-tensor
    loop, 0.14 s per full fine-tuning step in the profile) or plain SGD."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.learning_rate, momentum=train.momentum,
                               weight_decay=train.weight_decay)
    opt_cls = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(params, lr=train.learning_rate, eps=train.adam_epsilon, weight_decay=train.weight_decay, fused=True)


class StopAtStepBoundary:
    """First Ctrl-C asks the loop to stop after the current step (then it checkpoints and exits);
    a second one interrupts at once."""

    def __enter__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort now)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class Trainer:
    """Trains one policy with one objective; see the module docstring for the step."""

    def __init__(self, config: Config, out_dir, *, resume: bool = False, progress: bool = True,
                 components: Components | None = None):
        """``components`` (policy, data, rewards, ...) default to :func:`rcfd.train.components.build_components`
        of ``config``; pass them to train something built elsewhere."""
        self.config = config
        c = config
        self.procs = Processes()
        prompts_per_step = c.train.batch_size // c.train.num_generations
        if prompts_per_step % self.procs.world:
            raise RcfdError(f"the {prompts_per_step} prompts of a step (train.batch_size {c.train.batch_size} / "
                            f"train.num_generations {c.train.num_generations}) must be divisible by the number of "
                            f"processes ({self.procs.world}); change one of them")
        local_minibatch = c.train.batch_size // self.procs.world // c.train.num_minibatches
        if c.train.num_generations > 1 and local_minibatch % c.train.num_generations:
            raise RcfdError(f"with {self.procs.world} processes a minibatch holds {local_minibatch} rollouts per process, "
                            f"which splits groups of train.num_generations ({c.train.num_generations}); lower "
                            f"train.num_minibatches or raise train.batch_size")
        self.progress = progress and self.procs.is_main
        self.run = RunDir(out_dir).prepare(resume)
        self.out = self.run.path
        self.resume = resume
        if self.procs.is_main:  # first, so a run killed while loading can still be resumed
            self.run.write_config(c)
        # Checksums are verified once; _resume() loads the same checkpoint.
        saved = self._resume_from = self.run.latest_checkpoint() if resume else None
        if components is None:
            components = build_components(c, rank=self.procs.rank, world=self.procs.world, progress=self.progress,
                                          demo_rewards_from=saved / DEMO_REWARDS if saved is not None else None)
        self.components = components
        self.policy, self.tokenizer, self.reference = components.policy, components.tokenizer, components.reference
        self.train_ds, self.eval_ds, self.rewards = components.train_ds, components.eval_ds, components.rewards
        self.demo_train = components.demo_train
        self.match_spread = spread_matched(c)
        uses_scale = c.objective.reward_scale == "demo" and c.objective.name in DEMO_OBJECTIVES
        self.reward_scale = target_variance(self.demo_train) if uses_scale else None  # objective.reward_scale
        columns = reward_columns(c)  # objective.per_sample: the flagged columns, twice over with match_spread
        flags = torch.tensor([name in c.objective.per_sample for name in columns])
        self.per_sample = torch.cat([flags, flags]) if self.match_spread else flags
        if c.train.stop_credit != "sequence":  # the tokens that end a completion, and the one a prefix ends with
            self.stop_ids = eos_token_ids(self.policy, self.tokenizer, c.generation.stop_at_newline)
            text = "\n" if c.generation.stop_at_newline else self.tokenizer.eos_token
            self.stop_token = self.tokenizer.encode(text, add_special_tokens=False)[-1]
        self.model_id = c.model.name
        self.vllm = None
        if c.generation.backend == "vllm":
            from ..models import resolve_model_path
            from .vllm_rollout import VLLMGenerator

            self.vllm = VLLMGenerator(self.policy, self.tokenizer, resolve_model_path(c.model.name), c.model,
                                      c.generation, seed=c.train.seed + self.procs.rank)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, c.train)
        # The schedule is indexed by RL step (not optimizer step), so it is a pure function of step_idx.
        self.lr_at = lambda step: lr_factor(step, c.train.steps, c.train.lr_scheduler, c.train.warmup_steps)
        self.step_idx = 0
        self.skipped = 0
        self.first_advantage_std = None  # train.advantage_scale=first: frozen after step 1
        self.past_gaps = None  # objective.gap_memory: decayed [sum of past prompts' gaps (K)..., their count]
        self.target_shift = None  # objective.target_feedback: [K] added to every target, summed over steps
        self.demo_eval = None  # demonstration rewards of the eval_every subset, computed on first use
        self.average = WeightAverage(c.train.steps, c.train.average_weights)  # train.average_weights
        self.best = BestWeights() if c.train.load_best_model_at_end else None
        self.calibration_ds = None  # what eval_every evaluates: the validation split, else the eval split's first
        self.metrics_path = self.run.metrics_path
        self.samples_path = self.run.samples_path
        if resume:
            self._resume()
        self.trackers = []
        if self.procs.is_main:
            if c.train.report_to:
                from .tracking import build_trackers

                self.trackers = build_trackers(c.train.report_to, self.out, self.out.name or "run", c.to_dict())
        self.procs.wait()

    # ------------------------------------------------------------------ checkpoints
    def _resume(self) -> None:
        path = self._resume_from
        if path is None:
            # Nothing complete was saved: start over, dropping partial logs.
            if self.procs.is_main:
                for p in (self.metrics_path, self.samples_path):
                    p.unlink(missing_ok=True)
            return
        state = ckpt.load_checkpoint(path, self.policy, self.optimizer)
        self.step_idx, self.skipped = state["step"], state["skipped"]
        self.first_advantage_std = state.get("first_advantage_std")
        past = state.get("past_gaps")
        self.past_gaps = torch.tensor(past, dtype=torch.float64) if past is not None else None
        shift = state.get("target_shift")
        self.target_shift = torch.tensor(shift, dtype=torch.float32) if shift is not None else None
        self.average.load(path / AVERAGE_FILE, state.get("averaged_steps", 0))
        if self.best is not None:
            self.best.load(path / BEST_FILE, state)
        if self.procs.world > 1:  # the checkpoint holds the main process's RNG state
            torch.manual_seed(self.config.train.seed + 1_000_003 * self.procs.rank + self.step_idx)
        if not self.procs.is_main:
            return
        # Logs are cut back to what the checkpoint saw, so a resumed run writes each step once.
        for name in (METRICS, SAMPLES):
            saved = path / name
            target = self.out / name
            if saved.exists():
                target.write_bytes(saved.read_bytes())
            else:
                target.unlink(missing_ok=True)

    def save(self) -> Path | None:
        """Checkpoint (main process writes; every process calls it at the same points)."""
        self.procs.wait()
        if not self.procs.is_main:
            return None
        state = {"step": self.step_idx, "skipped": self.skipped, "first_advantage_std": self.first_advantage_std,
                 "past_gaps": self.past_gaps.tolist() if self.past_gaps is not None else None,
                 "target_shift": self.target_shift.tolist() if self.target_shift is not None else None,
                 "averaged_steps": self.average.count, **(self.best.state() if self.best else {}),
                 "beta": self.beta(self.step_idx), "config": self.config.to_dict()}
        extra = [self.metrics_path, self.samples_path]
        if self.demo_train is not None:
            demo_path = self.run.demo_rewards_path
            if not demo_path.exists():
                save_torch(demo_path, self.demo_train)
            extra.append(demo_path)
        if self.average.count:
            extra.append(self.average.save(self.out / AVERAGE_FILE))
        if self.best is not None and self.best.step is not None:
            extra.append(self.best.save(self.out / BEST_FILE))
        return ckpt.save_checkpoint(self.run.checkpoints, self.step_idx, self.policy, self.optimizer, state,
                                    extra_files=extra,
                                    keep=self.config.train.keep_checkpoints)

    def beta(self, step: int) -> float:
        o = self.config.objective
        return beta_at(step, self.config.train.steps, o.beta, o.beta_end) if o.name == "kl" else 0.0

    # ------------------------------------------------------------------ one RL step
    def step(self):
        """One RL step; returns (metrics record, prompts, completions, rewards)."""
        c = self.config
        t0 = time.perf_counter()
        k = c.train.num_generations
        idx = step_rows(self.step_idx, len(self.train_ds), c.train.batch_size, k, c.train.seed,
                        self.procs.rank, self.procs.world)
        prompts = [self.train_ds[i]["prompt"] for i in idx]

        # 1. rollout: completions and their log-probs under the sampling policy ("old" for PPO)
        if self.vllm is None:
            rollout, texts, old_logp = generate(self.policy, self.tokenizer, prompts, c.generation, want_logprobs=True)
        else:
            rollout, texts, _ = self.vllm(self.policy, prompts)
            with torch.no_grad():
                old_logp = token_logprobs(self.policy, rollout, c.train.micro_batch_size)
        t_gen = time.perf_counter()

        # 2. reference log-probs (KL, and the log-likelihood reward) and rewards R [B, K]
        ref_logp = reference_logprobs(self.policy, self.reference, rollout, c.train.micro_batch_size)
        rewards = self.rewards(prompts, texts, rollout=rollout, ref_logprobs=ref_logp)
        logratio = (old_logp - ref_logp).sum(-1)  # Σ_t log π_θ/π_0: sampled KL estimate per sequence
        demo = self.demo_train[idx] if self.demo_train is not None else None

        keep = whole_groups(torch.isfinite(rewards).all(-1), k)
        n_bad = int((~keep).sum())
        bad_total, kept_total = self.procs.sum(torch.tensor([float(n_bad), float(keep.sum())])).tolist()
        if bad_total:  # decided on batch-wide counts, so every process stops (or skips) together
            if not c.train.skip_nonfinite or kept_total == 0:
                self.save()
                check_finite(rewards, "the reward", self.step_idx + 1)
                raise NonFiniteError(f"the reward is not finite at step {self.step_idx + 1} in another process; "
                                     f"check the reward function, or set train.skip_nonfinite=true")
            self.skipped += int(bad_total)
            rows = keep.nonzero().flatten()
            rollout, old_logp, rewards, logratio = rollout.select(rows), old_logp[rows], rewards[rows], logratio[rows]
            demo = demo[rows] if demo is not None else None
            texts = [texts[i] for i in rows.tolist()]

        # 3. objective and 4. advantage
        beta = self.beta(self.step_idx)
        calibrated = with_second_moments(rewards) if self.match_spread else rewards  # objective.match_spread
        per_sample = self.per_sample
        if c.objective.name not in DEMO_OBJECTIVES:  # reward.calibrate_also: columns only RCfD optimizes
            calibrated = calibrated[:, :len(c.reward.names)]
            per_sample = None
        gap_sum = num_prompts = None
        targets = demo  # what the objective calibrates to; `demo` stays the batch's own, for the logs
        feedback = c.objective.target_feedback  # validated: objective 'rcfd' only
        if feedback:
            if self.target_shift is None:
                self.target_shift = torch.zeros(calibrated.shape[1])
            targets = demo + self.target_shift
            # the batch's mean gap to its demonstrations, over every process, moves the targets for the next step
            totals = self.procs.sum(torch.cat([(calibrated - demo).sum(0), torch.tensor([float(len(demo))])]).double())
            shift_used = self.target_shift  # replaced below, not changed in place
            self.target_shift = self.target_shift - feedback * (totals[:-1] / totals[-1]).float()
        if c.objective.name == "rcfd-batch":  # the mean gap is the whole batch's, over every process
            if c.objective.demo_mean == "all":  # every prompt is compared with all demonstrations' mean
                targets = self.demo_train.nanmean(0).expand_as(demo)
            gaps = prompt_gaps(calibrated, targets, k)
            totals = self.procs.sum(torch.cat([gaps.sum(0), torch.tensor([float(len(gaps))])])).double()
            pooled, self.past_gaps = pool_gaps(totals, self.past_gaps, c.objective.gap_memory)
            gap_sum, num_prompts = pooled[:-1].to(rewards.dtype), float(pooled[-1])
        objective = objective_values(c.objective.name, calibrated, demo_rewards=targets, logratio=logratio, beta=beta,
                                     alpha=c.objective.alpha, k=k, gap_sum=gap_sum, num_prompts=num_prompts,
                                     scale=self.reward_scale, per_sample=per_sample)
        advantages = self.advantages(objective)
        branch = None
        if c.train.stop_credit != "sequence":
            old_logp, branch = self.stop_branches(prompts, rollout, calibrated, targets, objective, advantages)

        # 5. PPO-clip update, accumulated over micro-batches of the rollout batch
        for group in self.optimizer.param_groups:
            group["lr"] = c.train.learning_rate * self.lr_at(self.step_idx)
        stats = self.update(rollout, old_logp, advantages, branch)
        t_end = time.perf_counter()

        # Logged metrics describe the whole batch, across processes.
        P = self.procs
        all_rewards, all_objective, all_logratio = P.gather(rewards), P.gather(objective), P.gather(logratio)
        lengths = P.gather(rollout.lengths().float())
        tokens = P.gather_objects(rollout.completion_tokens())
        record = {
            N.STEP: self.step_idx + 1,
            N.OBJECTIVE: float(all_objective.mean()),
            N.REWARD: float(all_rewards[:, 0].mean()),
            N.REWARD_STD: float(all_rewards[:, 0].std(unbiased=False)),
            N.KL: float(all_logratio.mean()),
            N.BETA: beta,
            N.LEARNING_RATE: self.optimizer.param_groups[0]["lr"],
            N.MEAN_LENGTH: float(lengths.mean()),
            N.DISTINCT_2: M.distinct_n(tokens, 2),
            N.SKIPPED: self.skipped,
            **stats,
        }
        timing = {"step": self.step_idx + 1, "generation_s": t_gen - t0, "step_s": t_end - t0}
        all_demo = P.gather(demo) if demo is not None else None
        if feedback:  # the shift this step's objective used
            for k, name in enumerate(reward_columns(c)):
                record[f"objective/{name}/target_shift"] = float(shift_used[k])
        for k, name in enumerate(self.rewards.names):
            record[f"rewards/{name}/mean"] = float(all_rewards[:, k].mean())
            if all_demo is not None:
                record[f"rewards/{name}/demo_mean"] = float(all_demo[:, k].mean())
        self.step_idx += 1
        self.last_timing, self.last_record = timing, record
        return record, prompts, texts, rewards

    def batch_moments(self, x: torch.Tensor) -> tuple[float, float]:
        """Mean and population std of ``x`` over the whole batch (all processes)."""
        n, total, squares = self.procs.sum(torch.stack([torch.tensor(float(len(x))), x.sum(), (x * x).sum()])).tolist()
        mean = total / n
        return mean, max(squares / n - mean * mean, 0.0) ** 0.5

    def advantages(self, objective: torch.Tensor) -> torch.Tensor:
        """train.advantage over the batch; rcfd-mean's objective is already a leave-one-out advantage."""
        t = self.config.train
        if t.advantage == "whiten" and self.procs.world > 1:  # the batch spans processes
            mean, std = self.batch_moments(objective)
            return (objective - mean) / (std + 1e-8)
        estimator = "given" if self.config.objective.name in ADVANTAGE_OBJECTIVES else t.advantage
        advantages, self.first_advantage_std = advantages_from(
            objective, estimator, t.num_generations, t.advantage_scale, self.first_advantage_std,
            std_fn=lambda a: self.batch_moments(a)[1])
        return advantages

    def stop_branches(self, prompts, rollout, rewards, targets, objective, advantages):
        """train.stop_credit 'branch': every prefix at which a completion went on, scored as if it had stopped
        there. Returns (old_logp [B, C], (old log p_stop [B, C], stop advantages [B, C], stop positions [B, C],
        content advantages [B] or, with 'branch-baseline', [B, C])), the old log-probs from one forward pass of
        the sampling policy, which is the policy before this step's update."""
        c = self.config
        self.policy.eval()
        with torch.no_grad():
            old_logp, old_log_stop = token_and_stop_logprobs(self.policy, rollout, self.stop_ids,
                                                             c.train.micro_batch_size)
        prefixes, rows, positions = stop_prefixes(rollout, self.stop_ids, self.stop_token, self.tokenizer.pad_token_id,
                                                  c.generation.min_new_tokens)
        branch = torch.zeros_like(old_logp)
        content = advantages
        if c.train.stop_credit == "branch-baseline":  # where no prefix was scored, the sequence's advantage
            content = content[:, None].expand_as(old_logp).clone()
        if len(rows):
            texts = decode_completions(self.tokenizer, prefixes)
            prefix_rewards = self.rewards([prompts[i] for i in rows.tolist()], texts, rollout=prefixes)
            width = rewards.shape[1]
            stop_value = objective_in_batch_units(
                c.objective.name, prefix_rewards[:, :width], targets[rows] if targets is not None else None,
                rewards, targets, alpha=c.objective.alpha, scale=self.reward_scale)
            unit = self.batch_moments(objective)[1] + 1e-8
            branch[rows, positions] = stop_branch_advantages(
                stop_value, objective[rows], old_log_stop[rows, positions].exp(), unit)
            if c.train.stop_credit == "branch-baseline":
                content[rows, positions] = (objective[rows] - stop_value) / unit
        is_stop = torch.isin(rollout.completion_ids, torch.tensor(sorted(self.stop_ids)))
        return old_logp, (old_log_stop, branch, is_stop & rollout.completion_mask.bool(), content)

    def update(self, rollout, old_logp, advantages, branch=None) -> dict:
        """PPO-clip: ``ppo_epochs`` passes, each split into ``num_minibatches`` optimizer steps. ``branch``
        (train.stop_credit=branch): the stop decision's own old log-probs, advantages and stop positions."""
        c = self.config.train
        self.policy.train()
        n = len(rollout)
        size = n // c.num_minibatches if n % c.num_minibatches == 0 else n
        params = [p for p in self.policy.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in params] if c.max_step_kl > 0 else None
        # Best-of-k leaves k − 1 rows of each group at a zero advantage, whose clipped surrogate is zero
        # whatever the ratio: no gradient, so their forward and backward are skipped. (Other estimators keep
        # every row, so their micro-batches, and numbers, stay as they were.)
        active = advantages != 0 if c.advantage == "best-of-k" else torch.ones_like(advantages, dtype=torch.bool)
        max_tokens = self.config.generation.max_new_tokens if c.loss_type == "dr_grpo" else None
        losses, clipped, grad_norms = [], [], []
        for _ in range(c.ppo_epochs):
            for start in range(0, n, size):
                self.optimizer.zero_grad(set_to_none=True)
                total = 0.0
                rows = torch.arange(start, min(start + size, n))
                rows = rows[active[rows]]
                for i in range(0, len(rows), c.micro_batch_size):
                    sel = rows[i:i + c.micro_batch_size]
                    mb = rollout.select(sel)
                    mask = mb.completion_mask.float()
                    if branch is None:
                        logp = token_logprobs(self.policy, mb)
                        per_seq = ppo_clip_loss(logp, old_logp[sel], advantages[sel], mask, c.clip_eps, max_tokens)
                    else:
                        old_log_stop, stop_advantages, is_stop, content = (b[sel] for b in branch)
                        logp, log_stop = token_and_stop_logprobs(self.policy, mb, self.stop_ids)
                        per_seq = stop_branch_loss(logp, old_logp[sel], log_stop, old_log_stop, is_stop,
                                                   content, stop_advantages, mask, c.clip_eps, max_tokens)
                    loss = per_seq.sum() / size  # micro-batches add up to the minibatch mean
                    if self.procs.any(not torch.isfinite(loss)):
                        self.save()
                        raise NonFiniteError(f"the loss is not finite at step {self.step_idx + 1}; state saved "
                                             f"(resume with --resume), lower train.learning_rate or check the rewards")
                    loss.backward()
                    total += loss.item()
                    ratio = torch.exp(logp.detach() - old_logp[sel])
                    outside = ((ratio - 1).abs() > c.clip_eps).float()
                    clipped.append(float((outside * mask).sum() / mask.sum().clamp(min=1)))
                self.procs.average_gradients(params)
                norm = torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm if c.max_grad_norm > 0 else math.inf)
                self.optimizer.step()
                losses.append(total)
                grad_norms.append(float(norm))
        stats = {N.LOSS: float(np.mean(losses)), N.CLIP_RATIO: float(np.mean(clipped)) if clipped else 0.0,
                 N.GRAD_NORM: float(np.mean(grad_norms))}
        if self.procs.world > 1:  # grad_norm is already global (gradients were averaged)
            for key in (N.LOSS, N.CLIP_RATIO):
                stats[key] = float(self.procs.sum(torch.tensor([stats[key]], dtype=torch.float64))[0]) / self.procs.world
        if before is not None:
            stats.update(self.limit_step(rollout, old_logp, params, before))
        return stats

    def step_kl(self, rollout, old_logp) -> float:
        """Mean KL(π_old ‖ π_θ) per completion over the step's rollouts (all processes)."""
        self.policy.eval()  # as when old_logp was taken
        with torch.no_grad():
            logp = token_logprobs(self.policy, rollout, self.config.train.micro_batch_size)
        kl = sampled_kl(logp, old_logp, rollout.completion_mask)
        total, n = self.procs.sum(torch.tensor([float(kl.sum()), float(len(kl))], dtype=torch.float64)).tolist()
        return total / n

    def limit_step(self, rollout, old_logp, params, before) -> dict:
        """train.max_step_kl: halve the weight change θ − θ_old until the step's KL is within the bound
        (undo it after train.max_step_kl_halvings halvings). Adam's moments keep the full step's gradients."""
        c = self.config.train
        after = [p.detach().clone() for p in params]
        scale, kl = 1.0, self.step_kl(rollout, old_logp)
        halvings = 0
        while kl > c.max_step_kl and scale > 0:
            halvings += 1
            scale = 0.5 ** halvings if halvings <= c.max_step_kl_halvings else 0.0
            with torch.no_grad():
                for p, old, new in zip(params, before, after):
                    p.copy_(old + scale * (new - old))
            kl = self.step_kl(rollout, old_logp) if scale > 0 else 0.0
        return {N.STEP_KL: kl, N.STEP_SCALE: scale}

    # ------------------------------------------------------------------ the loop
    def train(self, steps: int | None = None) -> dict:
        """Run until ``train.steps`` (or ``steps`` more), checkpointing; return the last record."""
        c = self.config
        end = c.train.steps if steps is None else min(c.train.steps, self.step_idx + steps)
        record = {}
        bar = tqdm(total=c.train.steps, initial=self.step_idx, desc=f"train {c.objective.name}",
                   disable=not self.progress, dynamic_ncols=True)
        with StopAtStepBoundary() as stop:
            try:
                if self.best is not None and self.best.step is None:  # the base model is a candidate too
                    self.offer_best(self.calibration_metrics() if self.procs.is_main else {})
                while self.step_idx < end and not stop.requested:
                    record, prompts, texts, rewards = self.step()
                    self.average.update(self.step_idx, self.policy)
                    if self.step_idx == c.train.steps:
                        self.average.apply(self.policy)  # the final policy is the mean of the last steps'
                    every = c.train.eval_every
                    if every and (self.step_idx % every == 0 or self.step_idx == c.train.steps):
                        if self.procs.is_main:
                            record.update(self.calibration_metrics())
                        self.procs.wait()
                        if self.best is not None:
                            self.offer_best(record)
                            if self.step_idx == c.train.steps:
                                self.best.apply(self.policy)  # the final policy is the best-calibrated step's
                    if self.procs.is_main:
                        self._log(record, prompts, texts, rewards)
                        bar.set_postfix(reward=f"{record[N.REWARD]:.3f}", kl=f"{record[N.KL]:.2f}",
                                        len=f"{record[N.MEAN_LENGTH]:.0f}")
                        bar.update()
                    if c.train.save_every and self.step_idx % c.train.save_every == 0 and self.step_idx < end:
                        self.save()
            finally:
                bar.close()
                for tracker in self.trackers:
                    tracker.finish()
            self.save()
            if stop.requested:
                raise KeyboardInterrupt
        return record

    def _log(self, record, prompts, texts, rewards) -> None:
        append_jsonl(self.metrics_path, record)  # deterministic: no wall-clock values
        append_jsonl(self.run.timings_path, self.last_timing)
        for tracker in self.trackers:
            tracker.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
        every = self.config.train.sample_every
        if every and (self.step_idx % every == 0 or self.step_idx == 1):
            for p, t, r in list(zip(prompts, texts, rewards[:, 0].tolist()))[:2]:
                append_jsonl(self.samples_path, {"step": self.step_idx, "prompt": p, "completion": t, "reward": r})

    def calibration_metrics(self) -> dict:
        """``eval/…`` metrics of the current policy on the validation split (``data.num_val``) or else the
        first ``train.eval_prompts`` held-out prompts (one completion each, a fixed seed): where its reward
        distribution stands against the demonstrations'. Sampled under a forked RNG, so training draws the
        same numbers with or without it."""
        c = self.config
        if self.calibration_ds is None:
            if c.data.num_val:
                self.calibration_ds = validation_dataset(c.data, self.tokenizer)
            else:
                self.calibration_ds = self.eval_ds.select(range(min(c.train.eval_prompts, len(self.eval_ds))))
            self.demo_eval = demo_rewards(self.rewards, self.calibration_ds, self.tokenizer,
                                          c.generation.max_new_tokens, desc="demonstration rewards (eval_every)",
                                          progress=False)
        with torch.random.fork_rng():
            m = evaluate(self.policy, self.reference, self.tokenizer, self.calibration_ds, self.rewards,
                         self.demo_eval, c, seed=c.train.seed, progress=False, samples_per_prompt=1, curves=False,
                         reference_metrics=not c.train.load_best_model_at_end)
        gaps = {name: M.demo_z(m[f"rewards/{name}/mean"], m[f"rewards/{name}/demo_mean"], m[f"rewards/{name}/demo_std"])
                for name in self.rewards.names}
        out = {N.EVAL_REWARD_Z: gaps[self.rewards.names[0]], N.EVAL_ALIGNMENT: m["alignment"],
               N.EVAL_DISTINCT_2_REL: M.relative(m["distinct_2"], m["demo_distinct_2"]),
               N.EVAL_CALIBRATION_DISTANCE: math.sqrt(sum(g * g for g in gaps.values()) / len(gaps))}
        if "kl_to_ref" in m:
            out.update({N.EVAL_NATURALNESS: m["naturalness"], N.EVAL_KL: m["kl_to_ref"]})
        if len(gaps) > 1:  # each reward's own curve (eval/reward_z is the first reward's)
            out.update({f"eval/{name}/reward_z": gap for name, gap in gaps.items()})
        return out

    def offer_best(self, record: dict) -> None:
        """train.load_best_model_at_end: keep the current weights if the main process measured them closest
        to the demonstrations so far (every process keeps the same step)."""
        distance = record.get(N.EVAL_CALIBRATION_DISTANCE, 0.0) if self.procs.is_main else 0.0
        distance = float(self.procs.sum(torch.tensor([distance], dtype=torch.float64))[0])
        if not math.isfinite(distance):
            raise RcfdError(f"eval/calibration_distance is {distance} at step {self.step_idx}: a reward is not finite, or "
                            "its demonstrations' std on the validation prompts is 0 (e.g. length with demonstrations "
                            "all of one length), so steps cannot be ranked; drop that reward or set "
                            "train.load_best_model_at_end=false")
        self.best.offer(self.step_idx, distance, self.policy)

    def export(self) -> Path:
        """Save the final adapter (LoRA) or model with ``save_pretrained`` into ``OUT/final``."""
        return self.run.save_final(self.policy, self.tokenizer)

    def evaluate(self, base: bool = False, demo_eval=None, dataset=None) -> dict:
        """Held-out metrics on ``dataset`` (default: the eval split) for the policy or, with ``base``,
        the reference."""
        return evaluate_components(self.components, self.config, base=base, dataset=dataset, demo_values=demo_eval,
                                   progress=self.progress)


def run_training(config: Config, out_dir, *, resume: bool = False, progress: bool = True, evaluate_after: bool = True):
    """Train (or resume) a run, export it and write ``summary.json``; return the summary."""
    t0 = time.perf_counter()
    trainer = Trainer(config, out_dir, resume=resume, progress=progress)
    trainer.train()
    if not trainer.procs.is_main:  # evaluation, export and the summary are the main process's
        trainer.procs.wait()
        return trainer, {}
    trainer.export()
    wall = time.perf_counter() - t0
    summary = {"objective": config.objective.name, "steps": trainer.step_idx, "train_seconds": wall,
               **describe(trainer.policy)}
    if trainer.best is not None:  # train.load_best_model_at_end: which step's weights the final policy holds
        summary.update(trainer.best.state())
    if evaluate_after:
        summary.update(trainer.evaluate())
        summary["wall_seconds"] = time.perf_counter() - t0
    summary["processes"] = trainer.procs.world
    RunDir(out_dir).write_summary(summary)
    trainer.procs.wait()
    return trainer, summary

