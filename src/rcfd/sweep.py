"""``rcfd sweep``: the β (or α) grid that a KL-penalized (or weighted) objective needs, plus RCfD.

Each grid value is one run in ``DIR/NAME`` trained with the same seed and budget and evaluated on the
same held-out prompts; the base model is evaluated once (kept in ``DIR/base`` and read back by a
rerun with the same settings). Runs go one after another; a finished run
(its ``summary.json`` exists) is skipped and an interrupted one resumes from its newest checkpoint, so
rerunning the same command after an interruption redoes nothing that finished. ``DIR/sweep.json`` is
rewritten after every run with, per run: the overrides and resolved config, the held-out metrics,
wall seconds and compute (CPU-seconds of this process and the summed seconds of the training steps).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import load_config
from .errors import RcfdError
from .files import write_json
from .rundir import RunDir

SHORTHANDS = {
    # grid key -> overrides for one value v (the paper's two swept baselines)
    "beta": lambda v: ["objective.name=kl", f"objective.beta={v}"],
    "alpha": lambda v: ["objective.name=weighted", f"objective.alpha={v}"],
}
RCFD_RUN = ("rcfd", ["objective.name=rcfd"])


def parse_grid(spec: str) -> tuple[str, list[str]]:
    """'beta=0,0.01,0.1' -> ('beta', ['0', '0.01', '0.1'])."""
    key, sep, values = spec.partition("=")
    key = key.strip()
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key or not items:
        raise RcfdError(f"--grid '{spec}' is not KEY=V1,V2,...; e.g. --grid beta=0,0.01,0.03,0.1")
    if key not in SHORTHANDS and "." not in key:
        raise RcfdError(f"--grid key '{key}' is unknown; use beta, alpha or a config field such as train.learning_rate")
    for v in items:
        try:
            float(v)
        except ValueError:
            if key in SHORTHANDS:
                raise RcfdError(f"--grid {key} value '{v}' is not a number") from None
    return key, items


def plan_runs(grids: list[str], with_rcfd: bool) -> list[tuple[str, list[str]]]:
    """[(run name, overrides)]: each --grid is its own family of runs (β runs, α runs, ...)."""
    runs = []
    for spec in grids:
        key, values = parse_grid(spec)
        for v in values:
            overrides = SHORTHANDS[key](v) if key in SHORTHANDS else [f"{key}={v}"]
            runs.append((f"{key}={v}", overrides))
    if with_rcfd:
        runs.append(RCFD_RUN)
    names = [n for n, _ in runs]
    if len(set(names)) != len(names):
        raise RcfdError(f"the sweep lists a run twice ({names}); remove the repeated --grid value")
    if not runs:
        raise RcfdError("nothing to run; give at least one --grid KEY=V1,V2,... or --with-rcfd")
    return runs


def run_overrides(overrides, seed: int, steps: int | None) -> list[str]:
    """Overrides every run of a demo or sweep shares: the user's, the seed, and the budget if given."""
    return list(overrides) + [f"train.seed={seed}"] + ([f"train.steps={steps}"] if steps is not None else [])


def _first_difference(saved, current, prefix: str = "") -> str | None:
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            found = _first_difference(saved.get(key), current.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if saved == current else f"{prefix[:-1]} ({saved!r} there, {current!r} now)"


def config_difference(config, run_dir: Path) -> str | None:
    """The first field where ``run_dir/config.yaml`` differs from ``config`` (None: same, or no file)."""
    saved = RunDir(run_dir).read_config_dict()
    return None if saved is None else _first_difference(saved, config.to_dict())


def check_same_config(config, run_dir: Path) -> None:
    """Refuse to read back or resume a run that was made with other settings (a stale demo directory)."""
    difference = config_difference(config, run_dir)
    if difference:
        raise RcfdError(f"'{run_dir}' holds a run made with other settings: {difference}; "
                        f"choose another --out or delete that directory")


def run_or_load(config, run_dir: Path, progress: bool, train=None, saved_config=None):
    """Train and evaluate a run, resuming it if interrupted; a finished run is only read back.

    ``train(config, run_dir, resume=, progress=) -> (trainer or None, summary)`` defaults to
    :func:`rcfd.trainer.run_training`; ``saved_config`` is the config such a run writes to its
    ``config.yaml`` when that is not ``config`` itself (the SFT/DPO baselines).
    Returns (trainer or None, summary, cpu_seconds spent now)."""
    if train is None:
        from .trainer import run_training as train
    check_same_config(saved_config if saved_config is not None else config, run_dir)
    run = RunDir(run_dir)
    if run.is_finished():
        return None, run.read_summary(), 0.0
    cpu0 = time.process_time()
    trainer, summary = train(config, run_dir, resume=run.has_started(), progress=progress)
    return trainer, summary, time.process_time() - cpu0


def evaluate_base(config, trainer, progress: bool) -> dict:
    """Held-out metrics of the reference model, with the evaluation settings of ``config``."""
    from .components import build_components
    from .evaluate import evaluate_components

    t0 = time.perf_counter()
    if trainer is not None:
        base = trainer.evaluate(base=True)
    else:  # the run was read back: build what the evaluation needs, without touching the run
        components = build_components(config, progress=progress, with_demo_rewards=False)
        base = evaluate_components(components, config, base=True, progress=progress)
    base.update(objective="none (base model)", wall_seconds=time.perf_counter() - t0)
    return base


def base_metrics(config, cache_dir: Path, trainer, progress: bool) -> dict:
    """:func:`evaluate_base`, kept in ``cache_dir`` and read back while the settings stay the same,
    so rerunning a finished demo or sweep does not evaluate the base model again."""
    cached = RunDir(cache_dir)
    if cached.is_finished() and cached.has_config() and config_difference(config, cache_dir) is None:
        return cached.read_summary()
    base = evaluate_base(config, trainer, progress)
    cached.write_config(config)
    cached.write_summary(base)
    return base


def run_sweep(out, *, config_path, grids: list[str], with_rcfd: bool = False, seed: int = 0,
              steps: int | None = None, overrides=(), progress: bool = True, task: str | None = None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    common = run_overrides(overrides, seed, steps)
    planned = plan_runs(grids, with_rcfd)
    configs = {name: load_config(config_path, common + extra) for name, extra in planned}  # fail fast on typos
    sweep_path = out / "sweep.json"
    previous = json.loads(sweep_path.read_text()) if sweep_path.exists() else {}
    record = {"task": task, "config_path": str(config_path), "seed": seed, "common_overrides": common,
              "runs": previous.get("runs", {}), "base": None}
    for i, (name, extra) in enumerate(planned, 1):
        run_dir = out / name
        done = RunDir(run_dir).is_finished()
        if progress:
            print(f"[{i}/{len(planned)}] {name}: {'finished earlier, skipped' if done else 'training'}", flush=True)
        trainer, summary, cpu = run_or_load(configs[name], run_dir, progress)
        if i == 1:  # the base model once per sweep, read back when a rerun has the same settings
            record["base"] = {"metrics": base_metrics(configs[name], out / "base", trainer, progress)}
        old = record["runs"].get(name, {})
        record["runs"][name] = {
            "overrides": extra, "config": configs[name].to_dict(), "metrics": summary,
            "wall_seconds": summary.get("wall_seconds"),
            "train_step_seconds": RunDir(run_dir).step_seconds(),
            "cpu_seconds": old.get("cpu_seconds", 0.0) + cpu,
        }
        del trainer
        write_json(sweep_path, record)  # after every run: an interruption keeps what finished
    if progress:
        from .report import print_table

        print()
        print_table({"base": record["base"]["metrics"],
                     **{n: record["runs"][n]["metrics"] for n, _ in planned}})
        print(f"\nsweep written to {sweep_path}; make the report with: rcfd report {out} --out {out / 'report.html'}")
    return record
