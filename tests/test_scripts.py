"""The analysis scripts under scripts/ still run against today's API (on the tiny preset)."""

import os
import re
import subprocess
import sys
from pathlib import Path

from rcfd.cli import main

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_calibration_error_compares_a_run_with_its_base_model(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--task", "tiny", "--out", str(run), "--quiet", "--steps", "2", "--no-eval"]) == 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, str(SCRIPTS / "calibration_error.py"), str(run), "--prompts", "3",
                          "--per-prompt", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = re.findall(r"^(policy|base)\s+(\S+): mean (-?[\d.]+) .*E\[\(R - R_demo\)\^2\] ([\d.]+)$", out.stdout, re.M)
    assert [r[0] for r in rows] == ["policy", "base"] and rows[0][1] == rows[1][1]
    assert all(float(r[3]) >= 0 for r in rows)
