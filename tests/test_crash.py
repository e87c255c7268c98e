"""SIGKILL a training run at random moments (some while a checkpoint is being written), resume it,
and check that it finishes with exactly the metrics and weights of an uninterrupted run."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from rcfd_testing import TINY
from rcfd.train.checkpoint import latest_checkpoint
from rcfd.cli import main

STEPS = 8
ARGS = ["--steps", str(STEPS), "--set", "train.save_every=1", "--no-eval", "--quiet"]
TRIALS = 10


def _spawn(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-m", "rcfd.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_during_run(proc, run, rng, during_checkpoint: bool) -> str:
    """Wait until training has started, then SIGKILL at a random moment; return where it hit."""
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if during_checkpoint:
        # Kill as soon as a checkpoint is being written (its temporary directory exists).
        skip = rng.randrange(0, STEPS - 2)
        seen = 0
        while proc.poll() is None and time.time() < deadline:
            if any(p.name.startswith(".tmp-step-") for p in (run / "checkpoints").glob(".tmp-*")):
                if seen >= skip:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return "checkpoint-write"
                seen += 1
                while any((run / "checkpoints").glob(".tmp-*")) and proc.poll() is None:
                    time.sleep(0.001)
            time.sleep(0.0005)
        return "finished-first"
    time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is not None:
        return "finished-first"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return "random"


def _kill_and_resume(tmp_path, capsys, trials: int, checkpoint_kills: int, seed: int):
    reference = tmp_path / "reference"
    assert main(["train", "--config", str(TINY), "--out", str(reference), *ARGS]) == 0
    ref_metrics = (reference / "metrics.jsonl").read_text()
    ref_weights = load_file(str(latest_checkpoint(reference / "checkpoints") / "trainable.safetensors"))

    rng = random.Random(seed)
    survived, hits = 0, []
    for trial in range(trials):
        run = tmp_path / f"trial{trial}"
        proc = _spawn("train", "--config", str(TINY), "--out", str(run), *ARGS)
        hits.append(_kill_during_run(proc, run, rng, during_checkpoint=trial % 2 == 1))
        resumed = _spawn("train", "--resume", str(run), "--no-eval", "--quiet")
        _, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err
        weights = load_file(str(latest_checkpoint(run / "checkpoints") / "trainable.safetensors"))
        same = (run / "metrics.jsonl").read_text() == ref_metrics and all(
            torch.equal(weights[k], ref_weights[k]) for k in ref_weights)
        survived += same
    with capsys.disabled():
        print(f"\ncrash trials: {survived}/{trials} resumed to identical results; kills: {hits}")
    assert survived == trials
    assert hits.count("checkpoint-write") >= checkpoint_kills


def test_sigkill_at_random_moments_then_resume(tmp_path, capsys):
    _kill_and_resume(tmp_path, capsys, trials=2, checkpoint_kills=1, seed=1234)


@pytest.mark.slow  # ~200 s: ten kills; the default suite runs two
def test_sigkill_ten_times_then_resume(tmp_path, capsys):
    _kill_and_resume(tmp_path, capsys, trials=TRIALS, checkpoint_kills=3, seed=4321)


def test_ctrl_c_stops_at_step_boundary_and_resumes_exactly(tmp_path):
    reference = tmp_path / "reference"
    assert main(["train", "--config", str(TINY), "--out", str(reference), *ARGS]) == 0
    run = tmp_path / "interrupted"
    proc = _spawn("train", "--config", str(TINY), "--out", str(run), *ARGS)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130 and "--resume" in err
    saved = latest_checkpoint(run / "checkpoints")
    steps_logged = len((run / "metrics.jsonl").read_text().splitlines())
    assert saved is not None and saved.name == f"step-{steps_logged:06d}"
    resumed = _spawn("train", "--resume", str(run), "--no-eval", "--quiet")
    assert resumed.wait(timeout=300) == 0
    assert (run / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
