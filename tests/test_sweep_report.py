"""`rcfd sweep` (grids, skipping finished runs, resuming an interrupted one) and `rcfd report`
(figures that load and are not blank in headless Chromium)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rcfd.errors import RcfdError
from rcfd.report.html import compute_rows
from rcfd.report.results import RunResult
from rcfd.plans.sweep import plan_runs, run_or_load

TINY_STEPS = ["train.steps=3", "train.save_every=1", "eval.long_tokens=24"]


def test_plan_runs_expands_grids_into_families():
    runs = {r.name: r.overrides for r in plan_runs(["beta=0,0.1", "alpha=0.5", "train.learning_rate=1e-3"], with_rcfd=True)}
    assert runs["beta=0.1"] == ["objective.name=kl", "objective.beta=0.1"]
    assert runs["alpha=0.5"] == ["objective.name=weighted", "objective.alpha=0.5"]
    assert runs["train.learning_rate=1e-3"] == ["train.learning_rate=1e-3"]
    assert runs["rcfd"] == ["objective.name=rcfd"]


@pytest.mark.parametrize("grids, message", [
    (["beta"], "is not KEY=V1,V2"), (["gamma=1,2"], "key 'gamma' is unknown"), (["beta=a"], "not a number"),
    (["beta=0,0"], "lists a run twice"), ([], "nothing to run"),
])
def test_bad_grids_name_the_problem(grids, message):
    with pytest.raises(RcfdError, match=message):
        plan_runs(grids, with_rcfd=False)


def test_a_run_directory_made_with_other_settings_is_not_reused(tmp_path):
    import yaml

    from rcfd.config import load_config, packaged_config

    run_dir = tmp_path / "beta0"
    run_dir.mkdir()
    old = load_config(packaged_config("wiki"), ["objective.name=reward", "train.learning_rate=1.5e-3"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(old.to_dict(), sort_keys=False))
    (run_dir / "summary.json").write_text(json.dumps({"reward_mean": -2.0}))
    new = load_config(packaged_config("wiki"), ["objective.name=reward", "train.learning_rate=2e-3"])
    with pytest.raises(RcfdError, match=r"other settings: train.learning_rate \(0.0015 there, 0.002 now\)"):
        run_or_load(new, run_dir, progress=False)
    _, summary, _ = run_or_load(old, run_dir, progress=False)  # same settings: read back, not retrained
    assert summary == {"reward_mean": -2.0}


def test_base_metrics_are_read_back_only_while_the_settings_stay_the_same(tmp_path, monkeypatch):
    from rcfd.plans import sweep
    from rcfd.config import load_config, packaged_config

    calls = []
    monkeypatch.setattr(sweep, "evaluate_base", lambda config, *a: calls.append(config) or {"reward_mean": len(calls)})
    config = load_config(packaged_config("wiki"), ["objective.name=reward"])
    cache = tmp_path / "base"
    assert sweep.base_metrics(config, cache, None, False) == {"reward_mean": 1}
    assert sweep.base_metrics(config, cache, None, False) == {"reward_mean": 1}
    other = load_config(packaged_config("wiki"), ["objective.name=reward", "eval.batch_size=64"])
    assert sweep.base_metrics(other, cache, None, False) == {"reward_mean": 2}
    assert len(calls) == 2


def _run(name, alignment, seconds, family, param=None):
    return RunResult(name, {"alignment": alignment}, None, family, param, ["loglik"], seconds)


def test_compute_to_solution_counts_the_whole_sweep():
    runs = [_run("beta=0", 0.9, 10, "beta", 0.0), _run("beta=0.1", 0.12, 10, "beta", 0.1),
            _run("beta=0.3", 0.3, 10, "beta", 0.3), _run("rcfd", 0.1, 10, "rcfd")]
    rows = compute_rows(runs, threshold=0.15)
    given, as_good = rows
    assert "reached" in given[1] and "1 run(s) reach it" in given[2] and given[3] == "30.0" and given[4] == "3.0×"
    assert "0 run(s) reach it" in as_good[2] and as_good[4] == "3.0× (the sweep found none)"  # RCfD: A 0.1


# ----------------------------------------------------------------------------- end-to-end on the tiny model
@pytest.fixture(scope="module")
def interrupted_then_resumed_sweep(tmp_path_factory, monkeypatch_module):
    """A 3-run sweep interrupted during its second run, then rerun with the same command."""
    import rcfd.train.trainer as trainer_module
    from rcfd.plans.sweep import run_sweep
    from rcfd.tasks import get_task

    out = tmp_path_factory.mktemp("sweep")
    real = trainer_module.run_training
    calls = []

    def interrupting(config, out_dir, **kwargs):
        calls.append((out_dir.name, kwargs.get("resume")))
        if len(calls) == 2:  # two of three steps done and checkpointed, then the user hits Ctrl-C
            t = trainer_module.Trainer(config, out_dir, resume=kwargs.get("resume", False), progress=False)
            t.train(steps=2)
            raise KeyboardInterrupt
        return real(config, out_dir, **kwargs)

    monkeypatch_module.setattr(trainer_module, "run_training", interrupting)
    args = dict(config_path=get_task("tiny").config_path, grids=["beta=0,0.1"], with_rcfd=True,
                overrides=TINY_STEPS, progress=False, task="tiny")
    with pytest.raises(KeyboardInterrupt):
        run_sweep(out, **args)
    first_summary = (out / "beta=0" / "summary.json").stat().st_mtime_ns
    record = run_sweep(out, **args)
    return out, record, calls, first_summary


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.mark.slow
def test_sweep_resumes_without_redoing_finished_runs(interrupted_then_resumed_sweep):
    out, record, calls, first_summary = interrupted_then_resumed_sweep
    # beta=0 trained once; beta=0.1 started, was interrupted, then resumed; rcfd trained once.
    assert calls == [("beta=0", False), ("beta=0.1", False), ("beta=0.1", True), ("rcfd", False)]
    assert (out / "beta=0" / "summary.json").stat().st_mtime_ns == first_summary
    steps = [json.loads(line)["step"] for line in (out / "beta=0.1" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # resumed at step 3, not restarted
    saved = json.loads((out / "sweep.json").read_text())
    assert (out / "base" / "summary.json").exists()  # the base model, evaluated once and kept
    assert set(saved["runs"]) == {"beta=0", "beta=0.1", "rcfd"} and saved["base"]["metrics"]["reward_mean"] == \
        record["base"]["metrics"]["reward_mean"]
    for name, run in saved["runs"].items():
        assert run["metrics"]["steps"] == 3 and run["train_step_seconds"] > 0
        assert run["config"]["train"]["seed"] == 0 and run["metrics"]["reward_samples"]
    assert saved["runs"]["beta=0.1"]["config"]["objective"] == {**saved["runs"]["beta=0.1"]["config"]["objective"],
                                                                 "name": "kl", "beta": 0.1}


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_report_figures_load_and_are_not_blank_in_chromium(interrupted_then_resumed_sweep, tmp_path):
    import numpy as np
    from PIL import Image

    from rcfd.report.html import FIGURES, build_report

    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI; `make test-slow` installs it (target `browser`)")
        pytest.skip("no chromium here; `make browser` installs Debian's")
    out, _, _, _ = interrupted_then_resumed_sweep
    report = build_report([out], tmp_path / "report.html")
    assert sorted(p.name for p in (tmp_path / "report_figures").iterdir()) == sorted(f"{n}.png" for n, *_ in FIGURES)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
             "--window-size=1200,6000"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    body = dom[dom.index("<body"):dom.index(">", dom.index("<body"))]
    attrs = dict(kv.split("=", 1) for kv in body.split()[1:])
    assert attrs["data-figures"].strip('"') == str(len(FIGURES))
    assert attrs["data-figures-loaded"].strip('"') == str(len(FIGURES))
    boxes = json.loads(attrs["data-figure-boxes"].strip('"').replace("&quot;", '"'))
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120,
                   check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    for x, y, w, h in boxes:
        assert w > 300 and h > 200, "figure drawn too small"
        crop = pixels[y:y + h, x:x + w]
        assert crop.size and y + h <= pixels.shape[0], "figure outside the screenshot"
        assert crop.std() > 10 and (crop < 128).mean() > 0.005, "figure area is blank"


def test_report_of_a_demo_whose_runs_were_scored_with_different_rewards(tmp_path):
    """A demo directory in the older format (summary.json holding every run, no sweep.json): an older
    quality-only run (scored with similarity alone) next to runs scored with similarity and length; the
    demonstrations keep both rewards, and that run is left off what it has no value for."""
    import yaml

    from rcfd.report.html import build_report
    from rcfd.report.results import load_results

    both, one = ["similarity", "length"], ["similarity"]

    def metrics(names, objective, sim, length):
        m = {"objective": objective, "reward_mean": sim, "reward_std": 0.1, "alignment": 0.3, "wasserstein": 0.1,
             "mean_length": -length, "distinct_2": 0.8, "repetition_4": 0.0, "kl_to_ref": 1.0,
             "demo_reward_mean": 0.5, "demo_reward_std": 0.1, "demo_mean_length": 9.0, "demo_distinct_2": 0.8,
             "demo_repetition_4": 0.0}
        for n, value in zip(names, (sim, length)):
            m.update({f"rewards/{n}/mean": value, f"rewards/{n}/demo_mean": 0.5 if n == "similarity" else -9.0,
                      f"rewards/{n}/demo_std": 0.1 if n == "similarity" else 4.0, f"rewards/{n}/alignment": 0.3})
        return m

    runs = {"base": (one, "none", 0.4, -17.0), "quality": (one, "reward", 0.85, -24.0),
            "rcfd": (both, "rcfd", 0.55, -10.0), "alpha=0.01": (both, "weighted", 0.7, -4.0)}
    summary = {"runs": {}, "reward_samples": {}, "demo_reward_samples": [[0.5]] * 8}
    for name, (names, objective, sim, length) in runs.items():
        summary["runs"][name] = metrics(names, objective, sim, length)
        summary["reward_samples"][name] = [[sim, length][:len(names)]] * 8
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump({"reward": {"names": names}}))
    (tmp_path / "summary.json").write_text(json.dumps(summary))

    loaded, demo = load_results([tmp_path])
    assert demo.reward_names == both and demo.reward_means == [0.5, -9.0]
    assert demo.reward_samples is None  # the stored demonstration samples have one column, not two
    assert {r.name: r.reward_names for r in loaded}["quality"] == one
    assert build_report([tmp_path], tmp_path / "report.html").exists()


def test_the_demo_table_says_how_far_each_run_is_from_the_demonstrations_per_reward():
    from rcfd.report.tables import format_calibration, format_table

    def run(sim, length):
        m = {"reward_mean": sim, "reward_std": 0.1, "alignment": 0.2, "wasserstein": 0.1, "mean_length": -length,
             "distinct_2": 0.8, "repetition_4": 0.0, "kl_to_ref": 1.0, "demo_reward_mean": 0.5,
             "demo_reward_std": 0.1, "demo_mean_length": 9.0, "demo_distinct_2": 0.8, "demo_repetition_4": 0.0}
        for n, value, mean, std in (("similarity", sim, 0.5, 0.1), ("length", length, -9.0, 4.0)):
            m.update({f"rewards/{n}/mean": value, f"rewards/{n}/demo_mean": mean, f"rewards/{n}/demo_std": std,
                      f"rewards/{n}/alignment": 0.25})
        return m

    text = format_calibration({"rcfd": run(0.55, -11.0), "quality": run(0.85, -24.0)})
    assert "rcfd     similarity +0.50 (A 0.250), length -0.50 (A 0.250)" in text
    assert "quality  similarity +3.50" in text and "length -3.75" in text
    single = {k: v for k, v in run(0.55, -11.0).items() if "/length/" not in k}
    assert format_calibration({"beta0": single}) == "" and "demonstrations" in format_table({"beta0": single})
    table = format_table({"beta0": single}).splitlines()
    assert "vs demos (σ)" in table[0]
    assert table[2].split()[2] == "+0.00" and table[3].split()[2] == "+0.50"  # (0.55 − 0.5) / 0.1


def test_the_report_says_what_it_shows_task_seed_steps_captions_and_short_training_times(tmp_path):
    """The header named neither task, seed nor steps; captions were file paths; 0.4 s of training read 0."""
    import re

    from rcfd.report.html import FIGURES, build_report

    run = tmp_path / "rcfd"
    shutil.copytree(Path(__file__).parent / "data" / "stored" / "rcfd", run)
    config = (run / "config.yaml").read_text()
    seed = re.search(r"\n  seed: (\d+)", config).group(1)
    steps = re.search(r"\n  steps: (\d+)", config).group(1)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "train_seconds": 0.4}))
    (run / "metrics.jsonl").rename(tmp_path / "kept.jsonl")  # so the summary's 0.4 s is the training time
    text = build_report([run], tmp_path / "report.html").read_text()
    assert f"seed {seed}; RL steps {steps}</b>" in text
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", text)
    assert len(captions) == len(FIGURES) and all(len(c.split()) > 12 for c in captions)
    assert re.search(r"<td class='num'>0\.4</td></tr>", text)
