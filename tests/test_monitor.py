"""CalibrationMonitor: rcfd's calibration diagnostics logged from inside real TRL trainers."""

from __future__ import annotations

import logging

import pytest
import torch

from rcfd.integrations.monitor import CalibrationMonitor, monitor_metrics, over_optimized
from rcfd.integrations.trl import RCfDReward

trl = pytest.importorskip("trl", reason="TRL is in the test extra")

PROMPTS = ["The river flows", "A city of", "In the year", "The first king", "Music is", "The old bridge"]
DEMOS = [" through the valley to the sea", " many bridges and towers", " of the great flood", " ruled the land",
         " an art of sound", " fell into the river"]
LOGGED = ["reward_z", "reward_mean", "demo_reward_mean", "alignment", "wasserstein", "distinct_2", "demo_distinct_2",
          "distinct_2_rel", "repetition_4", "demo_repetition_4", "naturalness", "naturalness_z", "kl_to_ref"]


def count_the(prompts, completions, **kwargs):
    """How often ' the' occurs: the demonstrations use it once or twice."""
    return [float(f" {c} ".count(" the ")) for c in completions]


def _dataset():
    import datasets

    return datasets.Dataset.from_dict({"prompt": PROMPTS[:4], "demonstration": DEMOS[:4]})


def _trainer(kind, model, tokenizer, out, *, report_to="none", peft=False):
    common = dict(output_dir=str(out), use_cpu=True, per_device_train_batch_size=4, num_generations=2,
                  max_completion_length=8, max_steps=2, logging_steps=1, report_to=report_to, save_strategy="no",
                  seed=0, disable_tqdm=True, gradient_checkpointing=False)
    config, trainer = {"grpo": (trl.GRPOConfig, trl.GRPOTrainer), "rloo": (trl.RLOOConfig, trl.RLOOTrainer)}[kind]
    peft_config = None
    if peft:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return trainer(model=model, reward_funcs=[RCfDReward(count_the)], args=config(**common), train_dataset=_dataset(),
                   processing_class=tokenizer, peft_config=peft_config)


@pytest.mark.parametrize("kind, peft", [("grpo", False), ("rloo", True)])
def test_monitor_logs_every_metric_at_its_steps(kind, peft, tiny_path, tiny_tokenizer, tmp_path, caplog, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))  # transformers' TensorBoard callback
    torch.manual_seed(0)
    trainer = _trainer(kind, AutoModelForCausalLM.from_pretrained(tiny_path), tiny_tokenizer, tmp_path,
                       report_to="tensorboard", peft=peft)
    monitor = CalibrationMonitor(trainer, PROMPTS, DEMOS, [RCfDReward(count_the)], every=2, samples_per_prompt=2)
    trainer.add_callback(monitor)
    with caplog.at_level(logging.WARNING, logger="rcfd"):
        trainer.train()
    assert [h["step"] for h in monitor.history] == [0, 2]  # at the start, then every 2 steps
    logged = [h for h in trainer.state.log_history if "calibration/reward_z" in h]
    assert [h["step"] for h in logged] == [0, 2]
    for h in logged:
        for key in LOGGED:
            assert f"calibration/{key}" in h and h[f"calibration/{key}"] == h[f"calibration/{key}"], key
    assert logged[0]["calibration/kl_to_ref"] == pytest.approx(0.0, abs=1e-2)  # nothing trained yet (bf16 noise)
    assert any("rewards/rcfd/mean" in h for h in trainer.state.log_history)  # TRL's own logging unchanged
    assert not [r for r in caplog.records if "over-optimized" in r.getMessage()]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for key in LOGGED:
        assert any(t.endswith(f"calibration/{key}") for t in tags), key
    steps = [e.step for e in events.Scalars(next(t for t in tags if t.endswith("calibration/reward_z")))]
    assert steps == [0, 2]


def _pushed(tiny_path, tokenizer):
    """A model that has over-optimized count_the: it says ' the' and nothing else."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    the = tokenizer(" the", add_special_tokens=False)["input_ids"]
    assert len(the) == 1
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    head.weight.data.copy_(model.lm_head.weight.data)
    head.bias.data.zero_()
    head.bias.data[the[0]] = 1e4
    model.lm_head = head
    model.config.tie_word_embeddings = False
    return model


def test_the_warning_fires_once_on_an_over_optimized_run_and_not_on_the_base_model(tiny_path, tiny_tokenizer,
                                                                                    tmp_path, caplog):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = _trainer("grpo", AutoModelForCausalLM.from_pretrained(tiny_path), tiny_tokenizer, tmp_path / "base")
    base_monitor = CalibrationMonitor(base, PROMPTS, DEMOS, count_the, every=1)
    with caplog.at_level(logging.WARNING, logger="rcfd"):
        base_monitor._model_and_reference()
        base_metrics = base_monitor.measure()
    assert not over_optimized(base_metrics, ["count_the"], 1.0, 0.15)
    assert not caplog.records

    pushed = _trainer("grpo", _pushed(tiny_path, tiny_tokenizer), tiny_tokenizer, tmp_path / "pushed")
    monitor = CalibrationMonitor(pushed, PROMPTS, DEMOS, count_the, every=1,
                                 reference=AutoModelForCausalLM.from_pretrained(tiny_path))
    pushed.add_callback(monitor)
    with caplog.at_level(logging.WARNING, logger="rcfd"):
        pushed.train()
    assert len(monitor.history) == 3  # start, step 1, step 2
    first = monitor.history[0]
    assert first["calibration/reward_z"] > 1 and first["calibration/distinct_2_rel"] < -0.5
    warnings = [r.getMessage() for r in caplog.records if "over-optimized" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]  # once, in one line
    assert "count_the" in warnings[0] and "distinct-2" in warnings[0]


def test_monitor_metrics_and_the_warning_rule():
    measured = {"reward_mean": 3.0, "demo_reward_mean": 1.0, "demo_reward_std": 1.0, "alignment": 0.5,
                "wasserstein": 2.0, "distinct_2": 0.4, "demo_distinct_2": 0.8, "repetition_4": 0.1,
                "demo_repetition_4": 0.0, "naturalness": -2.0, "demo_naturalness": -3.0, "demo_naturalness_std": 1.0,
                "kl_to_ref": 4.0}
    m = monitor_metrics(measured, ["r"])
    assert m["calibration/reward_z"] == 2.0 and m["calibration/distinct_2_rel"] == pytest.approx(-0.5)
    assert m["calibration/naturalness_z"] == 1.0
    assert "distinct-2 -50%" in over_optimized(m, ["r"], 1.0, 0.15)
    assert over_optimized({**m, "calibration/distinct_2_rel": -0.1}, ["r"], 1.0, 0.15) is None  # diverse enough
    assert over_optimized({**m, "calibration/reward_z": 0.5}, ["r"], 1.0, 0.15) is None  # not past the demos
    unnatural = {**m, "calibration/distinct_2_rel": 0.0, "calibration/naturalness_z": -1.5}
    assert "naturalness -1.50 std" in over_optimized(unnatural, ["r"], 1.0, 0.15)


def test_monitor_refuses_mismatched_prompts_and_demonstrations():
    from rcfd.errors import RcfdError

    class Fake:
        args = None

    with pytest.raises(RcfdError, match="as many demonstrations as prompts"):
        CalibrationMonitor(Fake(), PROMPTS, DEMOS[:2], count_the)
