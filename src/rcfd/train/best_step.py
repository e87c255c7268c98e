"""Weights kept beside the trained ones, for the final policy: a tail average (``train.average_weights``;
Polyak & Juditsky 1992) or the best-calibrated step (``train.load_best_model_at_end``).

Near its optimum a policy trained with noisy gradient steps at a fixed rate random-walks around it
(Adam takes full-size steps of noise). The mean of the iterates over the last part of the run sits
closer to the optimum than any one of them, at no cost in rollouts. Where an objective's optimum is
not the target (the paper's per-sample loss pays for a narrower reward spread, so a run can pass
through the demonstrations' point and settle past it), the step measured closest to the target on
held-out prompts is the one to keep.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import trainable_state

AVERAGE_FILE = "weight_average.safetensors"
BEST_FILE = "best_weights.safetensors"


def trainable_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def copy_into(model, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].dtype))


def save_weights(weights: dict[str, torch.Tensor], path) -> Path:
    from safetensors.torch import save_file

    from ..files import replaced_atomically

    with replaced_atomically(path) as tmp:
        save_file({n: v.contiguous() for n, v in weights.items()}, tmp)
    return Path(path)


def load_weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


class WeightAverage:
    """Running mean of the trainable weights after each of the last ``round(fraction × steps)`` RL steps."""

    def __init__(self, steps: int, fraction: float):
        self.first_step = steps - round(fraction * steps) + 1  # fraction 0: after the last step, never
        self.count = 0
        self.mean: dict[str, torch.Tensor] | None = None

    def update(self, step: int, model) -> None:
        """Add the weights after RL step ``step`` (1-based) if it is one of the averaged steps."""
        if step < self.first_step:
            return
        trainable = trainable_weights(model)
        self.count += 1
        if self.mean is None:
            self.mean = {n: p.clone().float() for n, p in trainable.items()}
            return
        with torch.no_grad():
            for name, value in trainable.items():
                self.mean[name] += (value.float() - self.mean[name]) / self.count

    def apply(self, model) -> None:
        """Copy the mean into ``model`` (nothing when no step was averaged)."""
        if self.count:
            copy_into(model, self.mean)

    def save(self, path) -> Path:
        return save_weights(self.mean, path)

    def load(self, path, count: int) -> None:
        """Restore the mean of a checkpoint (``count`` steps averaged so far; 0: none)."""
        self.count = count
        self.mean = load_weights(path) if count else None


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
        if step == 0:
            self.start_distance = distance
        if not distance < self.distance:  # NaN never wins
            return False
        self.step, self.distance = step, distance
        self.weights = trainable_state(model)
        return True

    def apply(self, model) -> None:
        """Copy the kept weights into ``model`` (nothing when no step was offered)."""
        if self.weights is not None:
            copy_into(model, self.weights)

    def state(self) -> dict:
        return {"best_step": self.step, "best_distance": self.distance if self.step is not None else None,
                "start_distance": self.start_distance}

    def save(self, path) -> Path:
        return save_weights(self.weights, path)

    def load(self, path, state: dict) -> None:
        """Restore what a checkpoint kept (its :meth:`state` and the weights file)."""
        self.step, self.start_distance = state.get("best_step"), state.get("start_distance")
        self.distance = state["best_distance"] if self.step is not None else float("inf")
        self.weights = load_weights(path) if self.step is not None else None
