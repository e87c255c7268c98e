"""Running a plan of runs: ``rcfd sweep`` (a β or α grid, plus RCfD) and ``rcfd demo`` (named runs).

A plan is a list of :class:`PlannedRun` (a name and the config overrides that make it). Each run goes to
``DIR/NAME``, trained with the same seed and budget and evaluated on the same held-out prompts; the base
model is evaluated once (kept in ``DIR/base`` and read back by a rerun with the same settings). Runs go
one after another; a finished run (its ``summary.json`` exists) is read back and an interrupted one
resumes from its newest checkpoint, so rerunning the same command after an interruption redoes nothing
that finished. ``DIR/sweep.json`` is rewritten after every run: per run the overrides and resolved
config, the held-out metrics, wall seconds and compute (CPU-seconds of this process and the summed
seconds of the training steps), then the base model's metrics and what the whole plan cost.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import load_config
from ..errors import RcfdError
from ..files import read_json, write_json
from ..registry import PAPER_OBJECTIVE as PAPER
from ..train.rundir import RunDir, differences

SHORTHANDS = {
    # grid key -> overrides for one value v (the paper's two swept baselines)
    "beta": lambda v: ["objective.name=kl", f"objective.beta={v}"],
    "alpha": lambda v: ["objective.name=weighted", f"objective.alpha={v}"],
}


@dataclass(frozen=True)
class PlannedRun:
    name: str
    overrides: list[str] = field(default_factory=list)
    trainer: str = "rl"  # rl (rcfd.train.trainer) | sft | dpo (rcfd.train.baselines, TRL's trainers)


RCFD_RUN = PlannedRun("rcfd", [f"objective.name={PAPER}"])


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


def plan_runs(grids: list[str], with_rcfd: bool) -> list[PlannedRun]:
    """The sweep's plan: each --grid is its own family of runs (β runs, α runs, ...), then RCfD."""
    runs = []
    for spec in grids:
        key, values = parse_grid(spec)
        for v in values:
            overrides = SHORTHANDS[key](v) if key in SHORTHANDS else [f"{key}={v}"]
            runs.append(PlannedRun(f"{key}={v}", overrides))
    if with_rcfd:
        runs.append(RCFD_RUN)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise RcfdError(f"the sweep lists a run twice ({names}); remove the repeated --grid value")
    if not runs:
        raise RcfdError("nothing to run; give at least one --grid KEY=V1,V2,... or --with-rcfd")
    return runs


def run_overrides(overrides, seed: int, steps: int | None) -> list[str]:
    """Overrides every run of a demo or sweep shares: the user's, the seed, and the budget if given."""
    return list(overrides) + [f"train.seed={seed}"] + ([f"train.steps={steps}"] if steps is not None else [])


def config_difference(config, run_dir: Path) -> str | None:
    """The first field where ``run_dir/config.yaml`` differs from ``config`` (None: same, or no file)."""
    saved = RunDir(run_dir).read_config_dict()
    found = [] if saved is None else differences(saved, config.to_dict())
    return f"{found[0][0]} ({found[0][1]!r} there, {found[0][2]!r} now)" if found else None


def check_same_config(config, run_dir: Path) -> None:
    """Refuse to read back or resume a run that was made with other settings (a stale demo directory)."""
    difference = config_difference(config, run_dir)
    if difference:
        raise RcfdError(f"'{run_dir}' holds a run made with other settings: {difference}; "
                        f"choose another --out or delete that directory")


def _train(trainer: str, config, run_dir: Path, resume: bool, progress: bool):
    """(trainer object or None, summary) of one run; ``trainer`` says what trains it."""
    if trainer == "rl":
        from ..train.trainer import run_training

        return run_training(config, run_dir, resume=resume, progress=progress)
    from ..train import baselines  # sft, dpo: TRL's trainers, no checkpoints to resume

    return None, getattr(baselines, f"run_{trainer}")(config, run_dir, progress=progress)


def run_or_load(config, run_dir: Path, progress: bool, trainer: str = "rl"):
    """Train and evaluate a run, resuming it if interrupted; a finished run is only read back.
    Returns (trainer object or None, summary, cpu_seconds spent now)."""
    check_same_config(config, run_dir)
    run = RunDir(run_dir)
    if run.is_finished():
        return None, run.read_summary(), 0.0
    cpu0 = time.process_time()
    trainer_object, summary = _train(trainer, config, run_dir, run.has_started(), progress)
    return trainer_object, summary, time.process_time() - cpu0


def evaluate_base(config, trainer, progress: bool) -> dict:
    """Held-out metrics of the reference model, with the evaluation settings of ``config``."""
    from ..train.components import build_components
    from ..eval.evaluate import evaluate_components

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


def run_plan(out, plan: list[PlannedRun], *, config_path, kind: str, seed: int = 0, steps: int | None = None,
             overrides=(), progress: bool = True, task: str | None = None) -> dict:
    """Train and evaluate every run of ``plan`` into ``out/NAME``, then the base model; return the
    ``sweep.json`` record (``kind`` = "sweep" or "demo", for whoever reads it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    common = run_overrides(overrides, seed, steps)
    configs = {r.name: load_config(config_path, common + r.overrides) for r in plan}  # fail fast on typos
    sweep_path = out / "sweep.json"
    previous = read_json(sweep_path) if sweep_path.exists() else {}
    same_settings = previous.get("common_overrides") == common and previous.get("config_path") == str(config_path)
    record = {"kind": kind, "task": task, "config_path": str(config_path), "seed": seed, "common_overrides": common,
              "runs": previous.get("runs", {}) if same_settings else {}, "base": None,
              "total_wall_seconds": previous.get("total_wall_seconds", 0.0) if same_settings else 0.0,
              "peak_rss_mb": previous.get("peak_rss_mb", 0.0) if same_settings else 0.0}
    for i, run in enumerate(plan, 1):
        run_dir = out / run.name
        if progress:
            done = RunDir(run_dir).is_finished()
            print(f"[{i}/{len(plan)}] {run.name}: {'finished earlier, read back' if done else 'training'}", flush=True)
        trainer, summary, cpu = run_or_load(configs[run.name], run_dir, progress, run.trainer)
        if record["base"] is None:  # the base model once, with the models the first run loaded
            record["base"] = {"metrics": base_metrics(configs[run.name], out / "base", trainer, progress)}
        old = record["runs"].get(run.name, {})
        record["runs"][run.name] = {
            "overrides": run.overrides, "trainer": run.trainer, "config": configs[run.name].to_dict(),
            "metrics": summary, "wall_seconds": summary.get("wall_seconds"),
            "train_step_seconds": RunDir(run_dir).step_seconds(),
            "cpu_seconds": old.get("cpu_seconds", 0.0) + cpu,
        }
        del trainer
        _add_cost(record, t_start)
        t_start = time.perf_counter()
        write_json(sweep_path, record)  # after every run: an interruption keeps what finished
    return record


def _add_cost(record: dict, since: float) -> None:
    """Wall time adds up over an interrupted and resumed plan; memory is the largest peak."""
    record["total_wall_seconds"] += time.perf_counter() - since
    record["peak_rss_mb"] = max(record["peak_rss_mb"],
                                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB


def plan_metrics(record: dict, plan: list[PlannedRun]) -> dict[str, dict]:
    """{"base": metrics, NAME: metrics} for the runs of ``plan``, in its order."""
    return {"base": record["base"]["metrics"], **{r.name: record["runs"][r.name]["metrics"] for r in plan}}


def run_sweep(out, *, config_path, grids: list[str], with_rcfd: bool = False, seed: int = 0,
              steps: int | None = None, overrides=(), progress: bool = True, task: str | None = None) -> dict:
    plan = plan_runs(grids, with_rcfd)
    record = run_plan(out, plan, config_path=config_path, kind="sweep", seed=seed, steps=steps,
                      overrides=overrides, progress=progress, task=task)
    if progress:
        from ..report.tables import print_table

        print()
        print_table(plan_metrics(record, plan))
        print(f"\nsweep written to {Path(out) / 'sweep.json'}; make the report with: "
              f"rcfd report {out} --out {Path(out) / 'report.html'}")
    return record
