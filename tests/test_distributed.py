"""Our trainer under `accelerate launch` with 2 CPU processes (gloo) on the tiny model."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rcfd_testing import TINY

HELPER = Path(__file__).parent / "helpers" / "two_process_train.py"


def _free_port() -> int:
    # A fresh port per launch: back-to-back launches on accelerate's fixed default (29500) can find it
    # still held by the previous run's processes.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(num_processes: int, out: Path, helper: Path = HELPER) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent / "helpers"))
    # `--multi_gpu` selects accelerate's multi-process launcher; without a GPU the processes talk over gloo
    # (`--cpu` would start a single process).
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu" if num_processes > 1 else "--cpu",
           "--num_processes", str(num_processes),
           "--num_machines", "1", "--main_process_port", str(_free_port()),
           "--mixed_precision", "no", "--dynamo_backend", "no",
           str(helper), str(TINY), str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # ~50 s: three interpreter launches; CI runs it with `make test-slow`
def test_two_processes_train_like_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for n, out in ((1, one), (2, two)):
        proc = _launch(n, out)
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {n: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for n, d in ((1, one), (2, two))}
    assert len(rows[1]) == len(rows[2]) == 2  # one metrics line per step, written once (main process)
    assert [sorted(r) for r in rows[1]] == [sorted(r) for r in rows[2]]
    sums = json.loads((two / "checksums.json").read_text())
    assert sums["world"] == 2 and sums["checksums"][0] == sums["checksums"][1]  # averaged gradients
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == sorted(p.name for p in (one / "checkpoints").iterdir())
    # The global batch is the same 8 prompts; each process generated half of them.
    assert abs(rows[2][0]["rewards/loglik/demo_mean"] - rows[1][0]["rewards/loglik/demo_mean"]) < 1e-5


@pytest.mark.slow  # ~30 s: one step under two processes
def test_two_processes_deal_out_whole_groups(tmp_path):
    proc = _launch(2, tmp_path / "groups", Path(__file__).parent / "helpers" / "two_process_groups.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads((tmp_path / "groups" / "groups.json").read_text())
    assert found["world"] == 2
    mine = found["prompts"]  # one list of rollout prompts per process
    assert len(mine[0]) == len(mine[1]) == 4  # 8 rollouts: 4 prompts x k = 2, two groups per process
    for rows in mine:
        assert all(rows[i] == rows[i + 1] for i in range(0, len(rows), 2))  # each group's rows side by side
    assert not set(mine[0]) & set(mine[1])  # no group straddles two processes
    assert "rewards/loglik/demo_mean" in found["record"]
    assert found["batch_advantage_gap"] < 1e-5  # rcfd-batch's gap totals span both processes


def test_train_command_leaves_the_process_group(tmp_path, monkeypatch):
    """`rcfd train` tears its process group down before exiting (a process that exits with the gloo group
    still up can abort in gloo's threads), on every process, the non-main ones included."""
    import rcfd.train.trainer
    from rcfd.cli import main

    closed = []

    class Procs:
        def close(self):
            closed.append(True)

    class Trained:
        procs = Procs()

    monkeypatch.setattr(rcfd.train.trainer, "run_training", lambda *a, **kw: (Trained(), {}))  # a non-main process
    assert main(["train", "--task", "tiny", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert closed == [True]
