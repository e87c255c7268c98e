"""The scorers of rcfd.rewards on fixed inputs: length, VADER, the sentiment classifier, similarity,
and hub classifiers and reward models as tiny random models saved locally (nothing is downloaded)."""

import json

import pytest
import torch

from rcfd_testing import tiny_classifier as _tiny_classifier

from rcfd.config import load_config
from rcfd.errors import RcfdError
from rcfd.rewards import build_rewards


def test_length_reward_is_minus_tokens(tiny_tokenizer):
    rewards = build_rewards(["length"], policy=None, reference=None, tokenizer=tiny_tokenizer, model_id="t")
    completions = [" one two three", " a"]
    expected = [-len(tiny_tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions]
    assert rewards(["p", "q"], completions)[:, 0].tolist() == expected


def test_vader_scores_sentiment_and_is_easy_to_game():
    rewards = build_rewards(["vader"], policy=None, reference=None, tokenizer=None, model_id="t")
    v = rewards(["", "", ""], ["great great great love love", "A fine film with a moving story.",
                               "Dull, ugly and far too long."])[:, 0]
    assert v[0] > v[1] > 0 > v[2]


def test_sentiment_classifier_trains_reports_accuracy_and_scores(tmp_path, some_reviews):
    from rcfd.rewards.sentiment import SentimentReward, train_sentiment_classifier

    meta = train_sentiment_classifier(tmp_path / "clf", list(some_reviews["text"]), list(some_reviews["label"]))
    assert meta["n_test"] == 500 and meta["n_train"] == 2000 and 0.75 < meta["test_accuracy"] <= 1.0
    reward = SentimentReward(tmp_path / "clf")
    good, bad = reward(["This movie was ", "This movie was "],
                       [" wonderful, moving and beautifully acted. I loved it.", " awful, boring and a waste of time."])
    assert good > bad
    assert json.loads((tmp_path / "clf" / "meta.json").read_text())["test_accuracy"] == meta["test_accuracy"]
    with pytest.raises(RcfdError, match="reward-model train"):
        SentimentReward(tmp_path)


def test_default_classifier_trained_by_runs_started_side_by_side(tmp_path, some_reviews, monkeypatch):
    """Two runs on a fresh cache both train the default classifier; both must get a whole one. (Two
    processes once collided on one temp file name and a run died: test_files.py pins that down.)"""
    import threading

    import rcfd.data
    from rcfd.rewards import sentiment

    monkeypatch.setenv("RCFD_CACHE", str(tmp_path))
    monkeypatch.setattr(rcfd.data, "load_movie_reviews", lambda: some_reviews)
    fit = sentiment._fit_pipeline
    both_fitted = threading.Barrier(2)

    def fit_then_wait(*args):
        model = fit(*args)
        both_fitted.wait(timeout=60)  # both write at the same moment
        return model

    monkeypatch.setattr(sentiment, "_fit_pipeline", fit_then_wait)
    leftover = tmp_path / "reward_models" / sentiment.DEFAULT_SENTIMENT
    leftover.mkdir(parents=True)
    (leftover / "model.joblib").write_bytes(b"half written by an interrupted run")
    paths, errors = [], []

    def run():
        try:
            paths.append(sentiment.default_sentiment_dir(progress=False))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and paths == [leftover, leftover]
    assert sorted(p.name for p in (tmp_path / "reward_models").iterdir()) == [sentiment.DEFAULT_SENTIMENT]
    good, bad = sentiment.SentimentReward(leftover)(["It was "] * 2, [" wonderful, I loved it.", " awful and boring."])
    assert good > bad


def test_similarity_prefers_a_related_summary():
    rewards = build_rewards(["similarity"], policy=None, reference=None, tokenizer=None, model_id="t")
    source = "The cat sat on the warm mat in the kitchen and slept all afternoon."
    s = rewards([source, source], [" A cat sleeping on a mat", " Stock markets fell sharply on Monday"])[:, 0]
    assert s[0] > s[1] and -1.0 <= float(s.min()) and float(s.max()) <= 1.0 + 1e-5


# ----------------------------------------------------------------------------- HF models on local fixtures


def test_hf_classifier_reward_is_the_chosen_label_logit(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = _tiny_classifier(tmp_path / "clf", 2, {0: "NEGATIVE", 1: "POSITIVE"})
    cfg = load_config(None, ["reward.names=[classifier]", f"reward.classifier_model={path}"]).reward
    rewards = build_rewards(cfg.names, policy=None, reference=None, tokenizer=None, model_id="t", config=cfg)
    got = rewards(["I liked ", "I hated "], ["it a lot", "every minute"])[:, 0]
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path)
    want = model(**tok(["I liked it a lot", "I hated every minute"], return_tensors="pt", padding=True)).logits[:, 1]
    assert torch.allclose(got, want.detach(), atol=1e-5)
    bad = load_config(None, ["reward.names=[classifier]", f"reward.classifier_model={path}",
                             "reward.classifier_label=HAPPY"]).reward
    with pytest.raises(RcfdError, match="not a label.*NEGATIVE, POSITIVE"):
        build_rewards(bad.names, policy=None, reference=None, tokenizer=None, model_id="t", config=bad)


def test_hf_reward_model_scores_text_summary_pairs(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = _tiny_classifier(tmp_path / "rm", 1)
    cfg = load_config(None, ["reward.names=[reward-model]", f"reward.reward_model={path}"]).reward
    rewards = build_rewards(cfg.names, policy=None, reference=None, tokenizer=None, model_id="t", config=cfg)
    got = rewards(["a long post about cats", "a post about dogs"], ["cats", "dogs are nice"])[:, 0]
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path)
    enc = tok(["a long post about cats", "a post about dogs"], ["cats", "dogs are nice"], return_tensors="pt", padding=True)
    assert torch.allclose(got, model(**enc).logits[:, 0].detach(), atol=1e-5)
    two = _tiny_classifier(tmp_path / "two", 2)
    with pytest.raises(RcfdError, match="scalar head"):
        build_rewards(["reward-model"], policy=None, reference=None, tokenizer=None, model_id="t",
                      config=load_config(None, ["reward.names=[reward-model]", f"reward.reward_model={two}"]).reward)


# ----------------------------------------------------------------------------- task presets and their data


