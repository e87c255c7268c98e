"""train.load_best_model_at_end: the validation split, the kept weights, the choice and its resume."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rcfd.config import load_config
from rcfd.errors import RcfdError
from rcfd.train.best_step import BestWeights, CalibrationProbe

BEST = ("train.eval_every=1", "data.num_val=8", "train.load_best_model_at_end=true")


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_best_weights_keeps_the_smallest_distance_and_the_earlier_of_ties():
    model = torch.nn.Linear(2, 1)
    best = BestWeights()
    kept = {}
    for step, distance in enumerate([2.0, 1.0, 1.0, 3.0]):
        with torch.no_grad():
            model.weight.fill_(step)
        if best.offer(step, distance, model):
            kept = _weights(model)
    assert (best.step, best.distance, best.start_distance) == (1, 1.0, 2.0)
    with torch.no_grad():
        model.weight.fill_(9)
    best.apply(model)
    assert torch.equal(model.weight, kept["weight"]) and float(model.weight.detach()[0, 0]) == 1.0
    with pytest.raises(RcfdError, match="cannot be ranked"):  # NaN never wins: it stops with the fix
        best.offer(4, float("nan"), model)


def test_best_weights_round_trip_through_a_file(tmp_path):
    model = torch.nn.Linear(2, 1)
    best = BestWeights()
    best.offer(3, 0.5, model)
    restored = BestWeights()
    restored.load(best.save(tmp_path / "best.safetensors"), best.state_dict())
    assert (restored.step, restored.distance) == (3, 0.5)
    assert all(torch.equal(restored.weights[k], v) for k, v in best.weights.items())
    empty = BestWeights()
    empty.load(tmp_path / "missing.safetensors", {})  # a checkpoint from before any offer
    assert empty.step is None and empty.weights is None and empty.distance == math.inf


def test_validation_split_is_disjoint_from_training_evaluation_and_unseen(tiny_path):
    from transformers import AutoTokenizer

    from rcfd.data import build_datasets, unseen_dataset, validation_dataset
    from rcfd_testing import TINY

    cfg = load_config(TINY, ["data.num_val=8"]).data
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    train, held_out = build_datasets(cfg, tokenizer)
    val, unseen = validation_dataset(cfg, tokenizer), unseen_dataset(cfg, tokenizer, 8)
    parts = [set(d["prompt"]) for d in (train, held_out, val, unseen)]
    assert len(parts[2]) == 8
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])
    with pytest.raises(RcfdError, match="lower data.num_val"):
        validation_dataset(load_config(TINY, ["data.num_val=100000"]).data, tokenizer)


@pytest.mark.parametrize("overrides, message", [
    (("train.load_best_model_at_end=true",), "set train.eval_every"),
    (("train.load_best_model_at_end=true", "train.eval_every=1"), r"data.num_val \(got 0\)"),
    (("data.num_val=-1",), "data.num_val must be >= 0"),
])
def test_bad_selection_settings_name_the_field(tiny_config, overrides, message):
    with pytest.raises(RcfdError, match=message):
        tiny_config(*overrides)


def test_final_policy_holds_the_step_measured_closest(tiny_config, tmp_path, monkeypatch):
    """With made-up distances 5, 3, 1, 2, 4 for steps 0..4 the final weights are step 2's, in the final
    checkpoint and in summary.json, and the distances are logged."""
    from rcfd.train.trainer import run_training

    distances = iter([5.0, 3.0, 1.0, 2.0, 4.0])
    monkeypatch.setattr(CalibrationProbe, "__call__", lambda self, policy: {"eval/calibration_distance": next(distances)})
    config = tiny_config(*BEST, "train.save_every=1", "train.keep_checkpoints=5")
    _, summary = run_training(config, tmp_path / "run", progress=False, evaluate_after=False)
    assert (summary["best_step"], summary["best_distance"], summary["start_distance"]) == (2, 1.0, 5.0)
    checkpoints = tmp_path / "run" / "checkpoints"
    final, step2 = (load_file(str(checkpoints / f"step-{s:06d}" / "trainable.safetensors")) for s in (4, 2))
    assert all(torch.equal(final[k], step2[k]) for k in final)
    logged = [json.loads(line).get("eval/calibration_distance") for line in
              (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [3.0, 1.0, 2.0, 4.0]


def test_a_distance_that_cannot_rank_steps_stops_with_the_fix(tiny_config, tmp_path):
    """The tiny preset's demonstrations all have 16 tokens: the length reward has no spread to scale by."""
    from rcfd.train.trainer import Trainer

    trainer = Trainer(tiny_config(*BEST, "reward.names=[loglik,length]"), tmp_path / "run", progress=False)
    with pytest.raises(RcfdError, match="load_best_model_at_end=false"):
        trainer.train()


def test_base_model_wins_when_no_step_beats_it(tiny_config, tmp_path, monkeypatch):
    from rcfd.train.trainer import Trainer

    distances = iter([0.5, 3.0, 1.0])
    monkeypatch.setattr(CalibrationProbe, "__call__", lambda self, policy: {"eval/calibration_distance": next(distances)})
    trainer = Trainer(tiny_config(*BEST, "train.steps=2"), tmp_path / "run", progress=False)
    before = _weights(trainer.policy)
    trainer.train()
    assert trainer.best.step == 0
    assert all(torch.equal(before[k], v) for k, v in _weights(trainer.policy).items())


def test_real_distance_is_the_rms_of_the_logged_gaps_and_resume_is_exact(tiny_config, tmp_path):
    """Two rewards, real validation evaluation: the distance is the root mean square of the per-reward
    gaps; 2 + 2 steps resumed keep the same step and weights as 4 straight."""
    from rcfd.train.trainer import Trainer, run_training

    overrides = (*BEST, "reward.names=[loglik,loglik-spread]")
    straight, summary = run_training(tiny_config(*overrides), tmp_path / "straight", progress=False,
                                     evaluate_after=False)
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        rms = math.sqrt((row["eval/loglik/reward_z"] ** 2 + row["eval/loglik-spread/reward_z"] ** 2) / 2)
        assert row["eval/calibration_distance"] == pytest.approx(rms)
        assert "eval/kl_to_ref" not in row  # the validation evaluation skips the reference passes
    assert summary["best_distance"] == min([r["eval/calibration_distance"] for r in rows] + [summary["start_distance"]])
    first = Trainer(tiny_config(*overrides), tmp_path / "split", progress=False)
    first.train(steps=2)
    del first
    resumed, summary2 = run_training(tiny_config(*overrides), tmp_path / "split", resume=True, progress=False,
                                     evaluate_after=False)
    assert (tmp_path / "straight" / "metrics.jsonl").read_text() == (tmp_path / "split" / "metrics.jsonl").read_text()
    assert summary2["best_step"] == summary["best_step"]
    w1, w2 = _weights(straight.policy), _weights(resumed.policy)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
