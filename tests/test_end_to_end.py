"""Train + eval on the tiny model through the CLI: files, summary, determinism, resume, failures."""

import json
import subprocess
import sys

import pytest
import torch
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


GROUPED = ("--set", "train.num_generations=4", "--set", "objective.name=rcfd-mean", "--set", "train.advantage=rloo",
           "--set", "train.advantage_scale=first")


def test_group_rollouts_rerun_gives_identical_metrics(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        assert _train(run, "--no-eval", "--steps", "2", *GROUPED) == 0
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()


def test_resume_with_a_frozen_first_step_scale_continues_exactly(tmp_path, tiny_config):
    from rcfd.train.trainer import Trainer

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(straight, "--no-eval", "--steps", "4", *GROUPED) == 0
    overrides = [GROUPED[i] for i in range(1, len(GROUPED), 2)]
    trainer = Trainer(tiny_config("train.steps=4", *overrides), split, progress=False)
    trainer.train(steps=2)
    del trainer
    assert _train(split, "--no-eval", "--resume", str(split)) == 0
    assert (straight / "metrics.jsonl").read_text() == (split / "metrics.jsonl").read_text()


BATCH_SGD = ("train.num_generations=4", "objective.name=rcfd-batch", "train.advantage=rloo", "train.optimizer=sgd",
             "train.momentum=0.9", "train.learning_rate=0.1", "objective.gap_memory=4", "train.average_weights=0.75")


def test_rcfd_batch_with_sgd_momentum_resumes_exactly(tmp_path, tiny_config):
    """The SGD momentum buffers live in the checkpoint like Adam's moments, and rcfd-batch's pool of past
    gaps (objective.gap_memory) and the running weight average (train.average_weights, the last 3 steps:
    one before the split) with them: 2 + 2 steps = 4 steps, same final weights."""
    from rcfd.train.trainer import Trainer

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(straight, "--no-eval", "--steps", "4", *[x for o in BATCH_SGD for x in ("--set", o)]) == 0
    trainer = Trainer(tiny_config("train.steps=4", *BATCH_SGD), split, progress=False)
    trainer.train(steps=2)
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    del trainer
    assert _train(split, "--no-eval", "--resume", str(split)) == 0
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[-1]["train/grad_norm"] > 0
    assert (straight / "metrics.jsonl").read_text() == (split / "metrics.jsonl").read_text()
    w1, w2 = _final_weights(straight), _final_weights(split)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_rcfd_batch_demo_mean_all_compares_with_every_training_target(tiny_config, tmp_path, monkeypatch):
    """objective.demo_mean=all: rcfd-batch's gaps are taken against the mean of all training targets."""
    import rcfd.train.trainer as trainer_module

    seen = []
    real = trainer_module.prompt_gaps
    monkeypatch.setattr(trainer_module, "prompt_gaps", lambda r, d, k: seen.append(d.clone()) or real(r, d, k))
    batch = ("train.num_generations=2", "objective.name=rcfd-batch", "train.advantage=rloo")
    for mean in ("batch", "all"):
        t = trainer_module.Trainer(tiny_config("train.steps=1", *batch, f"objective.demo_mean={mean}"),
                                   tmp_path / mean, progress=False)
        t.train()
    paired, pooled = seen
    assert torch.allclose(pooled, t.demo_train.mean(0).expand_as(pooled))
    assert not torch.allclose(paired, pooled)  # the batch's own demonstrations differ from prompt to prompt
    # the logs still describe the batch's own demonstrations, whichever mean the gap uses
    logged = [json.loads((tmp_path / m / "metrics.jsonl").read_text().splitlines()[0]) for m in ("batch", "all")]
    demo_means = [next(v for key, v in row.items() if key.endswith("/demo_mean")) for row in logged]
    assert demo_means[0] == pytest.approx(demo_means[1]) == pytest.approx(float(paired.mean()), abs=1e-6)


def test_demo_reward_scale_divides_by_the_training_targets_variance(tiny_config, tmp_path, monkeypatch):
    """objective.reward_scale=demo hands the objective each column's variance over the training targets."""
    import rcfd.train.trainer as trainer_module
    from rcfd.train.objectives import objective_values

    seen = []
    monkeypatch.setattr(trainer_module, "objective_values",
                        lambda *a, **kw: seen.append(kw["scale"]) or objective_values(*a, **kw))
    mean = ("train.num_generations=2", "objective.name=rcfd-mean", "train.advantage=rloo",
            "reward.calibrate_also=[loglik-spread]")
    for scale in ("batch", "demo"):
        t = trainer_module.Trainer(tiny_config("train.steps=1", *mean, f"objective.reward_scale={scale}"),
                                   tmp_path / scale, progress=False)
        t.train()
    assert seen[0] is None
    assert torch.allclose(seen[1], t.demo_train.var(0, unbiased=False))
    assert seen[1].shape == (2,)
    # the paper's per-sample objective takes the same unit (its default stays the whitened sum)
    per_sample = ("objective.name=rcfd", "reward.calibrate_also=[loglik-spread]")
    t = trainer_module.Trainer(tiny_config("train.steps=1", *per_sample, "objective.reward_scale=demo"),
                               tmp_path / "per-sample", progress=False)
    t.train()
    assert torch.allclose(seen[2], t.demo_train.var(0, unbiased=False))


def test_dr_grpo_loss_divides_by_the_generation_cap(tiny_config, tmp_path, monkeypatch):
    """train.loss_type=dr_grpo hands the PPO loss generation.max_new_tokens; 'grpo' (the default) hands None
    (ppo_clip_loss's own tests check what each does with it)."""
    import rcfd.train.trainer as trainer_module
    from rcfd.train.objectives import ppo_clip_loss

    seen = []
    monkeypatch.setattr(trainer_module, "ppo_clip_loss",
                        lambda *a: seen.append(a[-1]) or ppo_clip_loss(*a))
    for loss_type in ("grpo", "dr_grpo"):
        t = trainer_module.Trainer(tiny_config("train.steps=1", f"train.loss_type={loss_type}"),
                                   tmp_path / loss_type, progress=False)
        t.train()
    cap = t.config.generation.max_new_tokens
    assert seen and set(seen[:len(seen) // 2]) == {None} and set(seen[len(seen) // 2:]) == {cap}


def test_target_feedback_shifts_each_target_by_the_last_batches_gaps(tiny_config, tmp_path):
    """objective.target_feedback=g: step 1 uses the demonstrations' rewards as they are; each later step's shift
    is the previous one minus g × (that step's batch mean reward − its demonstrations' mean), per reward; a
    resumed run carries the shift on."""
    import json

    from rcfd.train.trainer import Trainer

    config = tiny_config("train.steps=3", "train.save_every=1", "objective.target_feedback=0.5",
                         "reward.calibrate_also=[length]")
    Trainer(config, tmp_path / "run", progress=False).train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    shift = {"loglik": 0.0, "length": 0.0}
    for record in records:
        for name in shift:
            assert record[f"objective/{name}/target_shift"] == pytest.approx(shift[name], abs=1e-5)
        for name in shift:
            mean, demo = record[f"rewards/{name}/mean"], record[f"rewards/{name}/demo_mean"]
            shift[name] -= 0.5 * (mean - demo)
    assert records[-1]["objective/loglik/target_shift"] != 0
    # resumed from the checkpoint of step 2 (the later one removed), step 3 is the same
    import shutil

    shutil.copytree(tmp_path / "run", tmp_path / "part")
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-000003")
    Trainer(config, tmp_path / "part", resume=True, progress=False).train()
    assert (tmp_path / "part" / "metrics.jsonl").read_text() == (tmp_path / "run" / "metrics.jsonl").read_text()


def test_per_sample_flags_reach_the_objective_for_rcfd_only(tiny_config, tmp_path, monkeypatch):
    """objective.per_sample hands the objective one flag per calibrated column (twice with match_spread);
    reward maximization sees none."""
    import rcfd.train.trainer as trainer_module
    from rcfd.train.objectives import objective_values

    seen = []
    monkeypatch.setattr(trainer_module, "objective_values",
                        lambda *a, **kw: seen.append(kw["per_sample"]) or objective_values(*a, **kw))
    common = ("train.steps=1", "train.num_generations=2", "train.advantage=rloo",
              "reward.calibrate_also=[loglik-spread]", "objective.per_sample=[loglik-spread]")
    for i, extra in enumerate([("objective.name=rcfd-batch",), ("objective.name=rcfd-batch", "objective.match_spread=true"),
                               ("objective.name=reward",)]):
        trainer_module.Trainer(tiny_config(*common, *extra), tmp_path / str(i), progress=False).train()
    assert seen[0].tolist() == [False, True]
    assert seen[1].tolist() == [False, True, False, True]
    assert seen[2] is None


def test_max_step_kl_scales_each_update_back_into_the_bound(tiny_config, tmp_path):
    """train.max_step_kl: a bound the update never reaches leaves the run as without it; a tighter one
    halves the weight change until the step's KL fits; one no update meets undoes the step."""
    from rcfd.train.trainer import Trainer

    def run(name, *extra):  # one step; the trainable weights before and after
        trainer = Trainer(tiny_config("train.steps=1", "train.learning_rate=1e-2", *extra), tmp_path / name,
                          progress=False)
        trainable = lambda: [p.detach().clone() for p in trainer.policy.parameters() if p.requires_grad]  # noqa: E731
        start = trainable()
        return trainer.step()[0], start, trainable()

    free, _, free_weights = run("free")
    loose, _, loose_weights = run("loose", "train.max_step_kl=1e6")
    assert loose["train/step_scale"] == 1.0 and loose["train/step_kl"] > 0
    assert all(torch.equal(a, b) for a, b in zip(free_weights, loose_weights))
    bound = loose["train/step_kl"] / 10  # a tenth of the update's own KL
    tight, _, _ = run("tight", f"train.max_step_kl={bound}")
    assert tight["train/step_scale"] <= 0.5 and 0 < tight["train/step_kl"] <= bound
    undone, start, after = run("undone", "train.max_step_kl=1e-30", "train.max_step_kl_halvings=1")
    assert undone["train/step_scale"] == 0.0 and undone["train/step_kl"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(start, after))


def test_best_of_k_updates_on_each_prompts_best_completion_only(tiny_config, tmp_path, monkeypatch):
    """train.advantage=best-of-k: the update's forward passes see one completion per prompt, the one with the
    highest objective, and a step moves the weights."""
    import rcfd.train.trainer as trainer_module

    seen = []
    real = trainer_module.token_logprobs

    def recording(model, rollout, *args):
        seen.append(rollout.completion_ids.clone())
        return real(model, rollout, *args)

    trainer = trainer_module.Trainer(tiny_config("train.steps=1", "train.num_generations=4",
                                                 "train.advantage=best-of-k"), tmp_path / "bok", progress=False)
    picked = []
    real_update = trainer.update

    def update(rollout, old_logp, advantages, branch=None):  # note which completions got a nonzero advantage
        picked.append(rollout.select(advantages.nonzero().flatten()).completion_ids)
        return real_update(rollout, old_logp, advantages, branch)

    monkeypatch.setattr(trainer, "update", update)
    monkeypatch.setattr(trainer_module, "token_logprobs", recording)
    before = [p.detach().clone() for p in trainer.policy.parameters() if p.requires_grad]
    trainer.step()
    assert sum(len(ids) for ids in seen) == 8 // 4  # batch 8, k = 4: two prompts, one completion each
    assert torch.equal(torch.cat(seen), picked[0])
    after = [p.detach() for p in trainer.policy.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


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


def test_resume_continues_exactly(tmp_path, tiny_config):
    """6 steps straight == a 6-step run stopped after 3 and resumed: same metrics and final weights."""
    from rcfd.train.trainer import Trainer

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(straight, "--no-eval", "--steps", "6") == 0
    trainer = Trainer(tiny_config("train.steps=6"), split, progress=False)
    trainer.train(steps=3)  # stops (and checkpoints) after 3 of the 6 steps
    del trainer
    assert len((split / "metrics.jsonl").read_text().splitlines()) == 3
    assert main(["train", "--resume", str(split), "--no-eval", "--quiet"]) == 0
    assert (straight / "metrics.jsonl").read_text() == (split / "metrics.jsonl").read_text()
    w1, w2 = _final_weights(straight), _final_weights(split)
    assert w1.keys() == w2.keys() and len(w1) > 0
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


@pytest.fixture(autouse=True)
def _reset_reward_fixture_counters():
    import reward_fixtures

    reward_fixtures.nan_after_first.calls = 0


def test_nan_reward_stops_with_resumable_checkpoint(tmp_path, capsys):
    run = tmp_path / "nan"
    code = _train(run, "--no-eval", "--set", "reward.names=reward_fixtures:nan_after_first",
                  "--set", "objective.name=reward")
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "not finite at step 2" in err and "skip_nonfinite" in err and len(err.splitlines()) == 1
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
def test_cli_errors_are_one_line(tmp_path, setup, args, needle):
    if setup:
        (tmp_path / "c.yaml").write_text(setup)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"question": f"q {i}", "answer": "a"}) for i in range(9)))
    (tmp_path / "empty.jsonl").write_text("\n".join(json.dumps({"prompt": "" if i == 2 else "p", "demonstration": "d"})
                                                    for i in range(9)))
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("rcfd: error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    debug = _cli(*args, "--debug", cwd=tmp_path)
    assert "Traceback" in debug.stderr


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
