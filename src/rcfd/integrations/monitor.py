"""A calibration monitor for transformers/TRL trainers: see over-optimization while it happens.

Every ``every`` optimizer steps, :class:`CalibrationMonitor` samples completions for a fixed set of
held-out prompts with the trainer's current model, scores them with the given rewards and logs, through
the trainer's own logging (console, TensorBoard, W&B, ``state.log_history``), the diagnostics of
``rcfd eval`` — computed by the same function, :func:`rcfd.eval.evaluate.evaluate`:

    calibration/reward_z            (mean reward − demonstrations' mean) / demonstrations' std
    calibration/alignment           histogram KL between demonstrations' and samples' rewards
    calibration/wasserstein         W1 distance between the two reward distributions
    calibration/distinct_2_rel      distinct-2 relative to the demonstrations' (−0.2 = 20% fewer)
    calibration/repetition_4        share of repeated 4-grams (and .../demo_repetition_4)
    calibration/naturalness_z       mean token log-likelihood under the reference, in demonstration std
    calibration/kl_to_ref           sampled Σ_t log π_θ/π_ref per completion
    calibration/{reward}/...        reward_z, alignment and wasserstein per reward when there are several

It warns once, in one line, when the run looks over-optimized: some reward more than ``warn_sigma``
demonstration std above theirs while distinct-2 has fallen by ``warn_diversity_drop`` or more, or
naturalness is more than ``warn_sigma`` std below theirs. Sampling uses a forked random stream, so the
training run draws the same numbers with or without the monitor.

Example::

    trainer = GRPOTrainer(model=..., reward_funcs=[reward], args=args, train_dataset=train)
    trainer.add_callback(CalibrationMonitor(trainer, prompts=held_out["prompt"],
                                            demonstrations=held_out["demonstration"], rewards=[reward], every=10))
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from transformers import Trainer, TrainerCallback

from ..errors import RcfdError
from ..eval.metrics import demo_z, relative
from ..rewards.base import RewardStack, check_finite
from ..rewards.callable import as_reward

logger = logging.getLogger("rcfd")

PREFIX = "calibration/"


def reward_stack(rewards) -> RewardStack:
    """The base rewards to watch: TRL-signature callables, rcfd rewards, or an ``RCfDReward`` (its base
    rewards: the RCfD value of the demonstrations is 0 by construction, so it is no yardstick)."""
    rewards = list(rewards) if isinstance(rewards, (list, tuple)) else [rewards]
    members = []
    for r in rewards:
        if hasattr(r, "stack") and isinstance(r.stack, RewardStack):  # RCfDReward
            members += r.stack.rewards
        else:
            members.append(as_reward(r, "CalibrationMonitor"))
    if not members:
        raise RcfdError("CalibrationMonitor needs at least one reward to watch")
    return RewardStack(members)


def monitor_metrics(measured: dict, names: list[str]) -> dict[str, float]:
    """The logged ``calibration/…`` figures from an :func:`rcfd.eval.evaluate.evaluate` result."""
    out = {
        "reward_z": demo_z(measured["reward_mean"], measured["demo_reward_mean"], measured["demo_reward_std"]),
        "reward_mean": measured["reward_mean"], "demo_reward_mean": measured["demo_reward_mean"],
        "alignment": measured["alignment"], "wasserstein": measured["wasserstein"],
        "distinct_2": measured["distinct_2"], "demo_distinct_2": measured["demo_distinct_2"],
        "distinct_2_rel": relative(measured["distinct_2"], measured["demo_distinct_2"]),
        "repetition_4": measured["repetition_4"], "demo_repetition_4": measured["demo_repetition_4"],
        "naturalness": measured["naturalness"],
        "naturalness_z": demo_z(measured["naturalness"], measured["demo_naturalness"],
                                measured["demo_naturalness_std"]),
        "kl_to_ref": measured["kl_to_ref"],
    }
    if len(names) > 1:
        for n in names:
            out[f"{n}/reward_z"] = demo_z(measured[f"rewards/{n}/mean"], measured[f"rewards/{n}/demo_mean"],
                                          measured[f"rewards/{n}/demo_std"])
            out[f"{n}/alignment"] = measured[f"rewards/{n}/alignment"]
            out[f"{n}/wasserstein"] = measured[f"rewards/{n}/wasserstein"]
    return {PREFIX + k: float(v) for k, v in out.items()}


def over_optimized(metrics: dict, names: list[str], warn_sigma: float, warn_diversity_drop: float) -> str | None:
    """One line saying why the run looks over-optimized, or None."""
    zs = {n: metrics[f"{PREFIX}{n}/reward_z"] for n in names} if len(names) > 1 else \
        {names[0]: metrics[PREFIX + "reward_z"]}
    name, z = max(zs.items(), key=lambda item: item[1] if item[1] == item[1] else -math.inf)
    d2, nat = metrics[PREFIX + "distinct_2_rel"], metrics[PREFIX + "naturalness_z"]
    if not z > warn_sigma:
        return None
    symptoms = []
    if d2 <= -warn_diversity_drop:
        symptoms.append(f"distinct-2 {d2:+.0%} against theirs")
    if nat < -warn_sigma:
        symptoms.append(f"naturalness {nat:+.2f} std below theirs")
    if not symptoms:
        return None
    return (f"reward '{name}' is {z:+.2f} demonstration std above the demonstrations while "
            f"{' and '.join(symptoms)}: the policy looks over-optimized")


class CalibrationMonitor(TrainerCallback):
    """Log calibration against human demonstrations every ``every`` steps of a transformers/TRL trainer.

    Args:
        trainer: the trainer to watch (TRL's callbacks take it the same way); add the monitor with
            ``trainer.add_callback(monitor)``.
        prompts, demonstrations: held-out prompts (plain text; apply a chat template first) and one human
            demonstration each.
        rewards: what to score with: TRL-signature reward functions, rcfd rewards or an ``RCfDReward``
            (its base rewards are watched).
        every: optimizer steps between measurements (and one before the first step, with ``at_start``).
        samples_per_prompt: completions per prompt (more lower the noise of every figure).
        max_new_tokens, temperature: sampling; default to the trainer's ``max_completion_length`` and
            ``temperature`` (else 48 tokens at temperature 1).
        reference: the reference model for naturalness and KL. Default: the adapters disabled for a PEFT
            model, else the trainer's ``ref_model``, else a frozen copy of the model taken at train begin.
        warn_sigma, warn_diversity_drop: the over-optimization warning's thresholds.
        seed: seed of the monitor's own sampling stream.
    """

    def __init__(self, trainer, prompts, demonstrations, rewards, *, every: int = 10, samples_per_prompt: int = 1,
                 max_new_tokens: int | None = None, temperature: float | None = None, reference=None,
                 at_start: bool = True, warn_sigma: float = 1.0, warn_diversity_drop: float = 0.15,
                 batch_size: int = 32, micro_batch_size: int = 8, seed: int = 0):
        from ..config import Config

        prompts, demonstrations = [str(p) for p in prompts], [str(d) for d in demonstrations]
        if not prompts or len(prompts) != len(demonstrations):
            raise RcfdError(f"CalibrationMonitor: give as many demonstrations as prompts (got {len(prompts)} prompts, "
                            f"{len(demonstrations)} demonstrations), at least one of each")
        if every < 1 or samples_per_prompt < 1:
            raise RcfdError("CalibrationMonitor: every and samples_per_prompt must be at least 1")
        self.trainer = trainer
        self.prompts, self.demonstrations = prompts, demonstrations
        self.rewards = reward_stack(rewards)
        self.every, self.at_start, self.seed = every, at_start, seed
        self.reference = reference
        self.warn_sigma, self.warn_diversity_drop = warn_sigma, warn_diversity_drop
        self.warned = False
        args = trainer.args
        self.config = Config()
        gen = self.config.generation
        gen.max_new_tokens = max_new_tokens or getattr(args, "max_completion_length", None) or 48
        gen.temperature = temperature if temperature is not None else (getattr(args, "temperature", None) or 1.0)
        self.config.eval.samples_per_prompt = samples_per_prompt
        self.config.eval.batch_size = batch_size
        self.config.train.micro_batch_size = micro_batch_size
        self._demo_values = None
        self.history: list[dict] = []  # every measurement, with its step

    # ------------------------------------------------------------------ measuring
    def _model_and_reference(self):
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        if self.reference is None:
            if hasattr(model, "disable_adapter"):
                return model, None  # rcfd's reference_context disables the adapters
            self.reference = getattr(self.trainer, "ref_model", None) or _frozen_copy(model)
        return model, self.reference

    def measure(self) -> dict[str, float]:
        """Sample, score and return the ``calibration/…`` figures of the trainer's current model."""
        import datasets

        from ..eval.evaluate import evaluate

        model, reference = self._model_and_reference()
        tokenizer = self.trainer.processing_class
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps the tokenizer
        if self._demo_values is None:
            self._demo_values = self.rewards(self.prompts, self.demonstrations)
            check_finite(self._demo_values, "a demonstration reward")
        ds = datasets.Dataset.from_dict({"prompt": self.prompts, "demonstration": self.demonstrations})
        devices = [model.device] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            measured = evaluate(model, reference, tokenizer, ds, self.rewards, self._demo_values, self.config,
                                seed=self.seed, progress=False, curves=False)
        return monitor_metrics(measured, self.rewards.names)

    def _record(self, state) -> None:
        accelerator = self.trainer.accelerator
        if accelerator.is_main_process:  # one process samples and logs; the others wait for it
            metrics = self.measure()
            self.history.append({"step": state.global_step, **metrics})
            # transformers' Trainer.log, not the trainer's own override: TRL's GRPO/RLOO log() would flush
            # the training metrics it accumulates between its logging steps.
            Trainer.log(self.trainer, dict(metrics))
            reason = None if self.warned else over_optimized(metrics, self.rewards.names, self.warn_sigma,
                                                             self.warn_diversity_drop)
            if reason:
                self.warned = True
                logger.warning(f"rcfd: step {state.global_step}: {reason}")
        accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ trainer events
    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer.accelerator.is_main_process:
            self._model_and_reference()  # a frozen copy, if one is needed, is of the weights before training
        if self.at_start and state.global_step == 0:
            self._record(state)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self._record(state)


def _frozen_copy(model):
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference
