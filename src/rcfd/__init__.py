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
from .train.objectives import calibrated, kl_penalized, objective_values, rcfd, weighted, whiten  # noqa: E402
from .tasks import TASKS, Task, get_task  # noqa: E402


def __getattr__(name):
    # Heavy modules (transformers, peft) load on first use so `import rcfd` stays fast.
    if name in ("Trainer", "run_training"):
        from .train import trainer

        return getattr(trainer, name)
    if name in ("LogLikelihoodReward", "CallableReward", "RewardStack", "build_rewards"):
        from . import rewards

        return getattr(rewards, name)
    if name == "RCfDReward":
        from .integrations.trl import RCfDReward

        return RCfDReward
    if name == "evaluate":
        from .eval.evaluate import evaluate

        return evaluate
    if name == "run_sweep":
        from .plans.sweep import run_sweep

        return run_sweep
    if name == "build_report":
        from .report.html import build_report

        return build_report
    if name in ("Components", "build_components", "load_trained"):
        from .train import components

        return getattr(components, name)
    if name == "RunDir":
        from .train.rundir import RunDir

        return RunDir
    if name in ("run_sft", "run_dpo"):
        from .train import baselines

        return getattr(baselines, name)
    raise AttributeError(f"module 'rcfd' has no attribute {name!r}")


__all__ = [
    "Config", "load_config", "make_config", "packaged_config", "RCfDReward", "RcfdError", "NonFiniteError",
    "calibrated", "kl_penalized", "objective_values", "rcfd", "weighted", "whiten", "TASKS", "Task", "get_task",
    "run_sweep", "build_report", "run_sft", "run_dpo", "Components", "build_components", "load_trained", "RunDir",
    "Trainer", "run_training", "LogLikelihoodReward", "CallableReward", "RewardStack", "build_rewards", "evaluate",
]
