"""The probes under experiments/ still run against today's API (on the tiny preset). Marked slow (about a
minute together: each starts its own Python with torch and transformers); `make test-slow` runs them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rcfd.cli import main
from rcfd_testing import fingerprint

pytestmark = pytest.mark.slow

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _run(script, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, str(EXPERIMENTS / script), *args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_calibration_error_compares_a_run_with_its_base_model(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--task", "tiny", "--out", str(run), "--quiet", "--steps", "2", "--no-eval"]) == 0
    before = fingerprint(run)
    out = _run("calibration_error.py", str(run), "--prompts", "3", "--per-prompt", "2")
    rows = re.findall(r"^(policy|base)\s+(\S+): mean (-?[\d.]+) .*E\[\(R - R_demo\)\^2\] ([\d.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["policy", "base"] and rows[0][1] == rows[1][1]
    assert all(float(r[3]) >= 0 for r in rows)
    assert fingerprint(run) == before  # the probe only reads the run


def test_reward_variance_splits_between_and_within_prompts():
    out = _run("reward_variance.py", "--task", "tiny", "--prompts", "3", "--per-prompt", "2")
    total, between, within = map(float, re.search(
        r"reward variance (\S+): between prompts (\S+) \(\d+%\), within a prompt (\S+)", out).groups())
    assert abs(total - between - within) < 1e-3  # the law of total variance


def test_temperature_frontier_prints_one_line_per_temperature():
    out = _run("temperature_frontier.py", "--task", "tiny", "--temperatures", "1,0.5")
    assert re.search(r"^demonstrations: reward", out, re.M)
    assert len(re.findall(r"^T=(1\.0|0\.5): reward .* KL (\S+) nats", out, re.M)) == 2
