"""Human-readable output of evaluation results (terminal tables; plots live in later modules)."""

from __future__ import annotations

from ..eval.metrics import demo_z


COLUMNS = [
    ("reward", lambda r: f"{r['reward_mean']:.3f}±{r['reward_std']:.2f}"),
    ("vs demos (σ)", lambda r: f"{demo_z(r['reward_mean'], r['demo_reward_mean'], r['demo_reward_std']):+.2f}"),
    ("align A", lambda r: f"{r['alignment']:.3f}"),
    ("W1", lambda r: f"{r['wasserstein']:.3f}"),
    ("length", lambda r: f"{r['mean_length']:.1f}"),
    ("distinct-2", lambda r: f"{r['distinct_2']:.3f}"),
    ("rep-4", lambda r: f"{r['repetition_4']:.3f}"),
    ("natural.", lambda r: f"{r['naturalness']:.2f}" if r.get("naturalness") is not None else "–"),
    ("KL(ref)", lambda r: f"{r['kl_to_ref']:.2f}"),
]


def demo_row(result: dict) -> dict:
    """The demonstrations' own figures, shaped like a run's."""
    return {
        "reward_mean": result["demo_reward_mean"], "reward_std": result["demo_reward_std"],
        "demo_reward_mean": result["demo_reward_mean"], "demo_reward_std": result["demo_reward_std"],
        "alignment": 0.0, "wasserstein": 0.0, "mean_length": result["demo_mean_length"],
        "distinct_2": result["demo_distinct_2"], "repetition_4": result["demo_repetition_4"], "kl_to_ref": float("nan"),
        "naturalness": result.get("demo_naturalness"),
    }


def format_table(runs: dict[str, dict]) -> str:
    if not runs:
        return "(no runs)"
    rows = {"demonstrations": demo_row(next(iter(runs.values())))}
    rows.update(runs)
    header = ["run"] + [name for name, _ in COLUMNS]
    body = [[name] + [fmt(r) for _, fmt in COLUMNS] for name, r in rows.items()]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def format_calibration(runs: dict[str, dict]) -> str:
    """Per reward, how far each run's mean is from the demonstrations' (in demonstration std), and its
    alignment; empty for single-reward runs, whose table already says so."""
    names = list(dict.fromkeys(k.split("/")[1] for r in runs.values() for k in r
                               if k.startswith("rewards/") and k.endswith("/demo_std")))
    if len(names) < 2:
        return ""
    lines = ["per reward, run mean − demonstrations' mean in demonstration std (alignment A):"]
    width = max(len(n) for n in runs)
    for run, r in runs.items():
        cells = [f"{n} {demo_z(r[f'rewards/{n}/mean'], r[f'rewards/{n}/demo_mean'], r[f'rewards/{n}/demo_std']):+.2f} "
                 f"(A {r[f'rewards/{n}/alignment']:.3f})" for n in names if f"rewards/{n}/mean" in r]
        lines.append(f"  {run.ljust(width)}  " + ", ".join(cells))
    return "\n".join(lines)


def format_noise(runs: dict[str, dict]) -> str:
    """The evaluation's own noise, for reading the table: one line from the first run that states it."""
    r = next((r for r in runs.values() if "reward_gap_se" in r), None)
    if r is None:
        return ""
    line = (f"held-out: {r['num_prompts']} prompts x {r['samples_per_prompt']} samples; standard error of "
            f"'vs demos' {r['reward_gap_se']:.3f} σ (of the mean reward {r['reward_mean_se']:.3f} σ); alignment of "
            f"two samples of one distribution at this size: {r['alignment_floor']:.3f}")
    if "repeat_4_texts" in r:  # rep-4 of human text rests on a few texts: say how many
        line += (f"; texts with a repeated 4-gram: {r['repeat_4_texts']:g} of {r['num_prompts'] * r['samples_per_prompt']}"
                 f" (demonstrations {r['demo_repeat_4_texts']:g} of {r['num_prompts']})")
    return line


def print_table(runs: dict[str, dict]) -> None:
    print(format_table(runs))
    noise = format_noise(runs)
    if noise:
        print(noise)
    calibration = format_calibration(runs)
    if calibration:
        print("\n" + calibration)


def print_samples(runs: dict[str, dict], n: int = 2, width: int = 160) -> None:
    for name, result in runs.items():
        print(f"\n--- samples: {name}")
        for s in result.get("samples", [])[:n]:
            text = (s["prompt"] + " ▶ " + s["completion"]).replace("\n", " ")
            print(f"  [{s['reward']:.2f}] {text[:width]}")
