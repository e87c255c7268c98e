"""Baselines from demonstrations and preferences: TRL's SFTTrainer and DPOTrainer, evaluated like an RL run."""

import json

import pytest
from safetensors.torch import load_file

from rcfd.train.baselines import run_dpo, run_sft
from rcfd.cli import main
from rcfd.config import DataConfig
from rcfd.data import load_preference_pairs
from rcfd.errors import RcfdError

EVAL_KEYS = ("reward_mean", "demo_reward_mean", "alignment", "distinct_2", "kl_to_ref", "loglik_by_position")


def _adapter_moved(run_dir) -> bool:
    adapter = load_file(run_dir / "final" / "adapter_model.safetensors")
    return any("lora_B" in k and float(v.abs().sum()) > 0 for k, v in adapter.items())  # B starts at 0


@pytest.mark.slow  # ~30 s: a TRL training run and a full evaluation; the default suite keeps the loaders/errors
def test_sft_trains_on_demonstrations_and_is_evaluated(tiny_config, tmp_path):
    config = tiny_config("eval.long_tokens=16", "eval.long_prompts=4")
    summary = run_sft(config, tmp_path / "sft", epochs=1, learning_rate=1e-3, progress=False)
    assert summary["objective"] == "sft" and summary["steps"] > 0
    for key in EVAL_KEYS:
        assert key in summary
    saved = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert saved["steps"] == summary["steps"]
    from rcfd.train.rundir import RunDir

    assert RunDir(tmp_path / "sft").read_config_dict() == config.to_dict()  # the run's own config, as for RL
    log = [json.loads(line) for line in (tmp_path / "sft" / "sft_log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log)
    assert _adapter_moved(tmp_path / "sft")
    assert summary["kl_to_ref"] != 0.0  # the policy moved away from the reference
    # `rcfd eval` on the SFT run evaluates its trained adapter and leaves the run as it was
    from rcfd_testing import fingerprint

    before = fingerprint(tmp_path / "sft")
    assert main(["eval", str(tmp_path / "sft"), "--quiet", "--out", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["reward_mean"] == pytest.approx(summary["reward_mean"], abs=1e-5)
    assert fingerprint(tmp_path / "sft") == before


def _preferences(path, n=16):
    rows = [{"prompt": f"The river number {i} flows", "chosen": f" north through the valley {i}.",
             "rejected": " the the the the"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_preference_pairs_load_from_a_local_file(tmp_path):
    pairs = load_preference_pairs(DataConfig(preference_source=str(_preferences(tmp_path / "p.jsonl")), num_train=5))
    assert pairs.column_names == ["prompt", "chosen", "rejected"] and len(pairs) == 5
    assert pairs[2]["chosen"] == " north through the valley 2."


@pytest.mark.parametrize("problem, message", [
    ({}, "set data.preference_source"),
    ({"rejected_column": "worse"}, "no column 'worse'"),
])
def test_preference_errors_name_the_field(tmp_path, problem, message):
    fields = {"preference_source": str(_preferences(tmp_path / "p.jsonl"))} if problem else {}
    with pytest.raises(RcfdError, match=message):
        load_preference_pairs(DataConfig(**fields, **problem))


@pytest.mark.slow
def test_dpo_prefers_chosen_over_rejected_and_is_evaluated(tiny_config, tmp_path):
    prefs = _preferences(tmp_path / "prefs.jsonl")
    config = tiny_config("eval.long_tokens=16", "eval.long_prompts=4", f"data.preference_source={prefs}")
    summary = run_dpo(config, tmp_path / "dpo", epochs=2, learning_rate=5e-3, progress=False)
    assert summary["objective"] == "dpo" and summary["steps"] > 0 and summary["preference_pairs"] == 16
    for key in EVAL_KEYS:
        assert key in summary
    log = [json.loads(line) for line in (tmp_path / "dpo" / "dpo_log.jsonl").read_text().splitlines()]
    margins = [r["rewards/margins"] for r in log if "rewards/margins" in r]
    assert margins and margins[-1] > 0  # the implicit reward ranks chosen above rejected after training
    assert _adapter_moved(tmp_path / "dpo")
    assert not (tmp_path / "dpo" / "final" / "ref").exists()  # TRL's frozen reference adapter is not exported


def test_dpo_without_preference_pairs_is_a_one_line_error(tmp_path, capsys):
    code = main(["dpo", "--task", "tiny", "--out", str(tmp_path / "dpo")])
    assert code != 0
    err = capsys.readouterr().err
    assert "data.preference_source" in err and "Traceback" not in err


def test_an_empty_preference_is_a_one_line_error_naming_row_and_column(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "A river", "chosen": "  ", "rejected": " the the"}) + "\n")
    with pytest.raises(RcfdError, match="row 0 of .* has an empty chosen"):
        load_preference_pairs(DataConfig(preference_source=str(path)))
