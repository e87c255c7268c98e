"""Experiment trackers (TensorBoard, Weights & Biases) through accelerate's tracker classes.

``metrics.jsonl`` stays the record of a run; trackers get the same per-step values for dashboards.
Only the main process logs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import RcfdError

TRACKERS = ("tensorboard", "wandb")


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


def build_trackers(names, out_dir: Path, run_name: str, config: dict) -> list:
    trackers = []
    for name in names:
        if name == "tensorboard":
            if not (importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")):
                raise RcfdError("train.report_to lists 'tensorboard' but it is not installed; "
                                "run `pip install 'rcfd[tracking]'` or remove it from train.report_to")
            from accelerate.tracking import TensorBoardTracker

            tracker = TensorBoardTracker(run_name, Path(out_dir) / "tensorboard")
        elif name == "wandb":
            if not importlib.util.find_spec("wandb"):
                raise RcfdError("train.report_to lists 'wandb' but it is not installed; "
                                "run `pip install wandb` (and `wandb login`) or remove it from train.report_to")
            from accelerate.tracking import WandBTracker

            tracker = WandBTracker(run_name, project="rcfd", dir=str(out_dir))
        else:
            raise RcfdError(f"unknown tracker '{name}' in train.report_to; choose from {', '.join(TRACKERS)}")
        tracker.start()
        tracker.store_init_configuration(_flat(config))
        trackers.append(tracker)
    return trackers
