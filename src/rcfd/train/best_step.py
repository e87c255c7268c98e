"""The quick evaluation during training (``train.eval_every``) and the best-calibrated step
(``train.load_best_model_at_end``, an extension; the paper keeps the last step).

Where an objective's optimum is not the target (the paper's per-sample loss pays for a narrower reward
spread, so a run can pass through the demonstrations' point and settle past it), the step measured
closest to the target on validation prompts is the one to keep.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..data import validation_dataset
from ..errors import RcfdError
from ..eval import metric_names as N
from ..eval import metrics as M
from ..eval.evaluate import evaluate
from ..files import replaced_atomically
from ..rewards.demo_cache import demo_rewards
from .checkpoint import trainable_state

BEST_FILE = "best_weights.safetensors"


class CalibrationProbe:
    """``eval/…`` metrics of the current policy on the validation split (``data.num_val``) or else the
    first ``train.eval_prompts`` held-out prompts (one completion each, a fixed seed): where its reward
    distribution stands against the demonstrations'. Sampled under a forked RNG, so training draws the
    same numbers with or without it."""

    def __init__(self, components, config):
        self.components, self.config = components, config
        self.dataset = self.demo_values = None  # built on first use

    def __call__(self, policy) -> dict:
        c, parts = self.config, self.components
        if self.dataset is None:
            self.dataset = (validation_dataset(c.data, parts.tokenizer) if c.data.num_val else
                            parts.eval_ds.select(range(min(c.train.eval_prompts, len(parts.eval_ds)))))
            self.demo_values = demo_rewards(parts.rewards, self.dataset, parts.tokenizer, c.generation.max_new_tokens,
                                            desc="demonstration rewards (eval_every)", progress=False)
        with torch.random.fork_rng():
            m = evaluate(policy, parts.reference, parts.tokenizer, self.dataset, parts.rewards, self.demo_values, c,
                         seed=c.train.seed, progress=False, samples_per_prompt=1, curves=False,
                         reference_metrics=not c.train.load_best_model_at_end)
        names = parts.rewards.names
        gaps = {n: M.demo_z(m[f"rewards/{n}/mean"], m[f"rewards/{n}/demo_mean"], m[f"rewards/{n}/demo_std"])
                for n in names}
        out = {N.EVAL_REWARD_Z: gaps[names[0]], N.EVAL_ALIGNMENT: m["alignment"],
               N.EVAL_DISTINCT_2_REL: M.relative(m["distinct_2"], m["demo_distinct_2"]),
               N.EVAL_CALIBRATION_DISTANCE: math.sqrt(sum(g * g for g in gaps.values()) / len(gaps))}
        if "kl_to_ref" in m:
            out.update({N.EVAL_NATURALNESS: m["naturalness"], N.EVAL_KL: m["kl_to_ref"]})
        if len(gaps) > 1:  # each reward's own curve (eval/reward_z is the first reward's)
            out.update({f"eval/{name}/reward_z": gap for name, gap in gaps.items()})
        return out


def copy_into(model, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].dtype))


class BestWeights:
    """The trainable weights of the step with the smallest calibration distance offered so far (ties: the
    earlier step), for ``train.load_best_model_at_end``."""

    def __init__(self):
        self.step: int | None = None
        self.distance = float("inf")
        self.start_distance: float | None = None  # step 0's: the base model's
        self.weights: dict[str, torch.Tensor] | None = None

    def offer(self, step: int, distance: float, model) -> bool:
        """Keep ``model``'s weights after ``step`` if ``distance`` beats the best so far; say whether it did."""
        if not math.isfinite(distance):
            raise RcfdError(f"eval/calibration_distance is {distance} at step {step}: a reward is not finite, or "
                            "its demonstrations' std on the validation prompts is 0 (e.g. length with demonstrations "
                            "all of one length), so steps cannot be ranked; drop that reward or set "
                            "train.load_best_model_at_end=false")
        if step == 0:
            self.start_distance = distance
        if not distance < self.distance:
            return False
        self.step, self.distance = step, distance
        self.weights = trainable_state(model)
        return True

    def apply(self, model) -> None:
        """Copy the kept weights into ``model`` (nothing when no step was offered)."""
        if self.weights is not None:
            copy_into(model, self.weights)

    def state_dict(self) -> dict:
        return {"best_step": self.step, "best_distance": self.distance if self.step is not None else None,
                "start_distance": self.start_distance}

    def save(self, path) -> Path:
        from safetensors.torch import save_file

        with replaced_atomically(path) as tmp:
            save_file({n: v.contiguous() for n, v in self.weights.items()}, tmp)
        return Path(path)

    def load(self, path, state: dict) -> None:
        """Restore what a checkpoint kept (its :meth:`state_dict` and the weights file)."""
        from safetensors.torch import load_file

        self.step, self.start_distance = state.get("best_step"), state.get("start_distance")
        self.distance = state["best_distance"] if self.step is not None else float("inf")
        self.weights = load_file(str(path)) if self.step is not None else None
