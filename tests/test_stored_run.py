"""Same config and seed give the same numbers as tiny-model runs stored before the code was
reorganized: tests/data/*/metrics.jsonl (written under the old metric names, read under today's) and
tests/data/stored/*/ (metrics.jsonl and summary.json of eight objectives and options, written at 66bf1ca
before the objectives became objects and the investigation options left); the presets resolve to the
values they had then."""

import json
from pathlib import Path

import pytest

from rcfd.cli import main
from rcfd.config import load_config
from rcfd.eval.metric_names import upgrade_record
from rcfd.files import read_json, read_jsonl
from rcfd.tasks import TASKS

DATA = Path(__file__).parent / "data"
STORED = sorted(p.name for p in (DATA / "stored").iterdir() if p.is_dir())
TIMINGS = {"train_seconds", "wall_seconds"}


def _records(path):
    return read_jsonl(path)  # today's files write a NaN as null, the stored ones as a bare NaN


def _same(new, old, where):
    if isinstance(old, list):
        assert len(new) == len(old), where
        for i, (a, b) in enumerate(zip(new, old)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(old, float):
        # equal on the machine that stored them; a tolerance for another CPU's float rounding
        assert new == pytest.approx(old, rel=1e-4, abs=1e-5, nan_ok=True), where
    else:
        assert new == old, where


@pytest.mark.parametrize("stored", ["tiny-run", "tiny-run-k4"])
def test_a_stored_run_is_reproduced(tmp_path, stored):
    run = tmp_path / stored
    assert main(["train", "--config", str(DATA / stored / "config.yaml"), "--out", str(run), "--quiet", "--no-eval"]) == 0
    expected = [upgrade_record(r) for r in _records(DATA / stored / "metrics.jsonl")]
    got = _records(run / "metrics.jsonl")
    assert [sorted(r) for r in got] == [sorted(r) for r in expected]  # the same metrics, under today's names
    for new, old in zip(got, expected):
        for key, value in old.items():
            _same(new[key], value, (new["step"], key))


@pytest.mark.parametrize("stored", STORED)
def test_each_objective_and_option_writes_what_it_wrote_before(tmp_path, stored):
    """The stored config.yaml names every field of the old code, the removed ones at their neutral values."""
    run = tmp_path / stored
    assert main(["train", "--config", str(DATA / "stored" / stored / "config.yaml"), "--out", str(run), "--quiet"]) == 0
    expected = _records(DATA / "stored" / stored / "metrics.jsonl")
    got = _records(run / "metrics.jsonl")
    assert [sorted(r) for r in got] == [sorted(r) for r in expected]
    for new, old in zip(got, expected):
        for key, value in old.items():
            _same(new[key], value, (stored, new["step"], key))
    summary = read_json(run / "summary.json")
    old_summary = read_json(DATA / "stored" / stored / "summary.json")
    assert sorted(summary) == sorted(old_summary)
    mismatched = []  # every key, not the first, so a failure on another CPU says all it found
    for key in sorted(set(old_summary) - TIMINGS):
        try:
            _same(summary[key], old_summary[key], (stored, key))
        except AssertionError:
            mismatched.append((key, summary[key], old_summary[key]))
    assert not mismatched, mismatched


def test_presets_resolve_to_the_values_they_had():
    before = json.loads((DATA / "stored" / "preset-configs.json").read_text())
    assert set(before) <= set(TASKS)  # presets added since are new, not changed
    for name, task in ((n, TASKS[n]) for n in before):
        now = load_config(task.config_path).to_dict()
        for section, fields in before[name].items():
            for key, value in fields.items():
                if key in now[section]:
                    assert now[section][key] == value, (name, section, key)
                else:  # a removed field: the preset had it at today's behaviour
                    from rcfd.config import REMOVED_FIELDS

                    assert REMOVED_FIELDS[f"{section}.{key}"][0] == value, (name, section, key)


def test_old_names_map_to_namespaced_ones():
    old = {"step": 3, "reward": 1.0, "kl": 2.0, "distinct_2": 0.5, "rewards/loglik/mean": 1.0}
    assert upgrade_record(old) == {"step": 3, "train/reward": 1.0, "train/kl": 2.0, "completions/distinct_2": 0.5,
                                   "rewards/loglik/mean": 1.0}
    assert upgrade_record(upgrade_record(old)) == upgrade_record(old)
