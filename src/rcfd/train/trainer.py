"""The RL loop: rollout → score → objective → advantage → PPO-clip update → log.

One step, top to bottom (:meth:`Trainer.step`):
  1. rollout: k = train.num_generations completions per prompt from π_θ (temperature 1), with their
     token log-probs (rows i·k … i·k + k − 1 belong to one prompt);
  2. score: the reference's log π_0 per token, the rewards R [B, K], the prompts' targets R(x, y_demo),
     rows with a non-finite reward stopped or dropped;
  3. objective: one value per sequence, R (β = 0), R − β·Σ log π_θ/π_0, RCfD −(R − R_demo)², …
     (:mod:`rcfd.train.objectives`);
  4. advantage: the paper's whitened batch baseline (obj − mean_batch)/std_batch, or a group estimator
     (leave-one-out, GRPO's) chosen by train.advantage (:mod:`rcfd.train.advantages`);
  5. update: loss = −mean_seq mean_t min(ρ_t A, clip(ρ_t, 1−ε, 1+ε) A), ρ_t = π_θ(y_t)/π_old(y_t) (PPO),
     minibatches of whole groups;
  6. log: one record per step in metrics.jsonl under :mod:`rcfd.eval.metric_names`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config
from ..errors import NonFiniteError
from ..eval import metric_names as N
from ..eval.evaluate import evaluate_components
from ..files import append_jsonl, save_torch
from ..models import describe
from ..rewards.base import check_finite
from . import checkpoint as ckpt
from .checkpoint import StopAtStepBoundary
from .advantages import ppo_clip_loss
from .best_step import BEST_FILE, BestWeights, CalibrationProbe
from .components import Components, build_components
from .device import resolve_device, resolve_dtype
from .distributed import Processes, check_world
from .failed_step import StepBoundary
from .logprobs import reference_logprobs, token_logprobs
from .objectives import ScoredBatch, build_objective
from .rollout import generate_in_parts
from .rundir import DEMO_REWARDS, METRICS, SAMPLES, RunDir
from .schedule import build_optimizer, lr_factor, step_rows, whole_groups
from .step_metrics import step_record


class Trainer:
    """Trains one policy with one objective; see the module docstring for the step."""

    def __init__(self, config: Config, out_dir, *, resume: bool = False, progress: bool = True,
                 components: Components | None = None):
        """``components`` (policy, data, rewards, ...) default to :func:`rcfd.train.components.build_components`
        of ``config``; pass them to train something built elsewhere."""
        self.config = c = config
        resolve_dtype(c.model.dtype, resolve_device(c.model.device))  # what this machine cannot run, before any write
        self.procs = Processes()
        check_world(c.train, self.procs.world)
        self.progress = progress and self.procs.is_main
        self.run = RunDir(out_dir).prepare(resume)
        self._lock = self.run.lock() if self.procs.is_main else None
        self.out = self.run.path
        if self.procs.is_main:  # first, so a run killed while loading can still be resumed
            self.run.write_config(c)
        saved = self.run.latest_checkpoint() if resume else None  # checksums verified once
        if components is None:
            components = build_components(c, rank=self.procs.rank, world=self.procs.world, progress=self.progress,
                                          demo_rewards_from=saved / DEMO_REWARDS if saved is not None else None)
        self.components = components
        self.policy, self.tokenizer, self.reference = components.policy, components.tokenizer, components.reference
        self.train_ds, self.rewards, self.demo_train = components.train_ds, components.rewards, components.demo_train
        self.objective = build_objective(c, self.demo_train)
        self.vllm = self._vllm() if c.generation.backend == "vllm" else None
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, c.train)
        self.step_idx = self.skipped = 0
        self.weights_moved = False  # by this step's optimizer steps (rcfd.train.failed_step)
        self.best = BestWeights() if c.train.load_best_model_at_end else None
        self.probe = CalibrationProbe(components, c)
        if resume:
            self._resume(saved)
        self.trackers = []
        if self.procs.is_main and c.train.report_to:
            from .tracking import build_trackers

            self.trackers = build_trackers(c.train.report_to, self.out, self.out.name or "run", c.to_dict())
        self.procs.wait()

    def _vllm(self):
        from ..models import resolve_model_path
        from .vllm_rollout import VLLMGenerator

        c = self.config
        return VLLMGenerator(self.policy, self.tokenizer, resolve_model_path(c.model.name), c.model, c.generation,
                             seed=c.train.seed + self.procs.rank)

    # ------------------------------------------------------------------ checkpoints
    def _resume(self, path: Path | None) -> None:
        if path is None:  # nothing complete was saved: start over, dropping partial logs
            if self.procs.is_main:
                for p in (self.run.metrics_path, self.run.samples_path):
                    p.unlink(missing_ok=True)
            return
        state = ckpt.load_checkpoint(path, self.policy, self.optimizer)
        self.step_idx, self.skipped = state["step"], state["skipped"]
        self.objective.load_state_dict(state.get("objective", {}))
        if self.best is not None:
            self.best.load(path / BEST_FILE, state)
        if self.procs.world > 1:  # the checkpoint holds the main process's RNG state
            torch.manual_seed(self.config.train.seed + 1_000_003 * self.procs.rank + self.step_idx)
        if self.procs.is_main:  # logs cut back to what the checkpoint saw, so each step is written once
            for name in (METRICS, SAMPLES):
                saved, target = path / name, self.out / name
                if saved.exists():
                    target.write_bytes(saved.read_bytes())
                else:
                    target.unlink(missing_ok=True)

    def save(self) -> Path | None:
        """Checkpoint (main process writes; every process calls it at the same points)."""
        self.procs.wait()
        if not self.procs.is_main:
            return None
        state = {"step": self.step_idx, "skipped": self.skipped, "objective": self.objective.state_dict(),
                 **(self.best.state_dict() if self.best else {}), "beta": self.objective.beta(self.step_idx),
                 "config": self.config.to_dict()}
        extra = [self.run.metrics_path, self.run.samples_path]
        if self.demo_train is not None:
            if not self.run.demo_rewards_path.exists():
                save_torch(self.run.demo_rewards_path, self.demo_train)
            extra.append(self.run.demo_rewards_path)
        if self.best is not None and self.best.step is not None:
            extra.append(self.best.save(self.out / BEST_FILE))
        return ckpt.save_checkpoint(self.run.checkpoints, self.step_idx, self.policy, self.optimizer, state,
                                    extra_files=extra, keep=self.config.train.keep_checkpoints)

    # ------------------------------------------------------------------ one RL step
    def step(self) -> tuple[dict, ScoredBatch]:
        """One RL step; returns its metrics record and the scored batch."""
        c, t0 = self.config.train, time.perf_counter()
        rows = step_rows(self.step_idx, len(self.train_ds), c.batch_size, c.num_generations, c.seed,
                         self.procs.rank, self.procs.world)
        batch = self.rollout(rows)  # 1. completions and log π_old
        t_gen = time.perf_counter()
        batch = self.score(batch)  # 2. log π_0, R [B, K], targets; non-finite rows
        values = self.objective.values(batch, self.step_idx, self.procs)  # 3. one value per sequence
        advantages = self.objective.advantages(values, self.procs)  # 4. A [B]
        for group in self.optimizer.param_groups:  # the schedule is indexed by RL step: a pure function of it
            group["lr"] = c.learning_rate * lr_factor(self.step_idx, c.steps, c.lr_scheduler, c.warmup_steps)
        stats = self.update(batch.rollout, batch.old_logp, advantages)  # 5. PPO-clip
        record = self.record(batch, values, stats)  # 6. the whole batch's metrics, across processes
        self.step_idx += 1
        self.last_timing = {"step": self.step_idx, "generation_s": t_gen - t0, "step_s": time.perf_counter() - t0}
        return record, batch

    def rollout(self, rows: list[int]) -> ScoredBatch:
        """Completions of the rows' prompts and their log-probs under the sampling policy ("old" for PPO)."""
        prompts = [self.train_ds[i]["prompt"] for i in rows]
        if self.vllm is None:
            rollout, texts, old_logp = generate_in_parts(self.policy, self.tokenizer, prompts, self.config.generation)
        else:
            rollout, texts, _ = self.vllm(self.policy, prompts)
            with torch.no_grad():
                old_logp = token_logprobs(self.policy, rollout, self.config.train.micro_batch_size)
        return ScoredBatch(rows, prompts, texts, rollout, old_logp, rewards=None, logratio=None)

    def score(self, b: ScoredBatch) -> ScoredBatch:
        """Reference log-probs, rewards R [B, K], Σ_t log π_θ/π_0 and the rows' targets; rows with a
        non-finite reward stop the run (state saved) or, with train.skip_nonfinite, are dropped."""
        c = self.config.train
        ref_logp = reference_logprobs(self.policy, self.reference, b.rollout, c.micro_batch_size)
        b.rewards = self.rewards(b.prompts, b.texts, rollout=b.rollout, ref_logprobs=ref_logp)
        b.logratio = (b.old_logp - ref_logp).sum(-1).float().cpu()  # sampled KL estimate per sequence
        b.targets = self.demo_train[b.rows] if self.demo_train is not None else None
        keep = whole_groups(torch.isfinite(b.rewards).all(-1), c.num_generations)
        bad, kept = self.procs.sum(torch.tensor([float((~keep).sum()), float(keep.sum())], device="cpu")).tolist()
        if not bad:  # decided on batch-wide counts, so every process stops (or skips) together
            return b
        if not c.skip_nonfinite or kept == 0:  # the loop checkpoints the step boundary before it re-raises
            check_finite(b.rewards, "the reward", self.step_idx + 1)
            raise NonFiniteError(f"the reward is not finite at step {self.step_idx + 1} in another process; "
                                 f"check the reward function, or set train.skip_nonfinite=true")
        self.skipped += int(bad)
        i = keep.nonzero().flatten()
        return ScoredBatch([b.rows[j] for j in i.tolist()], [b.prompts[j] for j in i.tolist()],
                           [b.texts[j] for j in i.tolist()], b.rollout.select(i), b.old_logp[i], b.rewards[i],
                           b.logratio[i], b.targets[i] if b.targets is not None else None)

    def update(self, rollout, old_logp, advantages) -> dict:
        """PPO-clip: ``ppo_epochs`` passes, each split into ``num_minibatches`` optimizer steps of whole groups,
        accumulated over micro-batches."""
        c = self.config.train
        self.policy.train()
        n = len(rollout)
        size = n // c.num_minibatches if n % c.num_minibatches == 0 else n
        max_tokens = self.config.generation.max_new_tokens if c.loss_type == "dr_grpo" else None
        losses, clipped, grad_norms = [], [], []
        for _ in range(c.ppo_epochs):
            for start in range(0, n, size):
                self.optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for sel in torch.arange(start, min(start + size, n), device="cpu").split(c.micro_batch_size):
                    mb = rollout.select(sel)
                    mask = mb.completion_mask.float()
                    logp = token_logprobs(self.policy, mb)
                    per_seq = ppo_clip_loss(logp, old_logp[sel], advantages[sel].to(logp.device), mask, c.clip_eps,
                                            max_tokens)
                    loss = per_seq.sum() / size  # micro-batches add up to the minibatch mean
                    if self.procs.any(not bool(torch.isfinite(loss))):
                        raise NonFiniteError(f"the loss is not finite at step {self.step_idx + 1}; lower "
                                             "train.learning_rate or check the rewards (resume with --resume)")
                    loss.backward()
                    total += loss.item()
                    outside = ((torch.exp(logp.detach() - old_logp[sel]) - 1).abs() > c.clip_eps).float()
                    clipped.append(float((outside * mask).sum() / mask.sum().clamp(min=1)))
                self.procs.average_gradients(self.params)
                norm = torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm if c.max_grad_norm > 0 else math.inf)
                self.optimizer.step()
                self.weights_moved = True
                losses.append(total)
                grad_norms.append(float(norm))
        stats = {N.LOSS: float(np.mean(losses)), N.CLIP_RATIO: float(np.mean(clipped)) if clipped else 0.0,
                 N.GRAD_NORM: float(np.mean(grad_norms))}
        if self.procs.world > 1:  # grad_norm is already global (gradients were averaged)
            for key in (N.LOSS, N.CLIP_RATIO):
                stats[key] = float(self.procs.sum(torch.tensor([stats[key]], dtype=torch.float64, device="cpu"))[0]) / self.procs.world
        return stats

    def record(self, b: ScoredBatch, values: torch.Tensor, stats: dict) -> dict:
        """The step's metrics over the whole batch (every process)."""
        return {**step_record(self.procs, self.step_idx + 1, b, values, self.objective.beta(self.step_idx),
                              self.rewards.names),
                N.LEARNING_RATE: self.optimizer.param_groups[0]["lr"], N.SKIPPED: self.skipped, **stats}

    # ------------------------------------------------------------------ the loop
    def train(self, steps: int | None = None) -> dict:
        """Run until ``train.steps`` (or ``steps`` more), checkpointing; return the last record."""
        c = self.config.train
        end = c.steps if steps is None else min(c.steps, self.step_idx + steps)
        record = {}
        bar = tqdm(total=c.steps, initial=self.step_idx, desc=f"train {self.objective.name}",
                   disable=not self.progress, dynamic_ncols=True)
        with StopAtStepBoundary() as stop:
            try:
                if self.best is not None and self.best.step is None:  # the base model is a candidate too
                    self.offer_best(self.probe(self.policy) if self.procs.is_main else {})
                while self.step_idx < end and not stop.requested:
                    boundary = StepBoundary(self)
                    try:
                        record, batch = self.step()
                    except Exception as exc:
                        boundary.save_after_failure(exc)
                        raise
                    self.after_step(record)
                    if self.procs.is_main:
                        self._log(record, batch)
                        bar.set_postfix(reward=f"{record[N.REWARD]:.3f}", kl=f"{record[N.KL]:.2f}",
                                        len=f"{record[N.MEAN_LENGTH]:.0f}")
                        bar.update()
                    if c.save_every and self.step_idx % c.save_every == 0 and self.step_idx < end:
                        self.save()
            finally:
                bar.close()
                for tracker in self.trackers:
                    tracker.finish()
            self.save()
            if stop.requested:
                raise KeyboardInterrupt
        return record

    def after_step(self, record: dict) -> None:
        """train.eval_every: the eval/… metrics into ``record``; with train.load_best_model_at_end, the
        step offered as the final policy (which holds the best step's weights after the last step)."""
        c = self.config.train
        if not c.eval_every or (self.step_idx % c.eval_every and self.step_idx != c.steps):
            return
        if self.procs.is_main:
            record.update(self.probe(self.policy))
        self.procs.wait()
        if self.best is not None:
            self.offer_best(record)
            if self.step_idx == c.steps:
                self.best.apply(self.policy)

    def offer_best(self, record: dict) -> None:
        """Keep the current weights if the main process measured them closest to the demonstrations so far
        (every process keeps the same step)."""
        distance = record.get(N.EVAL_CALIBRATION_DISTANCE, 0.0) if self.procs.is_main else 0.0
        self.best.offer(self.step_idx, float(self.procs.sum(torch.tensor([distance], dtype=torch.float64, device="cpu"))[0]),
                        self.policy)

    def _log(self, record: dict, batch: ScoredBatch) -> None:
        append_jsonl(self.run.metrics_path, record)  # deterministic: no wall-clock values
        append_jsonl(self.run.timings_path, self.last_timing)
        for tracker in self.trackers:
            tracker.log({k: v for k, v in record.items() if k != N.STEP}, step=record[N.STEP])
        every = self.config.train.sample_every
        if every and (self.step_idx % every == 0 or self.step_idx == 1):
            for p, t, r in list(zip(batch.prompts, batch.texts, batch.rewards[:, 0].tolist()))[:2]:
                append_jsonl(self.run.samples_path, {"step": self.step_idx, "prompt": p, "completion": t, "reward": r})

    def close(self) -> None:
        """Let another trainer write this run directory (a process that ends releases it too)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def export(self) -> Path:
        """Save the final adapter (LoRA) or model with ``save_pretrained`` into ``OUT/final``."""
        return self.run.save_final(self.policy, self.tokenizer)

    def evaluate(self, base: bool = False, demo_eval=None, dataset=None) -> dict:
        """Held-out metrics on ``dataset`` (default: the eval split) for the policy or, with ``base``,
        the reference."""
        return evaluate_components(self.components, self.config, base=base, dataset=dataset, demo_values=demo_eval,
                                   progress=self.progress)


def run_training(config: Config, out_dir, *, resume: bool = False, progress: bool = True, evaluate_after: bool = True):
    """Train (or resume) a run, export it and write ``summary.json``; return (trainer, summary)."""
    if config.train.engine == "trl":  # the same run directory, trained by TRL's GRPOTrainer
        from .trl_engine import run_trl_training
        return run_trl_training(config, out_dir, resume=resume, progress=progress, evaluate_after=evaluate_after)
    t0 = time.perf_counter()
    trainer = Trainer(config, out_dir, resume=resume, progress=progress)
    trainer.train()
    if not trainer.procs.is_main:  # evaluation, export and the summary are the main process's
        trainer.procs.wait()
        return trainer, {}
    trainer.export()
    summary = {"objective": config.objective.name, "steps": trainer.step_idx,
               "train_seconds": time.perf_counter() - t0, **describe(trainer.policy)}
    if trainer.best is not None:  # which step's weights the final policy holds
        summary.update(trainer.best.state_dict())
    if evaluate_after:
        summary.update(trainer.evaluate())
        summary["wall_seconds"] = time.perf_counter() - t0
    summary["processes"] = trainer.procs.world
    RunDir(out_dir).write_summary(summary)
    trainer.procs.wait()
    return trainer, summary
