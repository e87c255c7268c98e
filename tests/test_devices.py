"""model.device and model.dtype on a CPU-only machine: explicit cpu/float32 and cpu/bfloat16 runs (train,
eval, resume), a checkpoint resumed under the other dtype, one-line errors for what this machine cannot
run, and a guard that makes a tensor created without a device fail here as it would on a GPU."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rcfd.cli import main
from rcfd.config import load_config
from rcfd.errors import RcfdError
from rcfd.train.trainer import Trainer
from rcfd_testing import TINY, ExplicitDevices, tiny_classifier


def _metrics(run):
    return (run / "metrics.jsonl").read_text()


@pytest.mark.parametrize("dtype", [pytest.param("float32", marks=pytest.mark.slow), "bfloat16"])
def test_explicit_cpu_runs_train_evaluate_and_resume_exactly(tiny_config, tmp_path, dtype):
    overrides = ("model.device=cpu", f"model.dtype={dtype}", "train.steps=4")
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(tiny_config(*overrides), straight, progress=False).train()
    first = Trainer(tiny_config(*overrides), split, progress=False)
    assert {p.dtype for p in first.policy.parameters() if not p.requires_grad} == {getattr(torch, dtype)}
    assert {p.dtype for p in first.policy.parameters() if p.requires_grad} == {torch.float32}  # LoRA stays fp32
    first.train(steps=2)
    del first
    resumed = Trainer(tiny_config(*overrides), split, resume=True, progress=False)
    resumed.train()
    assert _metrics(straight) == _metrics(split)
    summary = resumed.evaluate()
    assert all(v == v for v in (summary["reward_mean"], summary["kl_to_ref"]))  # finite, not NaN


@pytest.mark.parametrize("saved, resumed", [("float32", "bfloat16"),
                                             pytest.param("bfloat16", "float32", marks=pytest.mark.slow)])
def test_a_checkpoint_saved_under_one_dtype_resumes_under_the_other(tmp_path, saved, resumed):
    run = tmp_path / "run"
    assert main(["train", "--task", "tiny", "--out", str(run), "--quiet", "--no-eval", "--steps", "4",
                 "--set", f"model.dtype={saved}", "--set", "train.save_every=2"]) == 0
    checkpoint = load_file(str(run / "checkpoints" / "step-000004" / "trainable.safetensors"))
    config = load_config(run / "config.yaml", [f"model.dtype={resumed}", "train.steps=6"])
    trainer = Trainer(config, run, resume=True, progress=False)
    assert trainer.step_idx == 4
    weights = {n: p.detach() for n, p in trainer.policy.named_parameters() if p.requires_grad}
    assert all(torch.equal(weights[n], v) for n, v in checkpoint.items())  # trainable weights are fp32 in both
    trainer.train()
    rows = [json.loads(line) for line in _metrics(run).splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("override, message", [
    ("model.device=cuda", "model.device=cuda but torch sees no CUDA GPU"),
    ("model.device=cuda:1", "model.device=cuda:1 but torch sees no CUDA GPU"),
    ("model.dtype=float16", "model.dtype=float16 is not supported on the CPU"),
    ("model.device=tpu", "model.device must be auto, cpu, cuda, cuda:N or mps"),
    ("model.dtype=fp8", "model.dtype must be auto, float32, bfloat16 or float16"),
])
def test_what_this_machine_cannot_run_is_one_line_before_anything_is_written(tmp_path, capsys, override, message):
    if torch.cuda.is_available() and "cuda" in override:
        pytest.skip("this machine has a GPU")
    assert main(["train", "--task", "tiny", "--out", str(tmp_path / "run"), "--quiet", "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_auto_is_the_cpu_in_float32_without_an_accelerator():
    from rcfd.train.device import resolve_device, resolve_dtype

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    device = resolve_device("auto")
    assert device.type == "cpu" and resolve_dtype("auto", device) == torch.float32
    with pytest.raises(RcfdError, match="float16"):
        resolve_dtype("float16", device)


def test_a_step_an_evaluation_and_every_packaged_reward_name_their_devices(tiny_config, tmp_path, some_reviews):
    """Under ExplicitDevices a factory call of rcfd's own without device= raises, as the tensor it makes would
    fail on a GPU beside models that sit there."""
    from rcfd.rewards import build_rewards
    from rcfd.rewards.sentiment import train_sentiment_classifier
    from rcfd.registry import REWARDS

    clf = tiny_classifier(tmp_path / "clf", 2, {0: "NEGATIVE", 1: "POSITIVE"})
    rm = tiny_classifier(tmp_path / "rm", 1)
    train_sentiment_classifier(tmp_path / "sentiment", list(some_reviews["text"]), list(some_reviews["label"]))
    config = tiny_config("train.steps=1", "train.num_generations=2", "objective.name=rcfd-batch", "train.advantage=rloo",
                         "reward.calibrate_also=[loglik-spread,repetition,repeat-mass]",
                         "objective.per_sample=[repetition]")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    names = [n for n in REWARDS]
    reward_config = tiny_config(f"reward.names=[{','.join(names)}]", f"reward.classifier_model={clf}",
                                f"reward.reward_model={rm}", f"reward.sentiment_model={tmp_path / 'sentiment'}").reward
    stack = build_rewards(names, policy=trainer.policy, reference=trainer.reference, tokenizer=trainer.tokenizer,
                          model_id="tiny", config=reward_config, progress=False)
    with ExplicitDevices() as guard:
        trainer.step()
        trainer.evaluate()
        values = stack(["The river flows", "A city of"], [" to the sea.", " many bridges and towers"])
    assert values.shape == (2, len(names)) and not guard.offences


def test_the_guard_catches_a_tensor_made_without_a_device():
    """Code compiled as if it sat in the package: the guard names its line; outside the package it passes."""
    from pathlib import Path

    import rcfd

    inside = compile("\n\nx = torch.zeros(3)", str(Path(rcfd.__file__).parent / "made_up.py"), "exec")
    with ExplicitDevices() as guard, pytest.raises(AssertionError, match="torch.zeros without a device at rcfd/made_up.py:3"):
        exec(inside, {"torch": torch})
    assert guard.offences == ["made_up.py:3"]
    with ExplicitDevices():
        torch.zeros(3)  # this test file is not the package's code
        exec(compile("y = torch.zeros(3, device='cpu')", str(Path(rcfd.__file__).parent / "made_up.py"), "exec"),
             {"torch": torch})


def test_the_gpu_check_says_in_one_line_that_there_is_no_gpu():
    import os
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: run bench/gpu_check itself")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", str(root / "bench" / "gpu_check")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["gpu_check: no CUDA GPU here (torch.cuda.is_available() is false); "
                                                "run it on a machine with one"]


def test_bfloat16_demonstration_rewards_never_stand_in_for_float32_ones(tmp_path, monkeypatch):
    """The demonstration-reward cache was keyed by reward and data only: a bfloat16 run's values were read
    back by the next float32 run of the same task (CI's fresh clone ran test_devices before the stored runs)."""
    from rcfd.config import load_config
    from rcfd.rewards.demo_cache import demo_cache_path, demo_rewards
    from rcfd.train.components import build_components

    monkeypatch.setenv("RCFD_CACHE", str(tmp_path / "cache"))
    got = {}
    for dtype in ("bfloat16", "float32"):
        c = build_components(load_config(TINY, [f"model.dtype={dtype}"]), progress=False, with_demo_rewards=False)
        got[dtype] = (demo_cache_path(c.rewards, c.eval_ds, 16),
                      demo_rewards(c.rewards, c.eval_ds, c.tokenizer, 16, progress=False))
    assert got["bfloat16"][0] != got["float32"][0]
    fresh = build_components(load_config(TINY), progress=False, with_demo_rewards=False)
    (tmp_path / "cache").rename(tmp_path / "moved")  # nothing cached: computed again in float32
    assert torch.equal(demo_rewards(fresh.rewards, fresh.eval_ds, fresh.tokenizer, 16, progress=False), got["float32"][1])
    assert not torch.equal(got["bfloat16"][1], got["float32"][1])
