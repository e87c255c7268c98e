"""Tail averaging of the trained weights (``train.average_weights``; Polyak & Juditsky 1992).

Near its optimum a policy trained with noisy gradient steps at a fixed rate random-walks around it
(Adam takes full-size steps of noise). The mean of the iterates over the last part of the run sits
closer to the optimum than any one of them, at no cost in rollouts.
"""

from __future__ import annotations

from pathlib import Path

import torch

AVERAGE_FILE = "weight_average.safetensors"


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
        trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        self.count += 1
        if self.mean is None:
            self.mean = {n: p.clone().float() for n, p in trainable.items()}
            return
        with torch.no_grad():
            for name, value in trainable.items():
                self.mean[name] += (value.float() - self.mean[name]) / self.count

    def apply(self, model) -> None:
        """Copy the mean into ``model`` (nothing when no step was averaged)."""
        if not self.count:
            return
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.mean.items():
                params[name].copy_(value.to(params[name].dtype))

    def save(self, path) -> Path:
        from safetensors.torch import save_file

        from .files import replaced_atomically

        with replaced_atomically(path) as tmp:
            save_file({n: v.contiguous() for n, v in self.mean.items()}, tmp)
        return Path(path)

    def load(self, path, count: int) -> None:
        """Restore the mean of a checkpoint (``count`` steps averaged so far; 0: none)."""
        from safetensors.torch import load_file

        self.count = count
        self.mean = load_file(str(path)) if count else None
