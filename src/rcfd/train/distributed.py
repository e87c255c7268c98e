"""What the trainer needs from several processes (``accelerate launch --num_processes N``).

Each process takes a slice of every step's prompts, generates and scores them; the advantage
baseline (batch mean and std) and the logged metrics use the whole batch across processes; gradients
are averaged before each optimizer step; only the main process writes files. With one process every
method is the identity, so single-process runs compute exactly what they did before.
"""

from __future__ import annotations

import torch

from ..errors import RcfdError


class Processes:
    def __init__(self):
        from accelerate import PartialState

        # PartialState sets up torch.distributed from the launcher's environment (gloo on CPU).
        self.state = PartialState(cpu=True)
        self.rank = self.state.process_index
        self.world = self.state.num_processes
        self.is_main = self.state.is_main_process

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return values
        values = values.clone()
        torch.distributed.all_reduce(values)
        return values

    def moments(self, x: torch.Tensor) -> tuple[float, float]:
        """Mean and population std of ``x`` over the whole batch (every process's rows)."""
        n, total, squares = self.sum(torch.stack([torch.tensor(float(len(x)), device="cpu"), x.sum(), (x * x).sum()])).tolist()
        mean = total / n
        return mean, max(squares / n - mean * mean, 0.0) ** 0.5

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on one of them (so all stop together)."""
        return bool(self.sum(torch.tensor([float(flag)], device="cpu"))[0] > 0) if self.world > 1 else flag

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Rows of every process, concatenated in rank order (any number of rows each)."""
        if self.world == 1:
            return values
        from accelerate.utils import gather_object

        parts = gather_object([values.tolist()])  # one list per process
        return torch.cat([torch.tensor(p, dtype=values.dtype, device="cpu").reshape(-1, *values.shape[1:]) for p in parts])

    def gather_objects(self, items: list) -> list:
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def average_gradients(self, params) -> None:
        """Mean of each gradient over processes (the loss is a per-process mean of equal shares)."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad /= self.world

    def wait(self) -> None:
        if self.world > 1:
            self.state.wait_for_everyone()

    def close(self) -> None:
        """Leave together and tear the process group down: a process that exits with the gloo group still up
        can abort in gloo's threads ("terminate called without an active exception")."""
        self.wait()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def check_world(train, world: int) -> None:
    """Every process gets whole prompts and every minibatch whole groups."""
    prompts_per_step = train.batch_size // train.num_generations
    if prompts_per_step % world:
        raise RcfdError(f"the {prompts_per_step} prompts of a step (train.batch_size {train.batch_size} / "
                        f"train.num_generations {train.num_generations}) must be divisible by the number of "
                        f"processes ({world}); change one of them")
    local_minibatch = train.batch_size // world // train.num_minibatches
    if train.num_generations > 1 and local_minibatch % train.num_generations:
        raise RcfdError(f"with {world} processes a minibatch holds {local_minibatch} rollouts per process, "
                        f"which splits groups of train.num_generations ({train.num_generations}); lower "
                        f"train.num_minibatches or raise train.batch_size")
