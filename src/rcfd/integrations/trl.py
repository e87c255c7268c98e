"""RCfD as a TRL reward function (``GRPOTrainer(reward_funcs=[RCfDReward(...)])``, RLOO alike), and
:class:`~rcfd.integrations.monitor.CalibrationMonitor`, a callback that logs calibration against the
demonstrations during any transformers/TRL run.

TRL calls a reward function as ``f(prompts=..., completions=..., **columns)`` where ``columns`` are
the other dataset columns, one value per completion. :class:`RCfDReward` reads the human
demonstration from such a column, scores it with the same base rewards, and returns
−(R(x, y) − R(x, y_demo))² per completion (K rewards: each calibrated term whitened over the batch,
then summed — as in :func:`rcfd.train.objectives.rcfd`). Demonstration rewards are computed once per
(prompt, demonstration) and kept in memory and, with ``cache_file``, on disk across runs.

``objective="rcfd-batch"`` (an extension, docs/design.md) calibrates the batch's mean reward instead:
each completion gets rcfd's unbiased advantage −ḡ_{−x}(R_i − R̄_{−i}) (:func:`rcfd.train.objectives.
rcfd_batch_advantages`; ḡ_{−x}: the mean gap to the demonstrations of the call's other prompts).
Its group mean is zero, so GRPO's group-mean baseline leaves it as it is; use it with
``GRPOConfig(scale_rewards="none")`` so its size, which shrinks as the run reaches its target, is kept.
By default a call's gaps are taken against its own prompts' demonstrations; :meth:`RCfDReward.
fix_demo_mean` (or ``demo_mean=``) compares every prompt with the mean over the whole training set's
demonstrations instead, as rcfd's own trainer does (``objective.demo_mean=all``): a handful of
demonstrations per call adds their own spread to the gap's noise (docs/design.md).

Example::

    from trl import GRPOConfig, GRPOTrainer
    from rcfd.integrations.trl import RCfDReward

    reward = RCfDReward(my_sentiment_score, demo_column="demonstration")
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=ds_with_prompt_and_demonstration, ...)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from ..errors import RcfdError
from ..files import append_jsonl
from ..train.objectives import PAPER, RCfD, RCfDBatch, objective_class, rcfd_in_demo_std
from ..rewards.base import RewardStack, check_finite
from ..rewards.callable import as_reward
from .monitor import CalibrationMonitor

__all__ = ["CalibrationMonitor", "RCfDReward", "as_text"]

# Keyword arguments TRL adds besides dataset columns; they describe the policy's completions and
# must not be handed to the base rewards when those score the demonstrations.
_TRL_KWARGS = ("completion_ids", "trainer_state", "log_extra", "log_metric")


def as_text(item) -> str:
    """A prompt/completion as plain text: TRL passes strings, or message lists for chat data."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return str(item.get("content", ""))
    if isinstance(item, list) and all(isinstance(m, dict) for m in item):
        return str(item[-1].get("content", "")) if item else ""
    raise TypeError(f"expected a string or a list of chat messages, got {type(item).__name__}")


def read_cache_file(path: Path) -> dict[str, list[float]]:
    """{key: demonstration rewards} from a cache file; a line that does not parse (the torn last line of a
    killed writer, an edit) is skipped with one warning, and its pair is scored again."""
    cache, bad = {}, 0
    text = path.read_bytes()
    if text and not text.endswith(b"\n"):  # a torn last line: the next append starts a line of its own
        with open(path, "ab") as f:
            f.write(b"\n")
    for line in text.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key, values = row["key"], [float(v) for v in row["values"]]
        except (ValueError, TypeError, KeyError):
            bad += 1
            continue
        if isinstance(key, str):
            cache[key] = values
    if bad:
        print(f"rcfd: warning: skipped {bad} unreadable line(s) of the cache file '{path}'; those "
              "demonstrations are scored again", file=sys.stderr)
    return cache


class RCfDReward:
    """TRL-compatible reward function returning RCfD-calibrated rewards.

    Args:
        rewards: one base reward or a list of them; each is either a TRL-style callable
            ``f(prompts, completions, **kwargs) -> list[float]`` or an rcfd reward (with ``identity()``).
        demo_column: dataset column holding the human demonstration for each prompt.
        name: the name TRL logs it under (``rewards/<name>/mean``).
        cache_file: optional JSON-lines file keeping demonstration rewards across runs.
        objective: ``"rcfd"`` (the paper's per-completion −(R − R_demo)²) or ``"rcfd-batch"`` (the
            batch's mean reward against the demonstrations'; each call must hold at least 2 prompts
            with the same number ≥ 2 of completions each, as GRPO's generation batches do).
        demo_mean: ``"rcfd-batch"`` only: K floats (one per reward), the demonstrations' mean reward
            that every prompt's is compared with; ``None`` uses each call's own demonstrations.
            :meth:`fix_demo_mean` computes it from a dataset.
        demo_std: ``"rcfd"`` only: K floats, the demonstrations' reward std per reward. Given, each
            calibrated term is measured in it, −Σ_k ((R_k − R_k(x, y_demo)) / σ_k)², instead of being
            whitened over the call, so a completion's reward does not depend on the others in its call
            (what ``rcfd serve`` needs: OpenRLHF posts one completion per request).
    """

    def __init__(self, rewards, demo_column: str = "demonstration", name: str = "rcfd", cache_file=None,
                 objective: str = PAPER, demo_mean=None, demo_std=None):
        rewards = list(rewards) if isinstance(rewards, (list, tuple)) else [rewards]
        if not rewards:
            raise RcfdError("RCfDReward needs at least one base reward")
        self.objective = objective_class(objective)
        if not self.objective.gives_calibrated_reward():
            raise RcfdError(f"RCfDReward: objective {objective!r} gives no per-completion reward; use {PAPER!r} "
                            f"or {RCfDBatch.name!r}")
        self.stack = RewardStack([as_reward(r, "RCfDReward") for r in rewards])
        self.demo_mean = None
        if demo_mean is not None:
            self._set_demo_mean(torch.as_tensor(demo_mean, dtype=torch.float32, device="cpu").reshape(-1))
        self.demo_std = None
        if demo_std is not None:
            self.demo_std = torch.as_tensor(demo_std, dtype=torch.float32, device="cpu").reshape(-1)
            if self.objective is not RCfD or self.demo_std.numel() != len(self.stack.rewards) or \
                    not bool((torch.isfinite(self.demo_std) & (self.demo_std > 0)).all()):
                raise RcfdError(f"RCfDReward: demo_std needs objective={PAPER!r} and {len(self.stack.rewards)} "
                                f"positive finite value(s), one per base reward, got {self.demo_std.tolist()}")
        self.demo_column = demo_column
        self.__name__ = name  # TRL names reward functions by __name__
        self.cache_file = Path(cache_file) if cache_file else None
        self._cache: dict[str, list[float]] = {}
        if self.cache_file and self.cache_file.exists():
            self._cache = read_cache_file(self.cache_file)

    def _key(self, prompt: str, demonstration: str) -> str:
        text = f"{self.stack.identity()}\x00{prompt}\x00{demonstration}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def demo_rewards(self, prompts: list[str], demonstrations: list[str], /, **columns) -> torch.Tensor:
        """[B, K] base rewards of the demonstrations, computed only for pairs not seen before. ``columns``
        are the dataset's other columns (any names, e.g. ``demonstrations``: hence positional-only)."""
        todo = self.uncached(prompts, demonstrations)
        if todo:
            sub = {k: [v[i] for i in todo] for k, v in columns.items() if isinstance(v, list) and len(v) == len(prompts)}
            values = self.stack([prompts[i] for i in todo], [demonstrations[i] for i in todo], **sub)
            self.remember([prompts[i] for i in todo], [demonstrations[i] for i in todo], values)
        keys = [self._key(p, d) for p, d in zip(prompts, demonstrations)]
        return torch.tensor([self._cache[k] for k in keys], dtype=torch.float32, device="cpu")

    def uncached(self, prompts: list[str], demonstrations: list[str]) -> list[int]:
        """Rows whose (prompt, demonstration) has no reward yet, the first of each distinct pair."""
        first_row = {}
        for i, (p, d) in enumerate(zip(prompts, demonstrations)):
            if (k := self._key(p, d)) not in self._cache:
                first_row.setdefault(k, i)
        return list(first_row.values())

    def remember(self, prompts: list[str], demonstrations: list[str], values: torch.Tensor) -> None:
        """Keep [B, K] demonstration rewards scored elsewhere (``rcfd serve`` batches them with completions)."""
        check_finite(values, "a demonstration reward")
        for p, d, row in zip(prompts, demonstrations, values.tolist()):
            key = self._key(p, d)
            if key not in self._cache:
                self._cache[key] = row
                if self.cache_file:
                    append_jsonl(self.cache_file, {"key": key, "values": row})

    def _set_demo_mean(self, mean: torch.Tensor) -> None:
        if self.objective is not RCfDBatch:
            raise RcfdError("RCfDReward: demo_mean applies to objective='rcfd-batch' only (the paper's 'rcfd' "
                            "calibrates each completion to its own demonstration)")
        if mean.numel() != len(self.stack.rewards) or not torch.isfinite(mean).all():
            raise RcfdError(f"RCfDReward: demo_mean needs {len(self.stack.rewards)} finite value(s), one per base "
                            f"reward, got {mean.tolist()}")
        self.demo_mean = mean

    def fix_demo_mean(self, dataset, prompt_column: str = "prompt", chunk: int = 64) -> list[float]:
        """Score every demonstration of ``dataset`` (a ``datasets.Dataset`` or a dict of columns, e.g.
        the training set) and compare each call's prompts with their mean from now on; returns it."""
        names = list(dataset.column_names) if hasattr(dataset, "column_names") else list(dataset)
        if prompt_column not in names or self.demo_column not in names:
            raise RcfdError(f"RCfDReward.fix_demo_mean: the dataset needs columns '{prompt_column}' and "
                            f"'{self.demo_column}', got {', '.join(names) or 'none'}")
        columns = {k: list(dataset[k]) for k in names if k not in (prompt_column, self.demo_column)}
        prompts = [as_text(x) for x in dataset[prompt_column]]
        demos = [as_text(x) for x in dataset[self.demo_column]]
        chunks = [self.demo_rewards(prompts[i:i + chunk], demos[i:i + chunk],
                                    **{k: v[i:i + chunk] for k, v in columns.items()})
                  for i in range(0, len(prompts), chunk)]
        if not chunks:
            raise RcfdError("RCfDReward.fix_demo_mean: the dataset is empty")
        self._set_demo_mean(torch.cat(chunks).mean(0))
        return self.demo_mean.tolist()

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        if self.demo_column not in kwargs:
            shown = ", ".join(sorted(k for k in kwargs if k not in _TRL_KWARGS)) or "none"
            raise RcfdError(f"RCfDReward: the dataset has no column '{self.demo_column}' (columns passed: {shown}); "
                            f"add the human demonstrations as that column or pass demo_column=")
        columns = {k: v for k, v in kwargs.items() if k not in _TRL_KWARGS and k != self.demo_column}
        p = [as_text(x) for x in prompts]
        c = [as_text(x) for x in completions]
        d = [as_text(x) for x in kwargs[self.demo_column]]
        policy = self.stack(p, c, **columns)
        check_finite(policy, "the reward")
        if self.demo_mean is not None:  # rcfd-batch: every prompt against the training set's demonstrations
            return self.objective.calibrated_reward(p, policy, self.demo_mean.expand_as(policy)).tolist()
        return self.calibrate(p, policy, self.demo_rewards(p, d, **columns)).tolist()

    def calibrate(self, prompts: list[str], rewards: torch.Tensor, demo_rewards: torch.Tensor) -> torch.Tensor:
        """[B] calibrated rewards from R [B, K] and R(x, y_demo) [B, K] (in demo std when ``demo_std`` is set)."""
        if self.demo_std is not None:
            return rcfd_in_demo_std(rewards, demo_rewards, self.demo_std)
        return self.objective.calibrated_reward(prompts, rewards, demo_rewards)
