"""``rcfd demo``: the embedded default. Three runs with one budget and seed, evaluated with the base model.

Runs: ``beta0`` (maximize the reward), ``kl`` (R − β·KL, the paper's β 0.1 → 0.3 schedule) and
``rcfd`` (−(R − R_demo)²). Writes ``DIR/summary.json`` = {"runs": {NAME: metrics}}.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

from .config import load_config
from .files import write_json
from .report import print_samples, print_table
from .trainer import run_training

RUNS = {
    "beta0": ["objective.name=reward"],
    "kl": ["objective.name=kl", "objective.beta=0.1", "objective.beta_end=0.3"],
    "rcfd": ["objective.name=rcfd"],
}

KEYS_DROPPED_FROM_SUMMARY = ("reward_samples",)


def run_demo(out, *, config_path, seed: int = 0, steps: int | None = None, overrides=(), progress=True,
             runs=tuple(RUNS)) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    common = list(overrides) + [f"train.seed={seed}"] + ([f"train.steps={steps}"] if steps is not None else [])
    results = {}
    t_start = time.perf_counter()
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        from .errors import RcfdError

        raise RcfdError(f"unknown demo run {unknown[0]!r} in --runs; choose from {', '.join(RUNS)}")
    for name in runs:
        extra = RUNS[name]
        config = load_config(config_path, common + extra)
        run_dir = out / name
        resume = (run_dir / "metrics.jsonl").exists()
        if (run_dir / "summary.json").exists() and resume:
            import json

            summary = json.loads((run_dir / "summary.json").read_text())
            trainer = None
        else:
            trainer, summary = run_training(config, run_dir, resume=resume, progress=progress)
        results[name] = summary
        if "base" not in results:
            if trainer is None:
                from .trainer import Trainer

                trainer = Trainer(config, run_dir, resume=True, progress=progress)
            t0 = time.perf_counter()
            base = trainer.evaluate(base=True)
            base.update(objective="none (base model)", wall_seconds=time.perf_counter() - t0)
            results["base"] = base
        del trainer
    ordered = {k: results[k] for k in ("base", *runs)}
    summary = {
        "runs": {k: {f: v for f, v in r.items() if f not in KEYS_DROPPED_FROM_SUMMARY} for k, r in ordered.items()},
        "reward_samples": {k: r.get("reward_samples") for k, r in ordered.items()},
        "seed": seed,
        "total_wall_seconds": time.perf_counter() - t_start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
    }
    write_json(out / "summary.json", summary)
    print()
    print_table(ordered)
    print_samples(ordered)
    print(f"\nsummary written to {out / 'summary.json'} ({summary['total_wall_seconds']:.0f} s, "
          f"peak memory {summary['peak_rss_mb']:.0f} MB)")
    return summary
