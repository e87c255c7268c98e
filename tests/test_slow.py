"""End-to-end on the real packaged SmolLM2-135M (minutes): run by `make test-slow` and CI."""

import json

import pytest

from rcfd.cli import main

pytestmark = pytest.mark.slow


def test_packaged_model_materializes_once_and_loads_offline():
    from transformers import AutoModelForCausalLM

    from rcfd.models import materialize_smollm2

    path = materialize_smollm2()
    assert materialize_smollm2() == path  # second call reuses the checkpoint
    model = AutoModelForCausalLM.from_pretrained(path)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert getattr(model.config, "quantization_config", None) is None


def test_short_demo_on_real_model(tmp_path):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--steps", "3", "--quiet",
                 "--set", "data.num_eval=32", "--set", "eval.long_prompts=4", "--set", "eval.long_tokens=40"])
    assert code == 0
    record = json.loads((out / "sweep.json").read_text())
    runs = {"base": record["base"]["metrics"], **{n: r["metrics"] for n, r in record["runs"].items()}}
    assert set(runs) == {"base", "beta0", "rcfd"}  # the default plan; --runs beta0,kl,rcfd adds kl
    for name, r in runs.items():
        assert r["demo_reward_mean"] == pytest.approx(runs["base"]["demo_reward_mean"])
        assert 0 < r["mean_length"] <= 32 and r["alignment"] >= 0, name
    assert runs["base"]["kl_to_ref"] == 0.0
    for name in ("beta0", "rcfd"):
        assert runs[name]["kl_to_ref"] > 0.0, name  # training moved the policy away from the reference
        assert 0 < len(runs[name]["loglik_by_position"]) <= 40
