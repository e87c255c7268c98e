"""train.engine=trl: the tiny task trained by TRL's GRPOTrainer into rcfd's run directory, read back by
`rcfd eval` and `rcfd report`, resumed, under two processes, and its refusals."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rcfd_testing import TINY, ExplicitDevices
from test_distributed import _free_port
from test_reference_docs import documented_names, generic

from rcfd.cli import main

TRL = ["--set", "train.num_generations=4", "--set", "train.advantage=rloo", "--set", "train.threads=1",
       "--set", "train.save_every=2", "--quiet"]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trl_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("engine") / "trl"
    assert main(["train", "--task", "tiny", "--engine", "trl", "--out", str(run), *TRL]) == 0
    return run


def test_a_trl_run_writes_the_run_directory_rcfds_loop_writes(trl_run, tmp_path):
    own = tmp_path / "rcfd"
    assert main(["train", "--task", "tiny", "--out", str(own), "--no-eval", *TRL]) == 0
    assert (trl_run / "config.yaml").read_text().count("engine: trl") == 1
    trl, ours = _records(trl_run), _records(own)
    assert [r["step"] for r in trl] == [1, 2, 3, 4]  # one record per RL step, not per optimizer step
    assert [sorted(r) for r in trl] == [sorted(r) for r in ours]  # the same metric names
    missing = {generic(k, ["loglik"]) for r in trl for k in r} - documented_names()
    assert not missing, missing
    assert all(r["train/learning_rate"] > 0 and r["train/grad_norm"] > 0 for r in trl)
    assert (trl_run / "final" / "adapter_config.json").exists() and (trl_run / "samples.jsonl").exists()
    summary = json.loads((trl_run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["objective"] == "rcfd"


def test_rcfd_eval_and_report_read_a_trl_run(trl_run, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", str(trl_run), "--quiet", "--out", str(out)]) == 0
    again, summary = json.loads(out.read_text()), json.loads((trl_run / "summary.json").read_text())
    for key in ("reward_mean", "alignment", "distinct_2", "kl_to_ref", "naturalness", "wasserstein"):
        assert again[key] == pytest.approx(summary[key], nan_ok=True), key  # final/ holds what was evaluated
    assert main(["report", str(trl_run), "--out", str(tmp_path / "report.html")]) == 0
    assert "trl" in (tmp_path / "report.html").read_text()


@pytest.mark.slow  # ~25 s: two more runs
def test_a_trl_run_is_deterministic_and_resumes_to_the_same_numbers(trl_run, tmp_path):
    again = tmp_path / "again"
    assert main(["train", "--task", "tiny", "--engine", "trl", "--out", str(again), "--no-eval", *TRL]) == 0
    assert (again / "metrics.jsonl").read_bytes() == (trl_run / "metrics.jsonl").read_bytes()
    shutil.rmtree(again / "trl" / "checkpoint-4")  # killed after the step-2 checkpoint
    for name in ("final", "summary.json"):
        shutil.rmtree(again / name, ignore_errors=True)
    assert main(["train", "--resume", str(again), "--quiet", "--no-eval"]) == 0
    assert (again / "metrics.jsonl").read_bytes() == (trl_run / "metrics.jsonl").read_bytes()


@pytest.mark.parametrize("override, message", [
    ("train.advantage=whiten", "set train.advantage=rloo or group"),
    ("train.num_generations=1", "set train.num_generations >= 2"),
    ("objective.name=rcfd-mean", "train.engine=trl runs objective.name in"),
    ("train.load_best_model_at_end=true", "set train.load_best_model_at_end=false"),
    ("generation.stop_at_newline=true", "set generation.stop_at_newline=false"),
])
def test_what_grpo_cannot_run_as_rcfd_means_it_is_one_line(tmp_path, capsys, override, message):
    args = ["train", "--task", "tiny", "--engine", "trl", "--out", str(tmp_path / "run"), *TRL, "--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_eval_every_logs_the_eval_metrics_rcfds_loop_logs(tmp_path):
    run = tmp_path / "eval-every"
    extra = ["--set", "train.eval_every=2", "--set", "train.eval_prompts=4", "--steps", "2", "--no-eval"]
    assert main(["train", "--task", "tiny", "--engine", "trl", "--out", str(run), *TRL, *extra]) == 0
    own = tmp_path / "own"
    assert main(["train", "--task", "tiny", "--out", str(own), *TRL, *extra]) == 0
    assert sorted(_records(run)[-1]) == sorted(_records(own)[-1])
    assert "eval/reward_z" in _records(run)[-1] and "eval/reward_z" not in _records(run)[0]


def test_the_trl_engines_reward_names_every_device(tmp_path):
    from rcfd.config import load_config
    from rcfd.train.components import build_components
    from rcfd.train.distributed import Processes
    from rcfd.train.trl_engine import ObjectiveReward

    config = load_config(TINY, ["train.engine=trl", "train.num_generations=2", "train.advantage=rloo"])
    components = build_components(config, progress=False)
    reward = ObjectiveReward(components, config, Processes())
    prompts = [components.train_ds[i]["prompt"] for i in (0, 0, 1, 1)]
    ids = [components.tokenizer(" the end", add_special_tokens=False)["input_ids"]] * 4
    with ExplicitDevices():
        values = reward(prompts, ["x"] * 4, ids, [0, 0, 1, 1])
    assert len(values) == 4 and reward.pending["step"] == 1


@pytest.mark.slow  # ~60 s: two interpreters under accelerate launch
def test_two_processes_train_a_trl_run(tmp_path):
    out = tmp_path / "two"
    rcfd = Path(sys.executable).with_name("rcfd")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--main_process_port", str(_free_port()), "--mixed_precision", "no",
           "--dynamo_backend", "no", str(rcfd), "train", "--task", "tiny", "--engine", "trl", "--out", str(out),
           "--no-eval", *TRL]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = _records(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # written once, by the main process
    assert (out / "final" / "adapter_config.json").exists()


@pytest.mark.slow  # ~30 s: a subprocess with TRL
def test_the_trl_script_example_runs_with_the_monitor(tmp_path):
    example = Path(__file__).resolve().parent.parent / "examples" / "trl_grpo_rcfd.py"
    proc = subprocess.run([sys.executable, str(example), "--model", "tiny-llama", "--steps", "2", "--monitor-every", "2",
                           "--out", str(tmp_path / "trl")], env=dict(os.environ, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("demo std, alignment") == 2  # before the first step and after the second


def test_rcfd_demo_runs_its_runs_through_the_trl_engine(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--task", "tiny", "--engine", "trl", "--runs", "beta0,rcfd", "--steps", "1", "--out", str(out),
            *TRL]
    assert main(args) == 0
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    assert sorted(runs) == ["beta0", "rcfd"] and all((out / name / "trl").is_dir() for name in runs)
    assert all(runs[name]["config"]["train"]["engine"] == "trl" and "alignment" in runs[name]["metrics"] for name in runs)


@pytest.mark.slow  # ~25 s: two short runs in a subprocess
def test_the_engine_benchmark_writes_both_engines_and_their_ratio(tmp_path):
    bench = Path(__file__).resolve().parent.parent / "bench" / "engine_bench.py"
    proc = subprocess.run([sys.executable, str(bench), "--task", "tiny", "--steps", "2", "--out", str(tmp_path),
                           "--set", "train.num_generations=4", "--set", "train.advantage=rloo"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "engine-tiny.json").read_text())
    assert set(result["engines"]) == {"rcfd", "trl"} and result["trl_over_rcfd"] > 0
    assert len(result["engines"]["trl"]["steps"]) == 2
