"""Our trainer under `accelerate launch` with 2 CPU processes (gloo) on the tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

HELPER = Path(__file__).parent / "helpers" / "two_process_train.py"


def _launch(num_processes: int, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent / "helpers"))
    # `--multi_gpu` selects accelerate's multi-process launcher; without a GPU the processes talk over gloo
    # (`--cpu` would start a single process).
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu" if num_processes > 1 else "--cpu",
           "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(HELPER), str(TINY), str(out)]
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
