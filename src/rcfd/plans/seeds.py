"""``rcfd demo --seeds 0-4``: the demo on several seeds, and what holds across them.

Each seed's demo goes to ``DIR/seed-N`` (a finished one is read back, an interrupted one resumes).
``DIR/seeds.json`` then holds, for every run, each calibration figure per seed with its mean and a 95%
bootstrap interval over seeds, and, for each of the task's checks (:data:`CHECKS`), how many seeds pass
it. A finding that holds on one seed of five is an anecdote; this table says which it is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import RcfdError
from ..files import write_json
from ..eval.metrics import demo_z, relative

# Figures per run, from a run's held-out metrics (summary.json).
FIGURES: dict[str, Callable[[dict], float]] = {
    "reward_z": lambda m: demo_z(m["reward_mean"], m["demo_reward_mean"], m["demo_reward_std"]),
    "alignment": lambda m: m["alignment"],
    "distinct_2_rel": lambda m: relative(m["distinct_2"], m["demo_distinct_2"]),
    "repetition_4": lambda m: m["repetition_4"],
    "naturalness_z": lambda m: demo_z(m["naturalness"], m["demo_naturalness"], m["demo_naturalness_std"])
    if "naturalness" in m else math.nan,
    "length_rel": lambda m: relative(m["mean_length"], m["demo_mean_length"]),
    "kl_to_ref": lambda m: m.get("kl_to_ref", math.nan),
}
FIGURE_LABELS = {"reward_z": "reward vs demos (σ)", "alignment": "alignment A", "distinct_2_rel": "distinct-2 vs demos",
                 "repetition_4": "rep-4", "naturalness_z": "naturalness vs demos (σ)",
                 "length_rel": "length vs demos", "kl_to_ref": "KL(ref)"}


@dataclass(frozen=True)
class Check:
    run: str
    text: str
    passes: Callable[[dict], bool]  # of the run's held-out metrics


def _over_optimized_use_case_1(m: dict) -> bool:
    less_diverse = FIGURES["distinct_2_rel"](m) <= -0.15 or (
        m["repetition_4"] >= 2 * m["demo_repetition_4"] and m["repetition_4"] >= 0.02)
    return FIGURES["reward_z"](m) > 1 and less_diverse


def _over_optimized_reviews(m: dict) -> bool:
    unnatural = FIGURES["naturalness_z"](m) < -1 or FIGURES["distinct_2_rel"](m) <= -0.30
    return FIGURES["reward_z"](m) > 1 and unnatural


def _reward_z(name: str, m: dict) -> float:
    return demo_z(m[f"rewards/{name}/mean"], m[f"rewards/{name}/demo_mean"], m[f"rewards/{name}/demo_std"])


CALIBRATED = [
    Check("rcfd", "rcfd within 0.25 demo std of the demonstrations' mean reward", lambda m: abs(FIGURES["reward_z"](m)) <= 0.25),
    Check("rcfd", "rcfd alignment A ≤ 0.15", lambda m: m["alignment"] <= 0.15),
]
# The checks README.md states for each task's demo (thresholds as the issues set them).
CHECKS: dict[str, list[Check]] = {
    "wiki-continuation": [
        Check("beta0", "beta0 > 1 demo std above the demonstrations, distinct-2 ≥ 15% lower "
                       "(or repetition_4 ≥ 2× theirs and ≥ 0.02)", _over_optimized_use_case_1),
        *CALIBRATED,
        Check("rcfd", "rcfd distinct-2 within 10% of the demonstrations'", lambda m: abs(FIGURES["distinct_2_rel"](m)) <= 0.10),
    ],
    "positive-reviews": [
        Check("beta0", "beta0 > 1 demo std above the demonstrations, naturalness > 1 demo std below theirs "
                       "(or distinct-2 ≥ 30% lower)", _over_optimized_reviews),
        *CALIBRATED,
        Check("rcfd", "rcfd naturalness within 0.5 demo std of the demonstrations'",
              lambda m: abs(FIGURES["naturalness_z"](m)) <= 0.5),
    ],
    "wiki-description": [
        Check("quality", "quality-only run drifts in length (> 20% from the demonstrations')",
              lambda m: abs(FIGURES["length_rel"](m)) > 0.20),
        Check("rcfd", "rcfd length within 20% of the demonstrations'", lambda m: abs(FIGURES["length_rel"](m)) <= 0.20),
        Check("rcfd", "rcfd quality within 0.25 demo std of the demonstrations'",
              lambda m: abs(_reward_z("similarity", m)) <= 0.25),
    ],
}


def parse_seeds(spec: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,5' and '0-2,7' work too; each seed once, in the given order."""
    seeds: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
            raise RcfdError(f"--seeds '{spec}' is not a list or range of seeds; write e.g. --seeds 0-4 or --seeds 0,2,5")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        seeds += [s for s in range(lo, hi + 1) if s not in seeds]
    return seeds


def bootstrap_interval(values, level: float = 0.95, draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over ``values`` (here: one value per seed)."""
    x = np.asarray([v for v in values if v == v], dtype=np.float64)  # nan: figure missing for that seed
    if x.size == 0:
        return math.nan, math.nan
    means = x[np.random.default_rng(seed).integers(0, x.size, (draws, x.size))].mean(1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def aggregate(per_seed: dict[int, dict], checks: list[Check]) -> dict:
    """``per_seed`` = {seed: {run name: held-out metrics}} -> the seeds.json record (without settings)."""
    seeds = sorted(per_seed)
    run_names = [r for r in next(iter(per_seed.values())) if r != "base"] if per_seed else []
    runs = {}
    for run in ["base", *run_names]:
        figures = {}
        for key, figure in FIGURES.items():
            values = {s: _safe(figure, per_seed[s].get(run)) for s in seeds}
            finite = [v for v in values.values() if v == v]
            low, high = bootstrap_interval(finite)
            figures[key] = {"mean": float(np.mean(finite)) if finite else math.nan, "ci95": [low, high],
                            "per_seed": {str(s): v for s, v in values.items()}}
        runs[run] = figures
    results = []
    for check in checks:
        if check.run not in run_names:
            continue
        per = {str(s): bool(check.passes(per_seed[s][check.run])) for s in seeds}
        results.append({"run": check.run, "check": check.text, "passed": sum(per.values()), "of": len(seeds),
                        "per_seed": per})
    all_pass = {str(s): all(r["per_seed"][str(s)] for r in results) for s in seeds}
    return {"seeds": seeds, "runs": runs, "checks": results, "all_checks": all_pass,
            "seeds_passing_all": sum(all_pass.values())}


def _safe(figure, metrics: dict | None) -> float:
    if metrics is None:
        return math.nan
    try:
        return float(figure(metrics))
    except (KeyError, ZeroDivisionError, TypeError):
        return math.nan


def format_seeds_table(record: dict) -> str:
    """The terminal table: per run, each figure's mean [95% interval] over seeds; then each check's count."""
    lines = [f"across seeds {', '.join(map(str, record['seeds']))} (mean [95% bootstrap interval])"]
    keys = ["reward_z", "alignment", "distinct_2_rel", "naturalness_z", "kl_to_ref"]
    header = ["run"] + [FIGURE_LABELS[k] for k in keys]
    rows = []
    for run, figures in record["runs"].items():
        cells = [run]
        for k in keys:
            f = figures[k]
            pct = k.endswith("_rel")
            fmt = (lambda v: f"{100 * v:+.1f}%") if pct else (lambda v: f"{v:+.2f}" if k.endswith("_z") else f"{v:.3f}")
            cells.append("–" if f["mean"] != f["mean"] else f"{fmt(f['mean'])} [{fmt(f['ci95'][0])}, {fmt(f['ci95'][1])}]")
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    if record["checks"]:
        lines.append("")
        for c in record["checks"]:
            failed = [s for s, ok in c["per_seed"].items() if not ok]
            lines.append(f"{c['passed']}/{c['of']} seeds  {c['check']}" + (f"  (misses: seed {', '.join(failed)})" if failed else ""))
        lines.append(f"{record['seeds_passing_all']}/{len(record['seeds'])} seeds pass every check")
    return "\n".join(lines)


def run_seeds(out, seeds: list[int], *, task: str | None, progress: bool = True, **demo_kwargs) -> dict:
    """The demo for each seed into ``out/seed-N``, then ``out/seeds.json`` and the table."""
    from .demo import DEFAULT_RUNS, demo_plan, run_demo
    from .sweep import plan_metrics

    out = Path(out)
    if not seeds:
        raise RcfdError("--seeds names no seed; write e.g. --seeds 0-4")
    plan = demo_plan(demo_kwargs.get("runs", DEFAULT_RUNS))
    per_seed = {}
    for i, seed in enumerate(seeds, 1):
        if progress:
            print(f"\n=== seed {seed} ({i}/{len(seeds)}) ===", flush=True)
        record = run_demo(out / f"seed-{seed}", seed=seed, progress=progress, task=task, **demo_kwargs)
        per_seed[seed] = plan_metrics(record, plan)
    record = {"task": task or "wiki-continuation", **aggregate(per_seed, CHECKS.get(task or "wiki-continuation", []))}
    write_json(out / "seeds.json", record)
    print()
    print(format_seeds_table(record))
    print(f"\nwritten to {out / 'seeds.json'}")
    return record
