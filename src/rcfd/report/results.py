"""Reading finished work back for reports: a sweep directory, a demo directory or a single run.

Every kind becomes a list of :class:`RunResult` (the base model included when it was evaluated) and
one :class:`Demonstrations` record, whatever wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RcfdError
from ..files import read_json
from ..eval.metric_names import upgrade_record
from ..train.rundir import RunDir


@dataclass
class RunResult:
    name: str
    metrics: dict
    run_dir: Path | None = None
    family: str = "run"  # base | beta | alpha | grid (another swept field) | rcfd | run
    param: float | None = None  # β or α of a sweep run
    reward_names: list = field(default_factory=list)
    compute_seconds: float | None = None  # summed training-step seconds
    config: dict | None = None  # the run's resolved config (None for a base model read from a record)
    task: str | None = None  # the preset it ran, where the record names it (`rcfd demo`, `rcfd sweep --task`)

    def history(self) -> list[dict]:
        """metrics.jsonl, one record per training step ([] for the base model)."""
        if self.run_dir is None:
            return []
        return [upgrade_record(r) for r in RunDir(self.run_dir).read_metrics()]


@dataclass
class Demonstrations:
    reward_names: list
    reward_samples: list | None  # [N, K]
    reward_means: list
    reward_stds: list
    loglik_by_position: list | None
    mean_length: float | None
    train_tokens: int | None  # generation length during training, for the Figure 2 marker


def _family(name: str, metrics: dict) -> tuple[str, float | None]:
    for key in ("beta", "alpha"):
        if name.startswith(f"{key}="):
            try:
                return key, float(name.split("=", 1)[1])
            except ValueError:
                return key, None
    if "=" in name:  # a sweep over some other config field
        return "grid", None
    if name == "base" or metrics.get("objective", "").startswith("none"):
        return "base", None
    if _calibrates(metrics.get("objective")):  # rcfd, rcfd-mean, rcfd-batch
        return "rcfd", None
    return "run", None


def _calibrates(objective) -> bool:
    from ..train.objectives import CLASSES

    return objective in CLASSES and CLASSES[objective].needs_targets


def _reward_names(metrics: dict, config: dict | None) -> list[str]:
    """The rewards a run was scored with: the config's order, restricted to those its metrics hold."""
    scored = [k.split("/")[1] for k in metrics if k.startswith("rewards/") and k.endswith("/mean")
              and not k.endswith("demo_mean")]
    configured = list(((config or {}).get("reward") or {}).get("names") or [])
    in_both = [n for n in configured if n in scored]
    return in_both or configured or sorted(scored)


def _config_of(run_dir: Path) -> dict | None:
    return RunDir(run_dir).read_config_dict()


def _make(name, metrics, run_dir, config, compute=None, task=None) -> RunResult:
    family, param = _family(name, metrics)
    if compute is None and run_dir is not None and run_dir.exists():
        compute = RunDir(run_dir).step_seconds() or metrics.get("train_seconds")
    return RunResult(name, metrics, run_dir if run_dir is not None and run_dir.exists() else None, family, param,
                     _reward_names(metrics, config), compute, config, task)


def _record_from_old_demo(data: dict) -> dict:
    """A demo directory written before the demo ran as a plan (its summary.json held {"runs": ...})
    in the sweep.json record's shape."""
    runs = {}
    for name, metrics in data["runs"].items():
        metrics = dict(metrics, reward_samples=data.get("reward_samples", {}).get(name))
        if data.get("demo_reward_samples") is not None:
            metrics["demo_reward_samples"] = data["demo_reward_samples"]
        runs[name] = {"metrics": metrics}
    base = runs.pop("base", None)
    return {"kind": "demo", "runs": runs, "base": base}


def load_directory(path: Path) -> tuple[list[RunResult], dict]:
    """Runs in one directory, plus the config of its first run (for settings such as lengths)."""
    path = Path(path)
    sweep, summary = path / "sweep.json", path / "summary.json"
    if (path / "seeds.json").exists() and not summary.exists() and not sweep.exists():
        # `rcfd demo --seeds`: the figures show the first seed; the report adds the table over seeds
        seeds = read_json(path / "seeds.json")["seeds"]
        return load_directory(path / f"seed-{seeds[0]}")
    if sweep.exists():
        record = read_json(sweep)
    elif summary.exists() and "runs" in (data := read_json(summary)):
        record = _record_from_old_demo(data)
    elif summary.exists():  # a single run
        config = _config_of(path)
        return [_make(path.name or "run", data, path, config)], config or {}
    else:
        raise RcfdError(f"'{path}' has neither sweep.json nor summary.json; pass a directory written by "
                        f"`rcfd sweep`, `rcfd demo` or `rcfd train`")
    runs, config = [], None
    for name, r in record["runs"].items():
        run_config = r.get("config") or _config_of(path / name)
        config = config or run_config
        runs.append(_make(name, r["metrics"], path / name, run_config, r.get("train_step_seconds"),
                          record.get("task")))
    if record.get("base"):
        runs.insert(0, _make("base", record["base"]["metrics"], None, config, task=record.get("task")))
    return runs, config or {}


def describe_setting(runs) -> str:
    """What the runs are, in one line: task, model, data, seeds and RL steps (each value once)."""
    trained = [r for r in runs if r.family != "base"] or runs

    def values(section, key):
        found = (((r.config or {}).get(section) or {}).get(key) for r in trained)
        return list(dict.fromkeys(str(v) for v in found if v is not None))

    parts = [("task", list(dict.fromkeys(r.task for r in runs if r.task))), ("model", values("model", "name")),
             ("data", values("data", "source")), ("seed", values("train", "seed")),
             ("RL steps", values("train", "steps"))]
    return "; ".join(f"{label} {', '.join(v)}" for label, v in parts if v) or "settings not recorded"


def load_results(dirs) -> tuple[list[RunResult], Demonstrations]:
    runs, config = [], {}
    for d in dirs:
        found, cfg = load_directory(Path(d))
        config = config or cfg
        taken = {r.name for r in runs}
        for r in found:
            if r.name in taken:
                if r.family == "base":
                    continue  # one base model is enough
                r.name = f"{Path(d).name}/{r.name}"
            runs.append(r)
    if not runs:
        raise RcfdError("no runs found in the given directories")
    # The demonstrations are described by the run scored with the most rewards (a run trained on
    # fewer, e.g. an older quality-only run, must not hide the others).
    first = max((r for r in runs if r.family != "base"), key=lambda r: len(r.reward_names), default=runs[0])
    names = first.reward_names
    m = first.metrics
    demo_samples = next((s for s in (r.metrics.get("demo_reward_samples") for r in [first, *runs])
                         if s and len(s[0]) == len(names)), None)
    demo = Demonstrations(
        reward_names=names, reward_samples=demo_samples,
        reward_means=[m[f"rewards/{n}/demo_mean"] for n in names],
        reward_stds=[m[f"rewards/{n}/demo_std"] for n in names],
        loglik_by_position=m.get("demo_loglik_by_position"), mean_length=m.get("demo_mean_length"),
        train_tokens=(config.get("generation") or {}).get("max_new_tokens"),
    )
    return runs, demo
