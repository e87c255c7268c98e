"""``rcfd demo``: the embedded default. Three runs with one budget and seed, evaluated with the base model.

Runs: ``beta0`` (maximize the reward), ``kl`` (R − β·KL, the paper's β 0.1 → 0.3 schedule) and
``rcfd`` (the preset's RCfD objective: ``rcfd-batch`` on use case 1, the paper's −(R − R_demo)² elsewhere;
``rcfd-paper`` forces the paper's, with one completion per prompt and the whitened advantage). Writes ``DIR/summary.json`` = {"runs": {NAME: metrics}}. Rerunning the
same command reads finished runs and the base model's metrics (``DIR/base``) back instead of redoing
them, and refuses a directory made with other settings.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

from .baselines import trainer_config
from .config import load_config
from .files import write_json
from .report import print_samples, print_table
from .sweep import base_metrics, run_or_load, run_overrides

RUNS = {
    "beta0": ["objective.name=reward"],
    "kl": ["objective.name=kl", "objective.beta=0.1", "objective.beta_end=0.3"],
    "rcfd": [],  # the preset's own RCfD objective and estimator
    "rcfd-paper": ["objective.name=rcfd", "train.num_generations=1", "train.advantage=whiten",
                   "train.advantage_scale=none"],  # the paper's: one completion per prompt, whitened
    # Baselines from demonstrations / preferences (rcfd.baselines), not RL objectives.
    "sft": [],
    "dpo": [],  # needs data.preference_source
    # Multi-reward tasks (quality + length): quality alone, and the weighted baseline's α sweep.
    # Quality alone is R_quality + 0·R_length: trained on the first reward, scored on all of them.
    "quality": ["objective.name=weighted", "objective.alpha=0"],
    **{f"alpha={a}": ["objective.name=weighted", f"objective.alpha={a}"] for a in ("0.003", "0.01", "0.03", "0.1")},
}

KEYS_DROPPED_FROM_SUMMARY = ("reward_samples", "demo_reward_samples")


def train_baseline(name: str):
    """The ``sft``/``dpo`` run in :func:`rcfd.sweep.run_or_load`'s shape (no checkpoints to resume)."""
    from . import baselines

    run = getattr(baselines, f"run_{name}")
    return lambda config, run_dir, *, resume, progress: (None, run(config, run_dir, progress=progress))


DEFAULT_RUNS = ("beta0", "kl", "rcfd")


def run_demo(out, *, config_path, seed: int = 0, steps: int | None = None, overrides=(), progress=True,
             runs=DEFAULT_RUNS) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    common = run_overrides(overrides, seed, steps)
    results = {}
    t_start = time.perf_counter()
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        from .errors import RcfdError

        raise RcfdError(f"unknown demo run {unknown[0]!r} in --runs; choose from {', '.join(RUNS)}")
    for name in runs:
        config = load_config(config_path, common + RUNS[name])
        baseline = name in ("sft", "dpo")  # trained by TRL; their run directory records trainer_config
        trainer, results[name], _ = run_or_load(config, out / name, progress,
                                                train=train_baseline(name) if baseline else None,
                                                saved_config=trainer_config(config) if baseline else None)
        if "base" not in results:
            results["base"] = base_metrics(config, out / "base", trainer, progress)
        del trainer
    ordered = {k: results[k] for k in ("base", *runs)}
    # A rerun that reads finished runs back keeps what the earlier invocations spent (time adds up over
    # an interrupted and resumed demo; memory is the largest peak).
    previous = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    summary = {
        "runs": {k: {f: v for f, v in r.items() if f not in KEYS_DROPPED_FROM_SUMMARY} for k, r in ordered.items()},
        "reward_samples": {k: r.get("reward_samples") for k, r in ordered.items()},
        "demo_reward_samples": ordered["base"].get("demo_reward_samples"),
        "seed": seed,
        "total_wall_seconds": previous.get("total_wall_seconds", 0.0) + time.perf_counter() - t_start,
        "peak_rss_mb": max(previous.get("peak_rss_mb", 0.0),
                           resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # Linux reports KiB
    }
    write_json(out / "summary.json", summary)
    print()
    print_table(ordered)
    print_samples(ordered)
    print(f"\nsummary written to {out / 'summary.json'} ({summary['total_wall_seconds']:.0f} s, "
          f"peak memory {summary['peak_rss_mb']:.0f} MB)")
    return summary
