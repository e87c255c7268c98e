"""The CLI on the tiny model: `rcfd train` and `rcfd eval` files, summary, determinism, resume, failures and
one-line errors (the loop and its options: tests/test_trainer.py)."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from rcfd_testing import TINY
from rcfd.cli import main

SUMMARY_KEYS = {
    "objective", "reward_mean", "reward_std", "demo_reward_mean", "demo_reward_std", "alignment", "wasserstein",
    "mean_length", "demo_mean_length", "distinct_2", "demo_distinct_2", "repetition_4", "demo_repetition_4",
    "repeat_4_texts", "demo_repeat_4_texts",
    "kl_to_ref", "wall_seconds", "loglik_by_position", "demo_loglik_by_position",
}


def _train(out, *extra):
    return main(["train", "--task", "tiny", "--out", str(out), "--quiet", *extra])  # the preset = configs/tiny.yaml


def _final_weights(run):
    return load_file(str(sorted((run / "checkpoints").glob("step-*"))[-1] / "trainable.safetensors"))


def test_train_and_eval_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    for name in ("config.yaml", "metrics.jsonl", "samples.jsonl", "summary.json", "final/adapter_config.json"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["step"] == 4
    assert "demonstrations" in capsys.readouterr().out
    # `rcfd eval` on this run: tests/test_eval_command.py

@pytest.mark.parametrize("objective", ["reward", "kl"])
def test_other_objectives_run(tmp_path, objective):
    assert _train(tmp_path / objective, "--steps", "2", "--no-eval", "--set", f"objective.name={objective}",
                  "--set", "objective.beta_end=0.2") == 0


def test_same_seed_same_metrics(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for run in (a, b):
        assert _train(run, "--no-eval") == 0
    assert _train(c, "--no-eval", "--seed", "1") == 0
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    assert (a / "metrics.jsonl").read_text() != (c / "metrics.jsonl").read_text()






def test_calibrate_also_is_calibrated_by_rcfd_and_ignored_by_reward_maximization(tmp_path):
    also = ("--set", "reward.calibrate_also=[length]")
    rows = {}
    for objective in ("reward", "rcfd"):
        for extra in ((), also):
            run = tmp_path / f"{objective}{len(extra)}"
            assert _train(run, "--no-eval", "--steps", "2", "--set", f"objective.name={objective}", *extra) == 0
            rows[objective, bool(extra)] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("rewards/length/mean" in r for r in rows["reward", True] + rows["rcfd", True])
    own = lambda rs: [{k: v for k, v in r.items() if not k.startswith("rewards/length/")} for r in rs]  # noqa: E731
    # beta0 scores the extra column but does not optimize it: the same run as without it (to float
    # rounding: a column of a two-column tensor is summed in another order)
    for with_also, without in zip(own(rows["reward", True]), own(rows["reward", False]), strict=True):
        assert with_also == pytest.approx(without, rel=1e-6, abs=1e-6)
    # RCfD calibrates it as a second reward: the whitened objective, hence the update, changes
    assert rows["rcfd", True][0]["train/objective"] != rows["rcfd", False][0]["train/objective"]


def test_eval_every_logs_calibration_without_changing_training(tmp_path):
    plain, watched = tmp_path / "plain", tmp_path / "watched"
    assert _train(plain, "--no-eval") == 0
    assert _train(watched, "--no-eval", "--set", "train.eval_every=2", "--set", "train.eval_prompts=8") == 0
    rows = [json.loads(line) for line in (watched / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/reward_z" in r] == [2, 4]
    assert {"eval/alignment", "eval/distinct_2_rel", "eval/naturalness"} <= set(rows[1])
    strip = lambda text: [{k: v for k, v in json.loads(line).items() if not k.startswith("eval/")}  # noqa: E731
                          for line in text.splitlines()]
    assert strip((plain / "metrics.jsonl").read_text()) == strip((watched / "metrics.jsonl").read_text())


def test_summary_states_the_noise_of_the_calibration_figures(tmp_path):
    run = tmp_path / "run"
    assert _train(run, "--steps", "1", "--set", "eval.samples_per_prompt=3") == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["samples_per_prompt"] == 3 and len(s["reward_samples"]) == 3 * s["num_prompts"]
    assert len(s["demo_reward_samples"]) == s["num_prompts"]
    for key in ("reward_mean_se", "reward_gap_se", "alignment_floor", "naturalness", "demo_naturalness",
                "demo_naturalness_std"):
        assert key in s and s[key] == s[key], key  # present and not nan
    # on the loglik task the naturalness of a text is its reward
    assert s["naturalness"] == pytest.approx(s["reward_mean"], abs=1e-4)
    assert s["demo_naturalness"] == pytest.approx(s["demo_reward_mean"], abs=1e-4)


@pytest.fixture(autouse=True)
def _reset_reward_fixture_counters():
    import reward_fixtures

    reward_fixtures.nan_after_first.calls = 0


def test_nan_reward_stops_with_resumable_checkpoint(tmp_path, capsys):
    run = tmp_path / "nan"
    code = _train(run, "--no-eval", "--set", "reward.names=reward_fixtures:nan_after_first",
                  "--set", "objective.name=reward")
    assert code == 2
    note, error = capsys.readouterr().err.strip().splitlines()
    assert note == (f"rcfd: step 2 failed before it changed the weights; the run is checkpointed at step 1: "
                    f"continue it with `rcfd train --resume {run}` once fixed")
    assert error.startswith("rcfd: error:") and "not finite at step 2" in error and "skip_nonfinite" in error
    ckpts = list((run / "checkpoints").glob("step-*"))
    assert [p.name for p in ckpts] == ["step-000001"]
    assert (ckpts[0] / "manifest.json").exists()


def test_skip_nonfinite_counts_samples(tmp_path):
    run = tmp_path / "skip"
    assert _train(run, "--no-eval", "--steps", "3", "--set", "reward.names=reward_fixtures:nan_after_first",
                  "--set", "objective.name=reward", "--set", "train.skip_nonfinite=true") == 0
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["train/skipped_samples"] == 2


def _cli(*args, cwd=None):
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "rcfd.cli", *args], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.mark.parametrize(
    "setup,args,needle",
    [
        (None, ["train", "--config", "missing.yaml", "--out", "o"], "does not exist"),
        ("train:\n  stpes: 3\n", ["train", "--config", "c.yaml", "--out", "o"], "did you mean 'steps'"),
        ("objective:\n  name: ppo\n", ["train", "--config", "c.yaml", "--out", "o"], "unknown objective 'ppo'"),
        (None, ["train", "--config", str(TINY), "--out", "o", "--set", "data.source=d.jsonl",
                "--set", "data.prompt_column=question"], "no column 'demonstration'"),
        (None, ["train", "--config", str(TINY), "--out", "o", "--set", "data.source=empty.jsonl"], "empty prompt"),
        (None, ["train", "--config", str(TINY), "--out", "d.jsonl/run"], "cannot write to output directory"),
        (None, ["train", "--task", "tiny", "--config", str(TINY), "--out", "o"], "either --task or --config"),
        (None, ["train", "--task", "tinny", "--out", "o"], "unknown task 'tinny'"),
        (None, ["train", "--config", str(TINY), "--out", "o", "--set", "model.name=./no-such-model"], "does not exist"),
        (None, ["train", "--config", str(TINY), "--out", "o", "--set", "reward.names=reward_fixtures:always_nan",
                "--set", "objective.name=reward", "--no-eval"], "not finite"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, setup, args, needle):
    if setup:
        (tmp_path / "c.yaml").write_text(setup)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"question": f"q {i}", "answer": "a"}) for i in range(9)))
    (tmp_path / "empty.jsonl").write_text("\n".join(json.dumps({"prompt": "" if i == 2 else "p", "demonstration": "d"})
                                                    for i in range(9)))
    monkeypatch.chdir(tmp_path)  # in-process (a real process: the test below)
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("rcfd: error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    if needle in ("did you mean 'steps'", "not finite"):  # --debug raises (one config error, one run error)
        with pytest.raises(Exception):
            main([*args, "--debug"])


def test_a_real_process_prints_one_line_and_the_traceback_only_with_debug(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  stpes: 3\n")
    proc = _cli("train", "--config", "c.yaml", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("rcfd: error:") and "did you mean 'steps'" in proc.stderr
    assert "Traceback" in _cli("train", "--config", "c.yaml", "--out", "o", "--debug", cwd=tmp_path).stderr


def test_materializing_the_model_does_not_change_the_run(tmp_path, monkeypatch):
    """A first run (which builds the packaged model) gives the same metrics as a later one."""
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("RCFD_CACHE", str(tmp_path / "fresh-cache"))
    assert _train(a, "--no-eval", "--steps", "2") == 0  # builds tiny-llama into the empty cache
    assert _train(b, "--no-eval", "--steps", "2") == 0  # finds it cached
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()


def test_tensorboard_tracker_gets_every_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    assert _train(run, "--steps", "2", "--no-eval", "--set", "train.report_to=tensorboard") == 0
    logs = [p.parent for p in (run / "tensorboard").rglob("events.out.tfevents.*")]
    scalars = {}
    for d in logs:
        acc = EventAccumulator(str(d))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [e.step for e in acc.Scalars(tag)]
    assert scalars["train/reward"] == [1, 2] and scalars["train/kl"] == [1, 2]


def test_missing_tracker_package_is_a_one_line_error(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb"):
        pytest.skip("wandb is installed here")
    assert _train(tmp_path / "wb", "--steps", "1", "--no-eval", "--set", "train.report_to=wandb") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install wandb" in err[0]


def test_sigterm_checkpoints_the_run_like_ctrl_c(tmp_path):
    """What Slurm, Kubernetes and `docker stop` send: the step finishes, a checkpoint is written, the exit
    says how to continue."""
    import os
    import signal
    import time

    run = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "rcfd", "train", "--task", "tiny", "--out", str(run), "--quiet",
                             "--no-eval", "--steps", "200", "--set", "train.save_every=0"],
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGTERM: stopping after this step" in err and "--resume" in err
    steps = [int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*")]
    assert len(steps) == 1 and 1 <= steps[0] < 200
    assert len((run / "metrics.jsonl").read_text().splitlines()) == steps[0]


def test_two_trainers_of_one_directory_are_refused(tmp_path, tiny_config):
    from rcfd.errors import RcfdError
    from rcfd.train.trainer import Trainer

    first = Trainer(tiny_config("train.steps=2"), tmp_path / "run", progress=False)
    with pytest.raises(RcfdError, match="another process is writing to"):
        Trainer(tiny_config("train.steps=2"), tmp_path / "run", resume=True, progress=False)
    first.train()


def test_resume_of_a_finished_or_missing_run_says_so_in_one_line(tmp_path, capsys):
    run = tmp_path / "done"
    assert main(["train", "--task", "tiny", "--out", str(run), "--steps", "1", "--no-eval", "--quiet"]) == 0
    before = (run / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # a kill that came at the end resumes to this
    err = capsys.readouterr().err.strip()
    assert "is a finished run of 1 steps: nothing to resume" in err and len(err.splitlines()) == 1
    assert (run / "summary.json").read_bytes() == before  # nothing re-evaluated or rewritten
    assert main(["train", "--resume", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "no run directory" in capsys.readouterr().err


def test_run_files_are_strict_json_with_null_for_a_figure_that_is_not_a_number(tmp_path):
    """jq, JavaScript and strict parsers reject a bare NaN: rcfd writes null and reads it back as NaN.
    (The length of the tiny task's demonstrations does not vary, so its standardized reward is not a number.)"""
    from rcfd.train.rundir import RunDir

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in a run file"))

    run = tmp_path / "run"
    assert _train(run, "--steps", "1", "--set", "reward.names=[length]") == 0
    summary = strict((run / "summary.json").read_text())
    nulls = [k for k, v in summary.items() if v is None]
    assert nulls, "the tiny task's length reward should leave a figure that is not a number"
    for line in (run / "metrics.jsonl").read_text().splitlines():
        strict(line)
    read = RunDir(run).read_summary()
    assert all(read[k] != read[k] for k in nulls)  # NaN again for rcfd's own readers


def test_resume_refuses_settings_that_would_make_it_another_run_and_writes_nothing(tmp_path, capsys):
    """`--resume DIR --set objective.name=kl` used to run the last steps as another run under the old name,
    and a bad override was written to config.yaml before loading failed, breaking every later resume."""
    run = tmp_path / "run"
    assert _train(run, "--no-eval", "--steps", "2") == 0
    saved = (run / "config.yaml").read_text()
    capsys.readouterr()
    for change in ("objective.name=kl", "train.learning_rate=0.1", "model.lora_r=4"):
        assert main(["train", "--resume", str(run), "--quiet", "--no-eval", "--set", change]) == 2
        err = capsys.readouterr().err.strip()
        assert change.split("=")[0] in err and "new --out" in err and len(err.splitlines()) == 1
        assert (run / "config.yaml").read_text() == saved
    assert main(["train", "--resume", str(run), "--quiet", "--no-eval", "--steps", "3"]) == 0  # longer: allowed
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
