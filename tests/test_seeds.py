"""``rcfd demo --seeds``: parsing, aggregation over seeds, check counts, and a tiny end-to-end run."""

import json

import pytest

from rcfd.cli import main
from rcfd.errors import RcfdError
from rcfd.plans.seeds import CHECKS, aggregate, bootstrap_interval, format_seeds_table, parse_seeds


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,2,5") == [0, 2, 5]
    assert parse_seeds("3, 0-1, 3") == [3, 0, 1]


@pytest.mark.parametrize("spec", ["", "a", "4-0", "0-", "1.5", "0;1"])
def test_malformed_seeds_are_a_one_line_error(spec):
    with pytest.raises(RcfdError, match="write e.g. --seeds 0-4") as info:
        parse_seeds(spec)
    assert "\n" not in str(info.value)


def test_bootstrap_interval_brackets_the_mean_and_is_deterministic():
    values = [0.1, -0.2, 0.05, 0.3, -0.1]
    low, high = bootstrap_interval(values)
    assert low < sum(values) / 5 < high
    assert (low, high) == bootstrap_interval(values)
    assert bootstrap_interval([0.2, 0.2]) == (pytest.approx(0.2), pytest.approx(0.2))


def _metrics(z, alignment=0.1, distinct=0.8, rep4=0.0):
    demo = {"demo_reward_mean": -3.0, "demo_reward_std": 0.5, "demo_distinct_2": 0.8, "demo_repetition_4": 0.001,
            "demo_naturalness": -3.0, "demo_naturalness_std": 0.5, "demo_mean_length": 24.0}
    return {**demo, "reward_mean": -3.0 + 0.5 * z, "alignment": alignment, "distinct_2": distinct,
            "repetition_4": rep4, "naturalness": -3.0 + 0.5 * z, "mean_length": 24.0, "kl_to_ref": 1.0}


def test_aggregate_counts_each_check_per_seed():
    per_seed = {
        0: {"base": _metrics(0.0), "beta0": _metrics(1.5, distinct=0.6), "rcfd": _metrics(0.1)},
        1: {"base": _metrics(0.0), "beta0": _metrics(0.9, distinct=0.6), "rcfd": _metrics(0.3)},   # both miss
        2: {"base": _metrics(0.0), "beta0": _metrics(1.2, distinct=0.78, rep4=0.05), "rcfd": _metrics(-0.2, 0.2)},
    }
    record = aggregate(per_seed, CHECKS["wiki-continuation"])
    assert [c["passed"] for c in record["checks"]] == [2, 2, 2, 3]  # beta0, rcfd z, rcfd A, rcfd distinct-2
    assert record["all_checks"] == {"0": True, "1": False, "2": False} and record["seeds_passing_all"] == 1
    z = record["runs"]["rcfd"]["reward_z"]
    assert z["mean"] == pytest.approx((0.1 + 0.3 - 0.2) / 3) and z["per_seed"]["1"] == pytest.approx(0.3)
    assert z["ci95"][0] <= z["mean"] <= z["ci95"][1]
    table = format_seeds_table(record)
    assert "1/3 seeds pass every check" in table
    assert "2/3 seeds  rcfd alignment A ≤ 0.15  (misses: seed 2)" in table


def test_demo_over_seeds_on_the_tiny_model(tmp_path, capsys):
    out = tmp_path / "seeds"
    args = ["demo", "--task", "tiny", "--seeds", "0-1", "--runs", "beta0,rcfd", "--steps", "1", "--out", str(out),
            "--quiet"]
    assert main(args) == 0
    record = json.loads((out / "seeds.json").read_text())
    assert record["seeds"] == [0, 1] and set(record["runs"]) == {"base", "beta0", "rcfd"}
    assert set(record["runs"]["rcfd"]["reward_z"]["per_seed"]) == {"0", "1"}
    for seed in (0, 1):
        saved = json.loads((out / f"seed-{seed}" / "sweep.json").read_text())
        assert saved["seed"] == seed and saved["kind"] == "demo" and set(saved["runs"]) == {"beta0", "rcfd"}
    assert "across seeds 0, 1" in capsys.readouterr().out
    # a rerun reads every seed back and keeps the time the seeds took (not the rerun's few seconds)
    spent = json.loads((out / "seed-0" / "sweep.json").read_text())["total_wall_seconds"]
    assert main(args) == 0
    assert json.loads((out / "seed-0" / "sweep.json").read_text())["total_wall_seconds"] >= spent
    # the report reads a seeds directory: the table over seeds and a per-seed strip plot
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "Across seeds" in html and (tmp_path / "r_figures" / "seeds.png").exists()
