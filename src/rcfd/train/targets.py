"""Predicted demonstration rewards: RCfD targets for prompts without a demonstration (an extension).

RCfD calibrates to R(x, y_demo), so the paper needs a human demonstration for every training prompt
and leaves learning that target from the prompt to future work. A *target model* predicts it from the
prompt alone: ridge regression on frozen prompt embeddings, fitted on the prompts that have a
demonstration. ``objective.target=mixed`` uses it where a prompt has no demonstration;
``objective.target=predicted`` uses it for every prompt, a denoised target (E[R(x, y_demo) | x] rather
than one human's sample of it).

Embedders: ``minilm`` (the packaged all-MiniLM-L6-v2 sentence embedding) or ``policy`` (the base
model's last hidden state, averaged over the prompt's tokens). ``rcfd target-model train`` writes
DIR/target_model.safetensors (weights) and DIR/target_model.json (what it was fitted for, with its
held-out R² and calibration error).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import RcfdError

EMBEDDERS = ("minilm", "policy")
RIDGES = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
WEIGHTS_FILE, META_FILE = "target_model.safetensors", "target_model.json"


def ridge_fit(x: torch.Tensor, y: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(w [D, K], b [K]) minimizing ‖y − x w − b‖² + ridge·‖w‖² (the intercept is not penalized)."""
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + ridge * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    w = torch.linalg.solve(gram, xc.T @ yc)
    return w, y_mean - x_mean @ w


def choose_ridge(x: torch.Tensor, y: torch.Tensor, ridges=RIDGES, folds: int = 5) -> float:
    """The ridge of ``ridges`` with the least k-fold cross-validated squared error (row i in fold i mod k)."""
    folds = max(2, min(folds, x.shape[0]))
    fold = torch.arange(x.shape[0], device="cpu") % folds
    errors = []
    for ridge in ridges:
        total = 0.0
        for f in range(folds):
            w, b = ridge_fit(x[fold != f], y[fold != f], ridge)
            total += float(((x[fold == f] @ w + b - y[fold == f]) ** 2).sum())
        errors.append(total)
    return ridges[min(range(len(ridges)), key=errors.__getitem__)]


def regression_scores(predicted: torch.Tensor, actual: torch.Tensor, bins: int = 5) -> list[dict]:
    """Per reward (column): R² = 1 − MSE/Var(actual); rmse and bias (mean predicted − mean actual) in
    units of the actual values' std; calibration error = the mean over ``bins`` equal-count bins of the
    prediction of |mean actual − mean predicted|, in the same units (0 for a calibrated predictor)."""
    scores = []
    for j in range(actual.shape[1]):
        p, a = predicted[:, j].double(), actual[:, j].double()
        std = float(a.std(unbiased=False)) or 1.0
        order = torch.argsort(p)
        groups = [g for g in torch.tensor_split(order, min(bins, len(order))) if len(g)]
        error = sum(len(g) * abs(float(a[g].mean() - p[g].mean())) for g in groups) / len(order)
        scores.append({"r2": 1 - float(((p - a) ** 2).mean()) / std ** 2,
                       "rmse_std": float(((p - a) ** 2).mean().sqrt()) / std,
                       "bias_std": float(p.mean() - a.mean()) / std,
                       "calibration_error_std": error / std})
    return scores


@dataclass
class TargetModel:
    """Ridge regression from standardized prompt features to R(x, y_demo) [K rewards]."""

    weight: torch.Tensor  # [D, K], on standardized features
    bias: torch.Tensor  # [K]
    feature_mean: torch.Tensor  # [D]
    feature_std: torch.Tensor  # [D]
    meta: dict = field(default_factory=dict)  # embedder, reward identity and names, ridge, scores, counts

    @classmethod
    def fit(cls, features: torch.Tensor, targets: torch.Tensor, *, heldout_fraction: float = 0.2, seed: int = 0,
            meta: dict | None = None) -> "TargetModel":
        """Choose the ridge by cross-validation on the fitting share, score on the held-out share (recorded in
        ``meta["heldout"]``), then refit on every row."""
        if features.shape[0] != targets.shape[0]:
            raise RcfdError(f"a target model needs one target per prompt: got {features.shape[0]} prompts and "
                            f"{targets.shape[0]} demonstration rewards")
        n = features.shape[0]
        n_heldout = int(round(heldout_fraction * n))
        if n - n_heldout < 4 or n_heldout < 2:
            raise RcfdError(f"{n} prompts with a demonstration are too few to fit and score a target model "
                            f"(at least 4 to fit and 2 held out); give more demonstrations")
        x, y = features.double(), targets.double()
        mean, std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-8)
        x = (x - mean) / std
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        held, kept = order[:n_heldout], order[n_heldout:]
        ridge = choose_ridge(x[kept], y[kept])
        w, b = ridge_fit(x[kept], y[kept], ridge)
        scores = regression_scores(x[held] @ w + b, y[held])
        w, b = ridge_fit(x, y, ridge)
        meta = {**(meta or {}), "ridge": ridge, "n_fit": len(kept), "n_heldout": n_heldout, "heldout": scores,
                "target_mean": y.mean(0).tolist(), "target_std": y.std(0, unbiased=False).tolist()}
        return cls(w.float(), b.float(), mean.float(), std.float(), meta)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """[N, K] predicted demonstration rewards for prompt features [N, D]."""
        if features.ndim != 2 or features.shape[1] != self.weight.shape[0]:
            raise RcfdError(f"the target model expects {self.weight.shape[0]}-dimensional prompt features "
                            f"({self.meta.get('embedder')} embedder), got shape {tuple(features.shape)}")
        return ((features.float() - self.feature_mean) / self.feature_std) @ self.weight + self.bias

    def save(self, out) -> Path:
        from safetensors.torch import save_file

        from ..files import replaced_atomically, write_json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(out / WEIGHTS_FILE) as tmp:
            save_file({"weight": self.weight.contiguous(), "bias": self.bias, "feature_mean": self.feature_mean,
                       "feature_std": self.feature_std}, tmp)
        write_json(out / META_FILE, self.meta)
        return out

    @classmethod
    def load(cls, path) -> "TargetModel":
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / WEIGHTS_FILE).exists() or not (path / META_FILE).exists():
            raise RcfdError(f"objective.target_model '{path}' is not a target model directory (no {WEIGHTS_FILE} "
                            f"and {META_FILE}); fit one with `rcfd target-model train --out {path}`")
        t = load_file(str(path / WEIGHTS_FILE))
        return cls(t["weight"], t["bias"], t["feature_mean"], t["feature_std"],
                   json.loads((path / META_FILE).read_text()))

    def check_rewards(self, rewards, model_id: str, where: str = "objective.target_model") -> None:
        """Refuse a target model fitted for other rewards (or, with the policy embedder, another model)."""
        if self.meta.get("reward_identity") != rewards.identity():
            raise RcfdError(f"{where} was fitted for rewards {self.meta.get('reward_names')} "
                            f"({self.meta.get('reward_identity')}), not this run's {rewards.names} "
                            f"({rewards.identity()}); fit one for this config with `rcfd target-model train`")
        if self.meta.get("embedder") == "policy" and self.meta.get("model_id") != model_id:
            raise RcfdError(f"{where} embeds prompts with model '{self.meta.get('model_id')}', not this run's "
                            f"'{model_id}'; fit one for this config with `rcfd target-model train`")


@torch.no_grad()
def embed_prompts(prompts: list[str], embedder: str, *, policy=None, reference=None, tokenizer=None,
                  batch_size: int = 32) -> torch.Tensor:
    """[N, D] prompt features: ``minilm`` sentence embeddings, or the base model's (``policy`` with its
    adapters off, or ``reference``) last hidden state averaged over each prompt's tokens."""
    if embedder == "minilm":
        from ..rewards.quality import SentenceEncoder

        device = next(policy.parameters()).device if policy is not None else None
        return SentenceEncoder(field="the target model's embedder", device=device)(list(prompts))
    if embedder != "policy":
        raise RcfdError(f"unknown target-model embedder '{embedder}'; choose one of {', '.join(EMBEDDERS)}")
    from .logprobs import reference_context, reference_model

    model = reference_model(policy, reference)
    parts = []
    with reference_context(policy, reference):
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[i:i + batch_size]), return_tensors="pt", padding=True).to(model.device)
            hidden = model(**enc, output_hidden_states=True, use_cache=False).hidden_states[-1].float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            parts.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu())
    return torch.cat(parts)


def _embed(dataset, embedder: str, components) -> torch.Tensor:
    return embed_prompts(list(dataset["prompt"]), embedder, policy=components.policy,
                         reference=components.reference, tokenizer=components.tokenizer)


def describe_fit(model: TargetModel) -> str:
    """How well a target model predicts held-out demonstration rewards, one line per reward."""
    m = model.meta
    lines = [f"target model fitted on {m['n_fit']} + {m['n_heldout']} held-out prompts with a demonstration "
             f"({m['embedder']} embedder, ridge {m['ridge']:g})"]
    for name, score in zip(m["reward_names"], m["heldout"]):
        lines.append(f"  {name}: held-out R² {score['r2']:.3f}, calibration error {score['calibration_error_std']:.3f} "
                     f"and bias {score['bias_std']:+.3f} (in the demonstrations' std)")
    return "\n".join(lines)


def train_target_model(components, config, out, *, embedder: str = "minilm", heldout_fraction: float = 0.2,
                       seed: int = 0, progress: bool = True) -> TargetModel:
    """Fit a target model (:func:`fit_target_model`) and save it to ``out``."""
    model = fit_target_model(components, config, embedder=embedder, heldout_fraction=heldout_fraction, seed=seed,
                             progress=progress)
    model.save(out)
    return model


def fit_target_model(components, config, *, embedder: str = "minilm", heldout_fraction: float = 0.2,
                     seed: int = 0, progress: bool = True) -> TargetModel:
    """Fit a target model on the training prompts that have a demonstration (the target of a prompt with
    several is their mean reward), with the rewards and models of ``components``."""
    from ..data import has_demonstration

    if embedder not in EMBEDDERS:
        raise RcfdError(f"unknown --embedder '{embedder}'; choose one of {', '.join(EMBEDDERS)}")
    if not 0 < heldout_fraction < 1:
        raise RcfdError(f"--heldout-fraction must be in (0, 1), got {heldout_fraction}")
    rows = [i for i, has in enumerate(has_demonstration(components.train_ds)) if has]
    if not rows:
        raise RcfdError("no training prompt has a demonstration to fit a target model on; raise data.demo_fraction "
                        "or fill in demonstrations")
    labelled = components.train_ds.select(rows)
    targets = demonstration_targets(components.rewards, labelled, components.tokenizer,
                                    config.generation.max_new_tokens, progress=progress)
    meta = {"embedder": embedder, "model_id": config.model.name, "reward_names": components.rewards.names,
            "reward_identity": components.rewards.identity(), "data_source": config.data.source}
    return TargetModel.fit(_embed(labelled, embedder, components), targets, heldout_fraction=heldout_fraction,
                           seed=seed, meta=meta)


def spread_matched(config) -> bool:
    """Whether the run calibrates (R, R²) rather than R (``objective.match_spread``)."""
    from .objectives import objective_class

    return objective_class(config.objective.name).matches_spread(config)


def demonstration_targets(rewards, dataset, tokenizer, max_tokens: int, *, second_moment: bool = False,
                          progress: bool = True) -> torch.Tensor:
    """[N, K] mean reward of each row's demonstrations (one or several; every row needs one), and with
    ``second_moment`` [N, 2K]: the mean of R and the mean of R² over them."""
    from ..rewards.demo_cache import every_demo_rewards

    values, counts = every_demo_rewards(rewards, dataset, tokenizer, max_tokens, desc="demonstration rewards (train)",
                                        progress=progress)
    if second_moment:
        values = torch.cat([values, values ** 2], -1)
    totals = torch.zeros(len(counts), values.shape[1], device="cpu").index_add_(
        0, torch.repeat_interleave(torch.arange(len(counts), device="cpu"), counts), values)
    return totals / counts.to(values.dtype)[:, None]


def training_targets(config, components, progress: bool = True) -> torch.Tensor:
    """[N, K] what the RCfD objectives calibrate each training prompt to (``objective.target``); [N, 2K] with
    ``objective.match_spread`` (targets for R and R²)."""
    from ..data import has_demonstration
    from ..rewards.base import check_finite
    from .objectives import objective_class

    c, ds = config, components.train_ds
    has = has_demonstration(ds)
    target = c.objective.target
    if target == "demo" and not all(has):
        missing = has.index(False)
        raise RcfdError(f"{has.count(False)} of {len(has)} training prompts have no demonstration (e.g. row {missing}); "
                        f"objective.name={c.objective.name} calibrates to one: fill them in, set data.demo_fraction=1, "
                        f"or set objective.target=mixed with objective.target_model=DIR (`rcfd target-model train`) "
                        f"or objective.target=mean")
    if spread_matched(c):
        objective_class(c.objective.name).check_demonstrations(ds)
    values = None
    if target in ("predicted", "mixed"):
        if c.objective.target_model:
            model = TargetModel.load(c.objective.target_model)
            model.check_rewards(components.rewards, c.model.name)
        else:
            with torch.random.fork_rng():  # the run draws the same numbers as with the model fitted beforehand
                model = fit_target_model(components, c, progress=progress)
            if progress:
                print(describe_fit(model))
        values = model.predict(_embed(ds, model.meta["embedder"], components))
    if target == "mean" and not any(has):
        raise RcfdError("objective.target=mean averages the demonstrations' rewards, but no training prompt has a "
                        "demonstration; raise data.demo_fraction or give the dataset a demonstration column")
    if target in ("demo", "mixed", "mean") and any(has):
        rows = [i for i, h in enumerate(has) if h]
        measured = demonstration_targets(components.rewards, ds.select(rows), components.tokenizer,
                                         c.generation.max_new_tokens, second_moment=spread_matched(c),
                                         progress=progress)
        if target == "mean":  # one target for every prompt: the demonstrations' mean reward
            values = measured.mean(0, keepdim=True).expand(len(has), -1).clone()
        elif values is None:
            values = measured
        else:
            values[rows] = measured
    check_finite(values, "a demonstration reward")
    return values
