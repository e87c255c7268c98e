import json

import pytest

from rcfd.config import DataConfig, load_config
from rcfd.data import build_datasets, fingerprint, unseen_dataset
from rcfd.errors import RcfdError
from rcfd.tasks import get_task


def test_wiki_split_is_deterministic_and_disjoint(tiny_tokenizer):
    cfg = DataConfig(prompt_tokens=8, demo_tokens=12, eval_demo_tokens=20, num_train=200, num_eval=40)
    train, ev = build_datasets(cfg, tiny_tokenizer)
    train2, ev2 = build_datasets(cfg, tiny_tokenizer)
    assert len(train) == 200 and len(ev) == 40
    assert fingerprint(train) == fingerprint(train2) and fingerprint(ev) == fingerprint(ev2)
    assert not set(ev["prompt"]) & set(train["prompt"])
    for p, d in zip(list(ev["prompt"])[:10], list(ev["demonstration"])[:10]):
        assert len(tiny_tokenizer(p, add_special_tokens=False)["input_ids"]) in range(7, 10)
        assert 0 < len(tiny_tokenizer(d, add_special_tokens=False)["input_ids"]) <= 14
    # a different split seed gives a different split
    _, ev3 = build_datasets(DataConfig(**{**cfg.__dict__, "split_seed": 1}), tiny_tokenizer)
    assert fingerprint(ev3) != fingerprint(ev)


def test_unseen_pairs_are_outside_both_splits(tmp_path, tiny_tokenizer):
    rows = _rows(30)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = DataConfig(source=str(tmp_path / "d.jsonl"), prompt_column="question", demo_column="answer",
                     num_eval=6, num_train=10)
    train, ev = build_datasets(cfg, tiny_tokenizer)
    unseen = unseen_dataset(cfg, tiny_tokenizer, 14)
    assert len(unseen) == 14 and set(unseen.column_names) == set(ev.column_names)
    assert set(unseen["prompt"]) | set(train["prompt"]) | set(ev["prompt"]) == {r["question"] for r in rows}
    assert fingerprint(unseen_dataset(cfg, tiny_tokenizer, 5)) == fingerprint(unseen.select(range(5)))
    with pytest.raises(RcfdError, match="15 unseen pairs asked for, but .* has 14 pairs outside"):
        unseen_dataset(cfg, tiny_tokenizer, 15)


def _rows(n=20):
    return [{"question": f"prompt number {i}", "answer": f"answer {i}"} for i in range(n)]


def test_jsonl_csv_parquet_files(tmp_path, tiny_tokenizer):
    import pandas as pd

    rows = _rows()
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.csv", "d.parquet"):
        cfg = DataConfig(source=str(tmp_path / name), prompt_column="question", demo_column="answer", num_eval=4)
        train, ev = build_datasets(cfg, tiny_tokenizer)
        assert len(train) == 16 and len(ev) == 4
        assert set(train["prompt"]) | set(ev["prompt"]) == {r["question"] for r in rows}


def test_hub_code_path_on_local_dataset_dir(tmp_path, tiny_tokenizer):
    """A hub id goes through datasets.load_dataset; a local data directory exercises that path offline."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in _rows()))
    cfg = DataConfig(source=str(folder), prompt_column="question", demo_column="answer", num_eval=5)
    train, ev = build_datasets(cfg, tiny_tokenizer)
    assert len(ev) == 4 and len(train) == 16  # eval capped at a fifth of the data


def test_saved_dataset_directory(tmp_path, tiny_tokenizer):
    import datasets

    datasets.Dataset.from_list(_rows()).save_to_disk(str(tmp_path / "saved"))
    cfg = DataConfig(source=str(tmp_path / "saved"), prompt_column="question", demo_column="answer")
    train, ev = build_datasets(cfg, tiny_tokenizer)
    assert len(train) + len(ev) == 20


def test_missing_demo_column(tmp_path, tiny_tokenizer):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in _rows()))
    cfg = DataConfig(source=str(tmp_path / "d.jsonl"), prompt_column="question")
    with pytest.raises(RcfdError, match="no column 'demonstration'.*data.demo_column"):
        build_datasets(cfg, tiny_tokenizer)


def test_empty_prompt(tmp_path, tiny_tokenizer):
    rows = _rows()
    rows[3]["question"] = "   "
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = DataConfig(source=str(tmp_path / "d.jsonl"), prompt_column="question", demo_column="answer")
    with pytest.raises(RcfdError, match="row 3 .* empty prompt"):
        build_datasets(cfg, tiny_tokenizer)


def test_missing_file(tmp_path, tiny_tokenizer):
    with pytest.raises(RcfdError, match="not an existing"):
        build_datasets(DataConfig(source=str(tmp_path / "nope.jsonl")), tiny_tokenizer)


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


def _data(task, tokenizer, *overrides):
    cfg = load_config(get_task(task).config_path, ["data.num_train=40", "data.num_eval=8", *overrides]).data
    return build_datasets(cfg, tokenizer)


@pytest.mark.parametrize("content, suffix, message", [
    ("", ".jsonl", "holds no rows"),
    ("prompt,demonstration\n", ".csv", "holds no rows"),
    ("prompt,demonstration\nHello,world\nA,b\n", ".csv", "at least 2 are needed: give 10 or more"),
])
def test_too_little_data_is_one_line_naming_the_field(tmp_path, tiny_tokenizer, content, suffix, message):
    from rcfd.config import DataConfig
    from rcfd.data import build_datasets
    from rcfd.errors import RcfdError

    path = tmp_path / f"pairs{suffix}"
    path.write_text(content)
    with pytest.raises(RcfdError, match=message):
        build_datasets(DataConfig(source=str(path)), tiny_tokenizer)


def test_a_capped_held_out_split_is_said_once(tmp_path, tiny_tokenizer, capsys):
    from rcfd.config import DataConfig
    from rcfd.data import build_datasets

    path = tmp_path / "forty.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Prompt {i} is", "demonstration": f" answer {i}."}) + "\n"
                            for i in range(40)))
    for _ in range(2):
        train, held_out = build_datasets(DataConfig(source=str(path), num_eval=128), tiny_tokenizer)
    assert len(held_out) == 8 and len(train) == 32
    err = capsys.readouterr().err
    assert err.count("the held-out split keeps a fifth, 8 (data.num_eval=128)") == 1
