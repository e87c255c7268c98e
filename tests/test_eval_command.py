"""``rcfd eval`` reports the trained policy of a finished or interrupted run and only reads the run;
a run killed while it loads can be resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rcfd.cli import main
from rcfd.errors import RcfdError
from rcfd_testing import fingerprint


def _eval(run, out, *extra):
    assert main(["eval", str(run), "--quiet", "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_eval_of_a_finished_rl_run_is_its_trained_policy(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--task", "tiny", "--out", str(run), "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    before = fingerprint(run)
    trained = _eval(run, tmp_path / "eval.json")
    base = _eval(run, tmp_path / "base.json", "--base")
    assert fingerprint(run) == before
    assert trained["weights"].endswith("final")
    assert trained["reward_mean"] == pytest.approx(summary["reward_mean"], abs=1e-5)
    assert trained["kl_to_ref"] == pytest.approx(summary["kl_to_ref"], abs=1e-5) and trained["kl_to_ref"] != 0
    assert base["kl_to_ref"] == 0.0 and base["reward_mean"] != trained["reward_mean"]
    unseen = _eval(run, tmp_path / "unseen.json", "--unseen", "12")  # pairs neither split used
    assert len(unseen["reward_samples"]) == 12 and unseen["demo_reward_mean"] != trained["demo_reward_mean"]
    assert fingerprint(run) == before


def test_eval_of_an_interrupted_run_uses_its_newest_checkpoint(tmp_path, tiny_config):
    from rcfd.train.trainer import Trainer

    run = tmp_path / "interrupted"
    trainer = Trainer(tiny_config("train.steps=4", "train.save_every=1"), run, progress=False)
    trainer.train(steps=2)  # stops after step 2 like an interrupted run: checkpoints, no final/
    expected = trainer.evaluate()
    del trainer
    assert not (run / "final").exists()
    before = fingerprint(run)
    result = _eval(run, tmp_path / "eval.json")
    assert fingerprint(run) == before
    assert result["weights"].endswith("step-000002")
    assert result["reward_mean"] == pytest.approx(expected["reward_mean"], abs=1e-5)
    assert result["kl_to_ref"] != 0.0


def test_eval_of_a_run_with_nothing_trained_says_so(tmp_path, tiny_config):
    from rcfd.train.rundir import RunDir

    RunDir(tmp_path / "empty").write_config(tiny_config())
    with pytest.raises(RcfdError, match="nothing was trained yet"):
        main(["eval", str(tmp_path / "empty"), "--quiet", "--debug"])
    with pytest.raises(RcfdError, match="has no config.yaml"):
        main(["eval", str(tmp_path / "nowhere"), "--quiet", "--debug"])


def test_a_run_killed_while_loading_resumes(tmp_path):
    run = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "rcfd", "train", "--task", "tiny", "--out", str(run),
                             "--steps", "2", "--no-eval", "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "config.yaml").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # the config is written; models and data are still loading
    proc.wait()
    assert (run / "config.yaml").exists() and not (run / "metrics.jsonl").exists()
    assert main(["train", "--resume", str(run), "--no-eval", "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
