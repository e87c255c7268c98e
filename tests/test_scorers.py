"""Use cases 2-3: each scorer on fixed inputs, the weighted objective, the task presets' datasets
(deterministic) and the hub code paths on local fixtures (nothing is downloaded)."""

import json

import pytest
import torch

from rcfd.config import load_config
from rcfd.data import build_datasets
from rcfd.errors import RcfdError
from rcfd.objectives import objective_values
from rcfd.rewards import build_rewards
from rcfd.tasks import TASKS, get_task


def test_weighted_objective_is_quality_plus_alpha_times_the_rest():
    r = torch.tensor([[1.0, -10.0], [2.0, -4.0]])
    assert torch.allclose(objective_values("weighted", r, alpha=0.1), torch.tensor([0.0, 1.6]))
    with pytest.raises(RcfdError, match="needs at least two rewards"):
        load_config(None, ["objective.name=weighted"])


def test_the_demos_quality_run_trains_on_quality_alone_and_is_scored_on_every_reward():
    from rcfd.demo import RUNS

    config = load_config(get_task("wiki-description").config_path, RUNS["quality"])
    assert config.reward.names == ["similarity", "length"]  # evaluated on the plane of the α sweep
    r = torch.tensor([[0.9, -24.0], [0.4, -3.0]])
    assert torch.equal(objective_values(config.objective.name, r, alpha=config.objective.alpha), r[:, 0])


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
def _tiny_classifier(path, num_labels, id2label=None):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from rcfd.rewards.quality import packaged_minilm

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=32, hidden_dim=64, n_layers=2, n_heads=2, num_labels=num_labels,
                              id2label=id2label or {i: f"LABEL_{i}" for i in range(num_labels)},
                              label2id={v: k for k, v in (id2label or {}).items()} or None)
    DistilBertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(packaged_minilm()).save_pretrained(path)  # a BERT vocabulary, offline
    return str(path)


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
def test_every_task_preset_loads_and_is_listed():
    from rcfd.cli import main

    for name, task in TASKS.items():
        assert load_config(task.config_path).reward.names
    with pytest.raises(RcfdError, match="unknown task"):
        get_task("nope")
    assert main(["tasks"]) == 0


def _data(task, tokenizer, *overrides):
    cfg = load_config(get_task(task).config_path, ["data.num_train=40", "data.num_eval=8", *overrides]).data
    return build_datasets(cfg, tokenizer)


@pytest.fixture(scope="module")
def some_reviews():
    from rcfd.data import load_movie_reviews

    return load_movie_reviews().select(range(0, 25000, 10))  # every 10th packaged review: both labels


def test_positive_reviews_data_is_deterministic_prompt_of_10_tokens(tiny_tokenizer, some_reviews, monkeypatch):
    import rcfd.data

    monkeypatch.setattr(rcfd.data, "load_movie_reviews", lambda: some_reviews)  # 2,500 reviews: a fast test
    positives = {t for t, label in zip(some_reviews["text"], some_reviews["label"]) if label == 1}
    train, held = _data("positive-reviews", tiny_tokenizer)
    again, held_again = _data("positive-reviews", tiny_tokenizer)
    assert train["prompt"] == again["prompt"] and held["demonstration"] == held_again["demonstration"]
    assert all(len(tiny_tokenizer(p, add_special_tokens=False)["input_ids"]) <= 11 for p in train["prompt"])
    assert not set(train["prompt"]) & set(held["prompt"]) and "<br" not in "".join(train["demonstration"])
    assert all(any(t.startswith(p.strip()) for t in positives) for p in held["prompt"])  # positive reviews only


def test_wiki_description_pairs_text_with_its_human_description(tiny_tokenizer):
    from rcfd.data import load_wiki_records

    train, held = _data("wiki-description", tiny_tokenizer)
    descriptions = {" " + r["description"].strip() + "\n" for r in load_wiki_records() if r.get("description")}
    assert set(train["demonstration"]) <= descriptions
    assert all(p.endswith(":") and "Short description of" in p for p in held["prompt"])
    assert _data("wiki-description", tiny_tokenizer)[0]["prompt"] == train["prompt"]


def test_imdb_positive_hub_path_on_a_local_dataset_directory(tmp_path, tiny_tokenizer):
    import datasets

    texts = [f"{i} " + "words " * 40 for i in range(30)]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(30)]})}
                         ).save_to_disk(str(tmp_path / "imdb"))
    train, held = _data("imdb-positive", tiny_tokenizer, f"data.source={tmp_path / 'imdb'}", "data.demo_tokens=20",
                        "data.eval_demo_tokens=20")
    kept = {int(t.split()[0]) for t in list(train["prompt"]) + list(held["prompt"])}
    assert kept and all(i % 2 == 1 for i in kept)  # label 1 only


def test_tldr_hub_path_on_local_jsonl(tmp_path, tiny_tokenizer):
    rows = [{"prompt": f"POST: story {i}\nTL;DR:", "completion": f" summary {i}"} for i in range(20)]
    (tmp_path / "tldr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, held = _data("tldr", tiny_tokenizer, f"data.source={tmp_path / 'tldr.jsonl'}")
    assert len(train) + len(held) == 20 and train["demonstration"][0].startswith(" summary")


def test_stop_at_newline_ends_completions_at_the_first_line_break(tiny_path, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from rcfd.rollout import completion_mask, eos_token_ids

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    newline = tiny_tokenizer("a\nb", add_special_tokens=False)["input_ids"]
    nl = [i for i in newline if "\n" in tiny_tokenizer.decode([i])]
    assert nl and set(nl) <= eos_token_ids(model, tiny_tokenizer, stop_at_newline=True)
    assert not set(nl) & eos_token_ids(model, tiny_tokenizer)
    ids = torch.tensor([[5, 6, nl[0], 7, 8]])
    assert completion_mask(ids, eos_token_ids(model, tiny_tokenizer, True)).tolist() == [[1, 1, 1, 0, 0]]
