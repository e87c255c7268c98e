"""Experiment trackers (TensorBoard, Weights & Biases) through accelerate's tracker classes.

``metrics.jsonl`` stays the record of a run; trackers get the same per-step values for dashboards.
Only the main process logs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import RcfdError
from ..registry import TRACKERS



def _flat(tree: dict, prefix: str = "") -> dict:
    """Nested config → {"train.learning_rate": 0.001, ...} with values a dashboard accepts."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def _tensorboard(run_name: str, out_dir: Path):
    if not (importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")):
        raise RcfdError("train.report_to lists 'tensorboard' but it is not installed; "
                        "run `pip install 'rcfd[tracking]'` or remove it from train.report_to")
    from accelerate.tracking import TensorBoardTracker

    return TensorBoardTracker(run_name, Path(out_dir) / "tensorboard")


def _wandb(run_name: str, out_dir: Path):
    if not importlib.util.find_spec("wandb"):
        raise RcfdError("train.report_to lists 'wandb' but it is not installed; "
                        "run `pip install wandb` (and `wandb login`) or remove it from train.report_to")
    from accelerate.tracking import WandBTracker

    return WandBTracker(run_name, project="rcfd", dir=str(out_dir))


BUILDERS = {"tensorboard": _tensorboard, "wandb": _wandb}  # keyed by rcfd.registry.TRACKERS


def build_trackers(names, out_dir: Path, run_name: str, config: dict) -> list:
    trackers = []
    for name in names:
        TRACKERS.check(name)
        tracker = BUILDERS[name](run_name, out_dir)
        tracker.start()
        tracker.store_init_configuration(_flat(config))
        trackers.append(tracker)
    return trackers
