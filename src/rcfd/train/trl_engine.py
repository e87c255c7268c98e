"""``train.engine: trl``: the same config, task and run directory, trained by TRL's ``GRPOTrainer``.

rcfd builds what it builds for its own loop (policy with LoRA, reference, rewards, the training
prompts' targets R(x, y_demo), the objective); TRL samples, computes the advantage and takes the PPO
steps, so a GPU user gets TRL's vLLM rollouts, DeepSpeed and FSDP under ``accelerate launch``. The
run directory is rcfd's: config.yaml first, one metrics.jsonl record per RL step under
:mod:`rcfd.eval.metric_names`, samples.jsonl, final/ and summary.json from rcfd's own evaluation, so
``rcfd eval``, ``rcfd report`` and ``rcfd demo`` read it unchanged. TRL's own checkpoints go to
RUN/trl/checkpoint-N (``--resume RUN`` continues from the newest).

How rcfd's settings map onto GRPOConfig (docs/how-to/trl-engine.md lists them with the deviations):
  one RL step = one TRL generation batch of train.batch_size completions (train.num_generations per
  prompt); each is used for train.ppo_epochs passes (``num_iterations``) of train.num_minibatches
  optimizer steps (``gradient_accumulation_steps`` micro-batches of train.micro_batch_size each).
  The reward TRL sees is the objective's value per completion; TRL subtracts each prompt's mean
  (GRPO's baseline), so ``train.advantage: group`` is GRPO's (obj − group mean)/group std and
  ``rloo`` is obj·k/(k−1) minus the group mean, which is rcfd's leave-one-out exactly. rcfd-batch's
  values are already advantages with group mean 0, which TRL's baseline leaves as they are.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..errors import NonFiniteError, RcfdError
from ..eval import metric_names as N
from ..files import append_jsonl
from ..models import describe
from ..rewards.base import check_finite
from .distributed import Processes
from .logprobs import Rollout, reference_logprobs, token_logprobs
from .objectives import KL, ScoredBatch, build_objective
from .rollout import decode_completions
from .step_metrics import step_record
from .engines import check_trl_engine
from .rundir import RunDir

TRL_DIR = "trl"  # RUN/trl/checkpoint-N: TRL's checkpoints


def grpo_config(config, out: Path, world: int, use_cpu: bool):
    """GRPOConfig for rcfd's settings (module docstring); TRL's checkpoints under ``out``/trl."""
    from trl import GRPOConfig

    t, g = config.train, config.generation
    local = t.batch_size // world
    minibatch = local // t.num_minibatches
    micro = min(t.micro_batch_size, minibatch)
    if minibatch % micro:
        raise RcfdError(f"train.engine=trl accumulates whole micro-batches: train.micro_batch_size ({t.micro_batch_size}) "
                        f"must divide the minibatch of {minibatch} completions per process")
    per_step = t.num_minibatches * t.ppo_epochs  # optimizer steps per RL step
    return GRPOConfig(
        output_dir=str(out / TRL_DIR), use_cpu=use_cpu, seed=t.seed, data_seed=t.seed,
        max_steps=t.steps * per_step, per_device_train_batch_size=micro,
        gradient_accumulation_steps=minibatch // micro, steps_per_generation=local // micro,
        num_iterations=t.ppo_epochs, num_generations=t.num_generations,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup_steps * per_step,
        weight_decay=t.weight_decay, adam_epsilon=t.adam_epsilon, max_grad_norm=t.max_grad_norm,
        epsilon=t.clip_eps, loss_type=t.loss_type, scale_rewards="group" if t.advantage == "group" else "none",
        beta=config.objective.beta if config.objective.name == KL.name else 0.0,
        max_completion_length=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, top_k=0,
        generation_kwargs={"min_new_tokens": g.min_new_tokens} if g.min_new_tokens else None,
        logging_steps=1, report_to=list(t.report_to) or "none", disable_tqdm=True,
        save_strategy="steps" if t.save_every else "no", save_steps=max(1, t.save_every * per_step),
        save_total_limit=t.keep_checkpoints, bf16=False, fp16=False,
    )


class ObjectiveReward:
    """A TRL reward function: the objective's value per completion, scored as rcfd's loop scores it
    (rewards with the reference's log-probs, the row's target), keeping each RL step's metrics."""

    def __init__(self, components, config, procs: Processes, start_step: int = 0):
        self.c, self.config, self.procs = components, config, procs
        self.objective = build_objective(config, components.demo_train)
        self.__name__ = self.objective.name  # TRL logs rewards/<name>/mean
        self.step = start_step
        self.pending: dict | None = None  # the record of the RL step being trained
        self.samples: list = []

    def rollout(self, prompts: list[str], completion_ids: list[list[int]]) -> Rollout:
        """TRL's completions (each cut after its EOS) as rcfd's rollout: prompts left-padded as TRL tokenizes them."""
        tokenizer = self.c.tokenizer
        tokenizer.padding_side = "left"
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        width = max(1, max(len(ids) for ids in completion_ids))
        ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long, device="cpu")
        mask = torch.zeros((len(prompts), width), dtype=torch.long, device="cpu")
        for i, row in enumerate(completion_ids):
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long, device="cpu")
            mask[i, :len(row)] = 1
        device = next(self.c.policy.parameters()).device
        return Rollout(enc["input_ids"], enc["attention_mask"], ids, mask).to(device)

    def __call__(self, prompts, completions, completion_ids, row, **_) -> list[float]:
        micro = self.config.train.micro_batch_size
        rollout = self.rollout(list(prompts), completion_ids)
        with torch.no_grad():
            logp = token_logprobs(self.c.policy, rollout, micro)
            ref_logp = reference_logprobs(self.c.policy, self.c.reference, rollout, micro)
        texts = decode_completions(self.c.tokenizer, rollout)
        rewards = self.c.rewards(list(prompts), texts, rollout=rollout, ref_logprobs=ref_logp)
        try:
            check_finite(rewards, "the reward", self.step + 1)
        except NonFiniteError as exc:
            raise NonFiniteError(f"{exc} (TRL's checkpoints under RUN/{TRL_DIR} are kept; resume with --resume)") from None
        rows = list(row)
        batch = ScoredBatch(rows, list(prompts), texts, rollout, logp, rewards, (logp - ref_logp).sum(-1).float().cpu(),
                            self.c.demo_train[rows] if self.c.demo_train is not None else None)
        values = self.objective.values(batch, self.step, self.procs)
        self.pending = step_record(self.procs, self.step + 1, batch, values, self.objective.beta(self.step),
                                   self.c.rewards.names)
        self.samples = list(zip(batch.prompts, texts, rewards[:, 0].tolist()))[:2]
        self.step += 1
        k = self.config.train.num_generations
        if self.config.train.advantage == "rloo" and not self.objective.gives_advantage:
            values = values * (k / (k - 1))  # minus TRL's group mean: rcfd's leave-one-out baseline
        return values.tolist()


def run_log_callback(run: RunDir, reward: ObjectiveReward, config, procs: Processes, progress: bool = True):
    """A TrainerCallback writing one metrics.jsonl record per RL step from the reward's batch metrics
    and TRL's logs of that step's optimizer steps (loss, grad norm, clip ratio: their means)."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    from .best_step import CalibrationProbe

    per_step = config.train.num_minibatches * config.train.ppo_epochs
    every, eval_every = config.train.sample_every, config.train.eval_every
    probe = CalibrationProbe(reward.c, config)  # train.eval_every: the eval/… metrics rcfd's loop logs

    class RunLog(TrainerCallback):
        def __init__(self):
            self.logs, self.started = [], time.perf_counter()
            self.bar = tqdm(total=config.train.steps, initial=reward.step, desc=f"train {reward.objective.name} (trl)",
                            disable=not (progress and procs.is_main), dynamic_ncols=True)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

        def mean(self, key: str) -> float:
            return float(sum(log.get(key, 0.0) for log in self.logs) / len(self.logs))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if "loss" in (logs or {}):
                self.logs.append(logs)
            if not procs.is_main or state.global_step % per_step or not self.logs or reward.pending is None:
                return
            record = {**reward.pending, N.LEARNING_RATE: float(self.logs[0].get("learning_rate", 0.0)),
                      N.SKIPPED: 0, N.LOSS: self.mean("loss"), N.CLIP_RATIO: self.mean("clip_ratio/region_mean"),
                      N.GRAD_NORM: self.mean("grad_norm")}
            self.logs = []
            if eval_every and (record[N.STEP] % eval_every == 0 or record[N.STEP] == config.train.steps):
                record.update(probe(reward.c.policy))
            append_jsonl(run.metrics_path, record)
            self.bar.set_postfix(reward=f"{record[N.REWARD]:.3f}", kl=f"{record[N.KL]:.2f}",
                                 len=f"{record[N.MEAN_LENGTH]:.0f}")
            self.bar.update()
            now = time.perf_counter()
            append_jsonl(run.timings_path, {"step": record[N.STEP], "step_s": now - self.started})
            self.started = now
            if every and (record[N.STEP] % every == 0 or record[N.STEP] == 1):
                for p, t, r in reward.samples:
                    append_jsonl(run.samples_path, {"step": record[N.STEP], "prompt": p, "completion": t, "reward": r})

    return RunLog()


class TrlRun:
    """What :func:`run_trl_training` returns in the trainer's place: the processes, the trained
    components, TRL's trainer, and :meth:`evaluate` as rcfd's Trainer has it."""

    def __init__(self, procs, components, config, trainer, lock):
        self.procs, self.components, self.config, self.trl_trainer = procs, components, config, trainer
        self.policy = components.policy
        self._lock = lock  # RUN/.lock, held while this object lives

    def evaluate(self, base: bool = False, demo_eval=None, dataset=None) -> dict:
        """Held-out metrics of the policy or, with ``base``, the reference (rcfd's Trainer.evaluate)."""
        from ..eval.evaluate import evaluate_components

        return evaluate_components(self.components, self.config, base=base, dataset=dataset, demo_values=demo_eval,
                                   progress=False)


def _resume_point(run: RunDir, config) -> tuple[str | None, int]:
    """TRL's newest checkpoint and its RL step; metrics and samples cut back to that step."""
    saved = sorted((run.path / TRL_DIR).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    if not saved:
        for path in (run.metrics_path, run.samples_path, run.timings_path):
            path.unlink(missing_ok=True)
        return None, 0
    step = int(saved[-1].name.split("-")[-1]) // (config.train.num_minibatches * config.train.ppo_epochs)
    for path in (run.metrics_path, run.samples_path, run.timings_path):
        kept = [r for r in run.read_jsonl(path.name) if r.get("step", 0) <= step] if path.exists() else []
        path.unlink(missing_ok=True)
        for record in kept:
            append_jsonl(path, record)
    return str(saved[-1]), step


def run_trl_training(config, out_dir, *, resume: bool = False, progress: bool = True, evaluate_after: bool = True):
    """:func:`rcfd.train.trainer.run_training` on TRL's GRPOTrainer; returns (TrlRun, summary)."""
    try:
        from trl import GRPOTrainer
    except ImportError:
        raise RcfdError("train.engine=trl needs TRL: pip install 'trl>=1.0'") from None
    from .components import build_components
    from .device import resolve_device

    check_trl_engine(config)
    t0 = time.perf_counter()
    procs = Processes()
    run = RunDir(out_dir).prepare(resume)
    lock = run.lock() if procs.is_main else None
    if procs.is_main:
        run.write_config(config)
    checkpoint, start = _resume_point(run, config) if resume and procs.is_main else (None, 0)
    components = build_components(config, rank=procs.rank, world=procs.world, progress=progress and procs.is_main)
    reward = ObjectiveReward(components, config, procs, start_step=start)
    device = resolve_device(config.model.device)
    args = grpo_config(config, run.path, procs.world, use_cpu=device.type == "cpu")
    train_ds = components.train_ds.add_column("row", list(range(len(components.train_ds))))
    trainer = GRPOTrainer(model=components.policy, reward_funcs=[reward], args=args, train_dataset=train_ds,
                          processing_class=components.tokenizer)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for printer in (PrinterCallback, ProgressCallback):  # rcfd's own bar and metrics.jsonl instead
        trainer.remove_callback(printer)
    trainer.add_callback(run_log_callback(run, reward, config, procs, progress))
    trainer.train(resume_from_checkpoint=checkpoint)
    components.policy = trainer.accelerator.unwrap_model(trainer.model)
    result = TrlRun(procs, components, config, trainer, lock)
    if not procs.is_main:
        procs.wait()
        return result, {}
    run.save_final(components.policy, components.tokenizer)
    summary = {"objective": config.objective.name, "steps": config.train.steps,
               "train_seconds": time.perf_counter() - t0, **describe(components.policy)}
    if evaluate_after:
        summary.update(result.evaluate())
        summary["wall_seconds"] = time.perf_counter() - t0
    summary["processes"] = procs.world
    run.write_summary(summary)
    procs.wait()
    return result, summary
