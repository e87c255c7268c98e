"""Same config and seed give the same numbers as a tiny-model run stored before the code was
reorganized (tests/data/*/metrics.jsonl, written under the old metric names), read under today's."""

import json
from pathlib import Path

import pytest

from rcfd.cli import main
from rcfd.eval.metric_names import upgrade_record

DATA = Path(__file__).parent / "data"


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("stored", ["tiny-run", "tiny-run-k4"])
def test_a_stored_run_is_reproduced(tmp_path, stored):
    run = tmp_path / stored
    assert main(["train", "--config", str(DATA / stored / "config.yaml"), "--out", str(run), "--quiet", "--no-eval"]) == 0
    expected = [upgrade_record(r) for r in _records(DATA / stored / "metrics.jsonl")]
    got = _records(run / "metrics.jsonl")
    assert [sorted(r) for r in got] == [sorted(r) for r in expected]  # the same metrics, under today's names
    for new, old in zip(got, expected):
        for key, value in old.items():
            # equal on the machine that stored them; a tolerance for another CPU's float rounding
            assert new[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (new["step"], key)


def test_old_names_map_to_namespaced_ones():
    old = {"step": 3, "reward": 1.0, "kl": 2.0, "distinct_2": 0.5, "rewards/loglik/mean": 1.0}
    assert upgrade_record(old) == {"step": 3, "train/reward": 1.0, "train/kl": 2.0, "completions/distinct_2": 0.5,
                                   "rewards/loglik/mean": 1.0}
    assert upgrade_record(upgrade_record(old)) == upgrade_record(old)
