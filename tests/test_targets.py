"""Target models (predicted demonstration rewards) and the per-row choice of RCfD's target."""

import json

import pytest
import torch
from scipy.stats import wasserstein_distance

from rcfd.cli import main
from rcfd.errors import RcfdError
from rcfd.train.targets import TargetModel, regression_scores, ridge_fit


def test_ridge_fit_recovers_a_linear_map():
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w_true = torch.tensor([[1.0, 0.0], [-2.0, 1.0], [0.5, 3.0]], dtype=torch.float64)
    y = x @ w_true + torch.tensor([4.0, -1.0], dtype=torch.float64)
    w, b = ridge_fit(x, y, 0.0)
    assert torch.allclose(w, w_true) and torch.allclose(b, torch.tensor([4.0, -1.0], dtype=torch.float64))
    w_big, _ = ridge_fit(x, y, 1e6)  # a large ridge shrinks the weights towards 0 (the intercept is free)
    assert w_big.abs().max() < 0.01


def test_regression_scores_by_hand():
    actual = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])  # population std √2
    exact = regression_scores(actual.clone(), actual, bins=5)[0]
    assert exact["r2"] == pytest.approx(1.0) and exact["calibration_error_std"] == pytest.approx(0.0)
    shifted = regression_scores(actual + 1, actual, bins=5)[0]
    assert shifted["r2"] == pytest.approx(1 - 1 / 2)  # MSE 1, variance 2
    assert shifted["bias_std"] == pytest.approx(1 / 2 ** 0.5)
    assert shifted["calibration_error_std"] == pytest.approx(1 / 2 ** 0.5)
    # The mean predicted everywhere: no spread explained (R² 0), calibrated on average, not per bin.
    flat = regression_scores(torch.full((5, 1), 2.0), actual, bins=5)[0]
    assert flat["r2"] == pytest.approx(0.0) and flat["bias_std"] == pytest.approx(0.0)
    assert flat["calibration_error_std"] == pytest.approx((2 + 1 + 0 + 1 + 2) / 5 / 2 ** 0.5)


def _synthetic(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 5, generator=g)
    targets = (features[:, :1] * 2 - features[:, 1:2] + 0.1 * torch.randn(n, 1, generator=g))
    return features, targets


def test_fit_save_load_predict(tmp_path):
    features, targets = _synthetic()
    model = TargetModel.fit(features, targets, meta={"embedder": "minilm", "reward_identity": "r", "reward_names": ["r"]})
    assert model.meta["n_fit"] == 48 and model.meta["n_heldout"] == 12
    assert model.meta["heldout"][0]["r2"] > 0.9
    model.save(tmp_path / "tm")
    loaded = TargetModel.load(tmp_path / "tm")
    assert torch.allclose(loaded.predict(features), model.predict(features))
    assert json.loads((tmp_path / "tm" / "target_model.json").read_text())["ridge"] == model.meta["ridge"]


def test_predictions_average_to_the_targets_mean_on_the_prompts_fitted():
    """Refitted on every row with a free intercept, the predictions average to the targets' mean, so
    rcfd-batch against the mean of all targets is the same run with predicted or demonstrated targets."""
    features, targets = _synthetic()
    targets = torch.cat([targets, torch.randn(60, 1, generator=torch.Generator().manual_seed(1))], -1)  # R² ≈ 0
    model = TargetModel.fit(features, targets)
    assert torch.allclose(model.predict(features).double().mean(0), targets.double().mean(0), atol=1e-5)


def test_target_model_refuses_mismatches(tmp_path):
    features, targets = _synthetic()
    with pytest.raises(RcfdError, match="one target per prompt: got 60 prompts and 59"):
        TargetModel.fit(features, targets[:59])
    with pytest.raises(RcfdError, match="too few"):
        TargetModel.fit(features[:4], targets[:4])
    model = TargetModel.fit(features, targets, meta={"embedder": "minilm", "reward_identity": "loglik:a",
                                                     "reward_names": ["loglik"]})
    with pytest.raises(RcfdError, match="expects 5-dimensional prompt features"):
        model.predict(torch.zeros(3, 384))
    other = type("Stack", (), {"names": ["sentiment"], "identity": lambda self: "sentiment:x"})()
    with pytest.raises(RcfdError, match=r"fitted for rewards \['loglik'\].*rcfd target-model train"):
        model.check_rewards(other, "a")
    with pytest.raises(RcfdError, match="not a target model directory"):
        TargetModel.load(tmp_path)


def test_target_per_row(tmp_path, tiny_config):
    """mixed: the measured R(x, y_demo) where a prompt has a demonstration, the prediction elsewhere."""
    from rcfd.train.components import build_components
    from rcfd.rewards.demo_cache import demo_rewards
    from rcfd.train.targets import embed_prompts, train_target_model

    half = ["data.demo_fraction=0.5"]
    config = tiny_config(*half)
    model = train_target_model(build_components(config, progress=False, with_demo_rewards=False), config,
                               tmp_path / "tm", embedder="policy", progress=False)
    assert model.meta["n_fit"] + model.meta["n_heldout"] == 32  # the 32 of 64 training prompts with a demonstration
    mixed = build_components(tiny_config(*half, "objective.target=mixed", f"objective.target_model={tmp_path / 'tm'}"),
                             progress=False)
    ds = mixed.train_ds
    assert ds["demonstration"][31].strip() and not ds["demonstration"][32]
    measured = demo_rewards(mixed.rewards, ds.select(range(32)), mixed.tokenizer, 16, progress=False)
    predicted = model.predict(embed_prompts(ds["prompt"], "policy", policy=mixed.policy, reference=mixed.reference,
                                            tokenizer=mixed.tokenizer))
    assert torch.allclose(mixed.demo_train[:32], measured)
    assert torch.allclose(mixed.demo_train[32:], predicted[32:], atol=1e-5)
    every = build_components(tiny_config(*half, "objective.target=predicted",
                                         f"objective.target_model={tmp_path / 'tm'}"), progress=False)
    assert torch.allclose(every.demo_train, predicted, atol=1e-5)
    with pytest.raises(RcfdError, match="32 of 64 training prompts have no demonstration.*objective.target=mixed"):
        build_components(tiny_config(*half), progress=False)
    # mean: the measured rewards' mean over the prompts with a demonstration, for every prompt
    mean = build_components(tiny_config(*half, "objective.target=mean"), progress=False)
    assert mean.demo_train.shape == (64, measured.shape[1])
    assert torch.allclose(mean.demo_train, measured.mean(0).expand(64, -1))
    wrong = tiny_config(*half, "reward.names=[length]", "objective.target=mixed",
                        f"objective.target_model={tmp_path / 'tm'}")
    with pytest.raises(RcfdError, match="fitted for rewards"):
        build_components(wrong, progress=False)


def test_predicted_without_a_target_model_fits_one_at_the_start(tmp_path, tiny_config, capsys):
    """objective.target=predicted with no objective.target_model: the run fits the same model that
    `rcfd target-model train` with its defaults would, on the same prompts, and says how well it predicts."""
    from rcfd.train.components import build_components
    from rcfd.train.targets import train_target_model

    config = tiny_config("objective.target=predicted")
    fitted = build_components(config, progress=True)
    assert "held-out R²" in capsys.readouterr().out
    train_target_model(build_components(config, progress=False, with_demo_rewards=False), config, tmp_path / "tm",
                       progress=False)
    loaded = build_components(tiny_config("objective.target=predicted", f"objective.target_model={tmp_path / 'tm'}"),
                              progress=False)
    assert torch.allclose(fitted.demo_train, loaded.demo_train)
    assert fitted.demo_train.std(0).max() > 0  # per-prompt predictions, not one constant


def test_target_config_errors(tiny_config):
    with pytest.raises(RcfdError, match="unknown target .median. in objective.target"):
        tiny_config("objective.target=median")
    with pytest.raises(RcfdError, match=r"data.demo_fraction must be in \(0, 1\]"):
        tiny_config("data.demo_fraction=0")


@pytest.mark.slow
def test_target_model_cli_then_train(tmp_path, capsys):
    """`rcfd target-model train`, then an RCfD run with demonstrations for a quarter of its prompts."""
    assert main(["target-model", "train", "--task", "tiny", "--set", "data.demo_fraction=0.25", "--embedder", "policy",
                 "--out", str(tmp_path / "tm"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fitted on 13 + 3 held-out prompts" in out and "held-out R²" in out
    assert main(["train", "--task", "tiny", "--out", str(tmp_path / "run"), "--steps", "2", "--no-eval", "--quiet",
                 "--set", "data.demo_fraction=0.25", "--set", "objective.target=mixed",
                 "--set", f"objective.target_model={tmp_path / 'tm'}"]) == 0
    assert (tmp_path / "run" / "final").exists()


def test_group_by_prompt_by_hand():
    from rcfd.data import group_by_prompt

    rows = [{"prompt": p, "demonstration": d, "long_demonstration": d}
            for p, d in [("a", "1"), ("b", "2"), ("a", "3"), ("c", ""), ("a", "4"), ("c", "5"), ("c", "6")]]
    grouped = group_by_prompt(rows, min_demonstrations=2, max_demonstrations=2)
    assert [(r["prompt"], r["demonstrations"], r["demonstration"]) for r in grouped] == [
        ("a", ["1", "3"], "1"), ("c", ["5", "6"], "5")]  # b has one; c's empty one does not count
    assert [r["prompt"] for r in group_by_prompt(rows)] == ["a", "b", "c"]


def _several_demos_file(path, n=12):
    words = "the cat sat on a mat and then ran far away".split()
    rows = [{"prompt": f"Story {i}: once", "demonstration": [" " + " ".join(words[:2 + (i + j) % 5]) for j in range(3)]}
            for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_demonstration_targets_mean_and_second_moment(tmp_path, tiny_config):
    from rcfd.data import build_datasets
    from rcfd.models import load_tokenizer, resolve_model_path
    from rcfd.rewards import build_rewards
    from rcfd.train.targets import demonstration_targets

    config = tiny_config(f"data.source={_several_demos_file(tmp_path / 'd.jsonl')}", "data.num_eval=2")
    tokenizer = load_tokenizer(resolve_model_path(config.model.name))
    train, _ = build_datasets(config.data, tokenizer)
    assert all(len(d) == 3 for d in train["demonstrations"]) and train["demonstration"][0] == train["demonstrations"][0][0]
    count = build_rewards(["reward_fixtures:word_count"], policy=None, reference=None, tokenizer=tokenizer, model_id="x")
    got = demonstration_targets(count, train, tokenizer, 16, second_moment=True, progress=False)
    for row, demos in enumerate(train["demonstrations"]):
        n = [len(d.split()) for d in demos]
        assert got[row].tolist() == pytest.approx([sum(n) / 3, sum(x * x for x in n) / 3])


def test_train_demonstrations_cuts_training_targets_only(tmp_path, tiny_config):
    from rcfd.data import build_datasets
    from rcfd.models import load_tokenizer, resolve_model_path

    data = f"data.source={_several_demos_file(tmp_path / 'd.jsonl')}"
    config = tiny_config(data, "data.num_eval=2", "data.train_demonstrations=1")
    tokenizer = load_tokenizer(resolve_model_path(config.model.name))
    train, held_out = build_datasets(config.data, tokenizer)
    assert all(len(d) == 1 for d in train["demonstrations"]) and train["demonstration"][0] == train["demonstrations"][0][0]
    assert all(len(d) == 3 for d in held_out["demonstrations"])  # evaluation compares with every one
    with pytest.raises(RcfdError, match="data.train_demonstrations must be >= 1"):
        tiny_config(data, "data.train_demonstrations=0")


def test_several_demos_fields_by_hand():
    from rcfd.eval.evaluate import several_demos_fields

    # Two prompts, two samples each; prompt 0 has demonstrations [0, 2], prompt 1 has [5, 5, 8].
    values = torch.tensor([[0.0], [2.0], [5.0], [7.0]])
    demos, counts = torch.tensor([[0.0], [2.0], [5.0], [5.0], [8.0]]), torch.tensor([2, 3])
    out = several_demos_fields(["r"], values, 2, demos, counts, bins=10, smoothing=0.5)
    # Prompt 0 matches exactly (W1 0); prompt 1: quantile functions {5, 7} and {5, 5, 8} differ by
    # |5−5|·1/3 + |5−5|·1/6 + |7−5|·1/6 + |7−8|·1/3 = 2/3, so the mean over prompts is 1/3.
    assert out["rewards/r/wasserstein_per_prompt"] == pytest.approx(1 / 3)
    assert out["rewards/r/std_per_prompt"] == pytest.approx((2 ** 0.5 + 2 ** 0.5) / 2)
    assert out["rewards/r/demo_std_per_prompt"] == pytest.approx((2 ** 0.5 + 3 ** 0.5) / 2)
    assert out["demos_per_prompt"] == 2.5 and out["wasserstein_per_prompt"] == out["rewards/r/wasserstein_per_prompt"]
    # Pooled: {0, 2, 5, 7} against {0, 2, 5, 5, 8}.
    assert out["rewards/r/wasserstein_all_demos"] == pytest.approx(wasserstein_distance([0, 2, 5, 7], [0, 2, 5, 5, 8]))


@pytest.mark.slow
def test_match_spread_trains_and_refuses_single_demonstrations(tmp_path, tiny_config):
    from rcfd.train.components import build_components
    from rcfd.train.objectives import with_second_moments

    assert with_second_moments(torch.tensor([[2.0], [-3.0]])).tolist() == [[2.0, 4.0], [-3.0, 9.0]]
    spread = ["objective.name=rcfd-mean", "objective.match_spread=true", "train.num_generations=2",
              "train.advantage=rloo"]
    with pytest.raises(RcfdError, match="rcfd-mean matches each prompt's reward spread.*min_demonstrations=2"):
        build_components(tiny_config(*spread), progress=False)
    with pytest.raises(RcfdError, match="data.min_demonstrations"):
        tiny_config("data.min_demonstrations=9")
    data = _several_demos_file(tmp_path / "d.jsonl")
    assert main(["train", "--task", "tiny", "--out", str(tmp_path / "run"), "--steps", "2", "--quiet",
                 "--set", f"data.source={data}", "--set", "data.num_eval=2", *[a for s in spread for a in ("--set", s)]]) == 0
    targets = torch.load(tmp_path / "run" / "demo_rewards.pt")
    assert targets.shape == (10, 2) and (targets[:, 1] > targets[:, 0] ** 2).all()  # E[R²] > E[R]²: a spread
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["demos_per_prompt"] == 3 and summary["wasserstein_per_prompt"] >= 0  # held out: every demonstration
