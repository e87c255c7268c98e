"""Names of the per-step training metrics (``metrics.jsonl`` and the trackers), defined once.

Namespaced like TRL: ``train/…`` for the update, ``completions/…`` for what was sampled,
``rewards/{name}/…`` per reward, ``eval/…`` for the quick held-out evaluation of ``train.eval_every``.
docs/reference/metrics.md gives each one's formula; the held-out ``summary.json`` fields are listed
there too. Run directories written before the namespaces read back through :func:`upgrade_record`.
"""

from __future__ import annotations

STEP = "step"
REWARD = "train/reward"  # first reward, batch mean
REWARD_STD = "train/reward_std"
OBJECTIVE = "train/objective"
KL = "train/kl"
BETA = "train/beta"
LEARNING_RATE = "train/learning_rate"
LOSS = "train/loss"
CLIP_RATIO = "train/clip_ratio"
GRAD_NORM = "train/grad_norm"
SKIPPED = "train/skipped_samples"
MEAN_LENGTH = "completions/mean_length"
DISTINCT_2 = "completions/distinct_2"


def reward_mean(name: str) -> str:
    return f"rewards/{name}/mean"


def reward_demo_mean(name: str) -> str:
    return f"rewards/{name}/demo_mean"


EVAL_REWARD_Z = "eval/reward_z"
EVAL_ALIGNMENT = "eval/alignment"
EVAL_DISTINCT_2_REL = "eval/distinct_2_rel"
EVAL_NATURALNESS = "eval/naturalness"
EVAL_KL = "eval/kl_to_ref"
EVAL_CALIBRATION_DISTANCE = "eval/calibration_distance"  # RMS over rewards of the demo-std gaps

# metrics.jsonl names before the namespaces -> now
LEGACY = {"reward": REWARD, "reward_std": REWARD_STD, "objective": OBJECTIVE, "kl": KL, "beta": BETA,
          "learning_rate": LEARNING_RATE, "loss": LOSS, "clip_ratio": CLIP_RATIO, "grad_norm": GRAD_NORM,
          "skipped_samples": SKIPPED, "distinct_2": DISTINCT_2}


def upgrade_record(record: dict) -> dict:
    """A metrics.jsonl record under today's names (records already using them pass unchanged)."""
    return {LEGACY.get(k, k): v for k, v in record.items()}
