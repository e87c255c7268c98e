"""What a training step that fails leaves behind.

A step that fails before its first optimizer step (a reward that raised or was not finite, a loss not
finite on the first minibatch) checkpoints the boundary it began at, random state included, so that
``--resume`` after the fix is the run that never failed. A step that already moved the weights saves
nothing: the newest checkpoint stays the last good state. With several processes only a failure that
every process saw together (a non-finite reward or loss) saves, since a lone process cannot meet the
others at the checkpoint's barrier.
"""

from __future__ import annotations

import copy
import sys

from ..errors import NonFiniteError
from . import checkpoint as ckpt


class StepBoundary:
    """What a step changes before its first optimizer step, as it stood when the step began."""

    def __init__(self, trainer):
        self.trainer = trainer
        trainer.weights_moved = False
        self.rng = ckpt.rng_state()
        self.skipped = trainer.skipped
        self.objective = copy.deepcopy(trainer.objective.state_dict())

    def save_after_failure(self, exc: Exception) -> None:
        """Checkpoint this boundary if the failed step left it recoverable (see the module docstring),
        and say on stderr what ``--resume`` will continue from."""
        t = self.trainer
        where = f"rcfd: step {t.step_idx + 1} failed"
        if t.weights_moved or (t.procs.world > 1 and not isinstance(exc, NonFiniteError)):
            if t.procs.is_main:
                print(f"{where} after it changed the weights; nothing saved: --resume continues from the last "
                      "checkpoint", file=sys.stderr)
            return
        if not ckpt.is_complete(t.run.checkpoints / f"step-{t.step_idx:06d}"):  # never rewrite a good one
            now = ckpt.rng_state()
            ckpt.set_rng_state(self.rng)
            t.skipped = self.skipped
            t.objective.load_state_dict(self.objective)
            try:
                t.save()
            finally:
                ckpt.set_rng_state(now)
        if t.procs.is_main:  # said once the checkpoint exists, so a save that fails does not claim it
            print(f"{where} before it changed the weights; the run is checkpointed at step {t.step_idx}: "
                  f"continue it with `rcfd train --resume {t.out}` once fixed", file=sys.stderr)
