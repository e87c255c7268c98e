"""The SFT baseline: TRL's SFTTrainer on the demonstrations, evaluated like an RL run."""

import json

from safetensors.torch import load_file

from rcfd.sft import run_sft


def test_sft_trains_on_demonstrations_and_is_evaluated(tiny_config, tmp_path):
    config = tiny_config("eval.long_tokens=16", "eval.long_prompts=4")
    summary = run_sft(config, tmp_path / "sft", epochs=1, learning_rate=1e-3, progress=False)
    assert summary["objective"] == "sft" and summary["steps"] > 0
    for key in ("reward_mean", "demo_reward_mean", "alignment", "distinct_2", "kl_to_ref", "loglik_by_position"):
        assert key in summary
    saved = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert saved["steps"] == summary["steps"]
    log = [json.loads(line) for line in (tmp_path / "sft" / "sft_log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log)
    adapter = load_file(tmp_path / "sft" / "final" / "adapter_model.safetensors")
    assert any("lora_B" in k and float(v.abs().sum()) > 0 for k, v in adapter.items())  # B starts at 0
    assert summary["kl_to_ref"] != 0.0  # the policy moved away from the reference
