"""rcfd: RL fine-tuning of language models with Reward Calibration from Demonstration (RCfD).

RCfD (Rita et al., ACL Findings 2024) maximizes −‖R(x, y) − R(x, y_demo)‖²: the policy aims at the
reward a human demonstration gets instead of the reward's maximum, which avoids reward
over-optimization without tuning a KL coefficient.

Quick start::

    from rcfd import load_config, run_training
    config = load_config("configs/tiny.yaml", ["objective.name=rcfd", "train.steps=4"])
    trainer, summary = run_training(config, "runs/tiny")
"""

__version__ = "0.1.0"

from .config import Config, load_config, make_config, packaged_config  # noqa: E402
from .errors import NonFiniteError, RcfdError  # noqa: E402
from .tasks import TASKS, Task, get_task  # noqa: E402


# Heavy modules (torch, transformers, peft) load on first use, so `import rcfd` and `rcfd --help` stay fast.
_LAZY = {
    **dict.fromkeys(("calibrated", "kl_penalized", "objective_values", "rcfd", "weighted", "whiten"),
                    "train.objectives"),
    **dict.fromkeys(("Trainer", "run_training"), "train.trainer"),
    **dict.fromkeys(("LogLikelihoodReward", "CallableReward", "RewardStack", "build_rewards"), "rewards"),
    "RCfDReward": "integrations.trl",
    "evaluate": "eval.evaluate",
    "run_sweep": "plans.sweep",
    "build_report": "report.html",
    **dict.fromkeys(("Components", "build_components", "load_trained"), "train.components"),
    "RunDir": "train.rundir",
    **dict.fromkeys(("run_sft", "run_dpo"), "train.baselines"),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'rcfd' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


__all__ = [
    "Config", "load_config", "make_config", "packaged_config", "RCfDReward", "RcfdError", "NonFiniteError",
    "calibrated", "kl_penalized", "objective_values", "rcfd", "weighted", "whiten", "TASKS", "Task", "get_task",
    "run_sweep", "build_report", "run_sft", "run_dpo", "Components", "build_components", "load_trained", "RunDir",
    "Trainer", "run_training", "LogLikelihoodReward", "CallableReward", "RewardStack", "build_rewards", "evaluate",
]
