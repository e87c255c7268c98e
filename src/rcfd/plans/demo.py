"""``rcfd demo``: the embedded default, a named plan of runs with one budget and seed.

Runs: ``beta0`` (maximize the reward), ``kl`` (R − β·KL, the paper's β 0.1 → 0.3 schedule) and
``rcfd`` (the preset's RCfD objective: ``rcfd-batch`` on use cases 1 and 2, the paper's −(R − R_demo)² on use case 3,
against predicted targets and keeping the step closest to the demonstrations on validation prompts;
``rcfd-paper`` forces the paper's, with one completion per prompt and the whitened advantage), plus the
baselines and multi-reward runs of :data:`RUNS`. The plan runs like a sweep (:func:`rcfd.plans.sweep.run_plan`):
each run in ``DIR/NAME``, the base model in ``DIR/base``, the record in ``DIR/sweep.json``; rerunning the
same command reads finished runs back instead of redoing them, and refuses a directory made with other
settings.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RcfdError
from ..report.tables import print_samples, print_table
from .sweep import PlannedRun, plan_metrics, run_plan

LAST_STEP = ("train.load_best_model_at_end=false", "train.eval_every=0")

RUNS = {
    "beta0": PlannedRun("beta0", ["objective.name=reward"]),
    "kl": PlannedRun("kl", ["objective.name=kl", "objective.beta=0.1", "objective.beta_end=0.3"]),
    "rcfd": PlannedRun("rcfd"),  # the preset's own RCfD objective and estimator
    "rcfd-paper": PlannedRun("rcfd-paper", ["objective.name=rcfd", "train.num_generations=1",
                                            "train.advantage=whiten"]),
    # Baselines from demonstrations / preferences (rcfd.train.baselines, TRL's trainers), not RL objectives.
    "sft": PlannedRun("sft", trainer="sft"),
    "dpo": PlannedRun("dpo", trainer="dpo"),  # needs data.preference_source
    # Multi-reward tasks (quality + length): quality alone, and the weighted baseline's α sweep.
    # Quality alone is R_quality + 0·R_length: trained on the first reward, scored on all of them. These
    # baselines keep their last step, as the paper's do (no train.load_best_model_at_end).
    "quality": PlannedRun("quality", ["objective.name=weighted", "objective.alpha=0", *LAST_STEP]),
    **{f"alpha={a}": PlannedRun(f"alpha={a}", ["objective.name=weighted", f"objective.alpha={a}", *LAST_STEP])
       for a in ("0.003", "0.01", "0.03", "0.1")},
}
# Extensions measured on use case 2 (docs/how-to/targets.md): demonstrations for a quarter of the prompts and
# a target model's prediction elsewhere, repetition charged per text; and several demonstrations per prompt
# (prompts of 4 tokens that open at least 3 reviews), with their spread, against the first one alone.
PER_TEXT = ["reward.calibrate_also=[loglik,loglik-spread,repetition,repeat-mass]",
            "objective.per_sample=[repetition,repeat-mass]"]
SEVERAL = ["data.prompt_tokens=4", "data.group_demonstrations=true", "data.min_demonstrations=3",
           "data.max_demonstrations=8", "objective.name=rcfd-mean", "eval.samples_per_prompt=8"]
RUNS.update({
    "rcfd-mixed": PlannedRun("rcfd-mixed", ["data.demo_fraction=0.25", "objective.target=mixed", *PER_TEXT]),
    "rcfd-several": PlannedRun("rcfd-several", [*SEVERAL, "objective.match_spread=true"]),
    "rcfd-first-demo": PlannedRun("rcfd-first-demo", [*SEVERAL, "data.train_demonstrations=1"]),
})
RUN_HELP = {"sft": "supervised fine-tuning on the demonstrations with TRL", "dpo": "DPO on data.preference_source",
            "rcfd-mixed": "a quarter of the demonstrations, predicted targets elsewhere",
            "rcfd-several": "every demonstration of a prompt, mean and spread",
            "rcfd-first-demo": "the same prompts, their first demonstration only"}

DEFAULT_RUNS = ("beta0", "rcfd")  # use case 1 (rcfd.tasks); `--runs beta0,kl,rcfd` adds the β baseline


def demo_plan(runs) -> list[PlannedRun]:
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        raise RcfdError(f"unknown demo run {unknown[0]!r} in --runs; choose from {', '.join(RUNS)}")
    return [RUNS[r] for r in runs]


def run_demo(out, *, config_path, seed: int = 0, steps: int | None = None, overrides=(), progress=True,
             runs=DEFAULT_RUNS, task: str | None = None) -> dict:
    """Train and evaluate the demo's runs into ``out``; print the table and samples; return the record."""
    plan = demo_plan(runs)
    record = run_plan(out, plan, config_path=config_path, kind="demo", seed=seed, steps=steps,
                      overrides=overrides, progress=progress, task=task)
    metrics = plan_metrics(record, plan)
    print()
    print_table(metrics)
    print_samples(metrics)
    print(f"\nwritten to {Path(out) / 'sweep.json'} ({record['total_wall_seconds']:.0f} s, "
          f"peak memory {record['peak_rss_mb']:.0f} MB)")
    return record
