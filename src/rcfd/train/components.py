"""What a run is made of, built apart from the loop that trains it.

:func:`build_components` turns a config into the policy, its reference, the tokenizer, the two data
splits, the rewards and (for objectives that need them) the training demonstrations' rewards.
:func:`load_trained` does the same for a finished or interrupted run directory, with the trained
weights (``final/``, else the newest checkpoint) in the policy: what ``rcfd eval``, reports and scripts
use, so that reading a run never writes into it.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import reward_columns
from ..errors import RcfdError
from .rundir import RunDir


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Components:
    policy: torch.nn.Module
    tokenizer: object
    reference: torch.nn.Module | None  # None with LoRA: the policy with its adapters disabled
    train_ds: object  # datasets.Dataset: prompt, demonstration, long_demonstration
    eval_ds: object
    rewards: object  # rcfd.rewards.RewardStack
    demo_train: torch.Tensor | None = None  # R(x, y_demo) [N, K] of the training prompts


def build_components(config, *, rank: int = 0, world: int = 1, progress: bool = True,
                     demo_rewards_from: Path | None = None, with_demo_rewards: bool | None = None) -> Components:
    """Seed, then load everything a run of ``config`` needs, in the order that fixes its random numbers.

    ``demo_rewards_from`` is a saved copy of the demonstration rewards (a resumed run's own);
    ``with_demo_rewards`` defaults to whether the objective trains towards them."""
    from ..data import build_datasets
    from ..models import load_policy
    from ..rewards import build_rewards
    from .device import resolve_device
    from .objectives import objective_class
    from .targets import training_targets

    c = config
    if c.train.threads:
        torch.set_num_threads(c.train.threads)
    seed_everything(c.train.seed)
    device = resolve_device(c.model.device, int(os.environ.get("LOCAL_RANK", rank)))
    policy, tokenizer, reference = load_policy(c.model, device)
    if world > 1:  # same initial weights everywhere, different sampling noise per process
        torch.manual_seed(c.train.seed + 1_000_003 * rank)
    train_ds, eval_ds = build_datasets(c.data, tokenizer)
    rewards = build_rewards(reward_columns(c), policy=policy, reference=reference, tokenizer=tokenizer,
                            model_id=c.model.name, config=c.reward, progress=progress, device=device)
    components = Components(policy, tokenizer, reference, train_ds, eval_ds, rewards)
    wanted = objective_class(c.objective.name).needs_targets if with_demo_rewards is None else with_demo_rewards
    if wanted and demo_rewards_from is not None and Path(demo_rewards_from).exists():
        components.demo_train = torch.load(demo_rewards_from, weights_only=True)  # a tensor, never code
    elif wanted:  # R(x, y_demo), or a target model's prediction of it (objective.target)
        components.demo_train = training_targets(c, components, progress=progress)
    return components


def load_weights(policy, run: RunDir) -> str:
    """Put the run's trained weights into ``policy`` (built from the run's config); return where they
    came from: ``final/`` of a finished run, else the newest complete checkpoint of an interrupted one."""
    from safetensors.torch import load_file

    from .checkpoint import load_weights as load_checkpoint_weights

    final = run.final
    if (final / "adapter_model.safetensors").exists():
        from peft import set_peft_model_state_dict

        if not hasattr(policy, "peft_config"):
            raise RcfdError(f"'{final}' holds a LoRA adapter but the run's config has model.lora=false")
        result = set_peft_model_state_dict(policy, load_file(str(final / "adapter_model.safetensors")))
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise RcfdError(f"'{final}' does not match the run's model (e.g. '{unexpected[0]}')")
        return str(final)
    if (final / "model.safetensors").exists():
        weights = load_file(str(final / "model.safetensors"))
        missing, unexpected = policy.load_state_dict(weights, strict=False)
        tied = {"lm_head.weight"} if getattr(policy.config, "tie_word_embeddings", False) else set()
        if unexpected or set(missing) - tied:
            raise RcfdError(f"'{final}' does not match the run's model "
                            f"(e.g. '{(unexpected or sorted(set(missing) - tied))[0]}')")
        return str(final)
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        raise RcfdError(f"'{run.path}' has neither {final.name}/ nor a complete checkpoint: nothing was trained "
                        f"yet; continue it with `rcfd train --resume {run.path}`, or evaluate the base model "
                        f"with --base")
    load_checkpoint_weights(checkpoint, policy)
    return str(checkpoint)


@dataclass
class TrainedRun:
    config: object
    components: Components
    weights: str  # where the trained weights came from (final/ or a checkpoint)


def load_trained(run_dir, *, progress: bool = True, base: bool = False) -> TrainedRun:
    """A run directory's config and components, with the trained policy unless ``base``. Reads only."""
    run = RunDir(run_dir)
    config = run.read_config()
    components = build_components(config, progress=progress, with_demo_rewards=False)
    weights = "base model" if base else load_weights(components.policy, run)
    components.policy.eval()
    return TrainedRun(config, components, weights)
