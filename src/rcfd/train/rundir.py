"""The run directory: the one place that knows its layout.

    RUN/config.yaml        the resolved config, written before anything slow (so --resume always works)
    RUN/metrics.jsonl      one record per RL step (and the eval_every records)
    RUN/samples.jsonl      a few completions per step
    RUN/timings.jsonl      seconds per step (generation, whole step)
    RUN/checkpoints/       step-NNNNNN/ atomic checkpoints (weights, optimizer, RNG, logs so far)
    RUN/demo_rewards.pt    the run's copy of the training demonstrations' rewards
    RUN/final/             the trained policy (LoRA adapter or full model, ``save_pretrained``)
    RUN/summary.json       held-out metrics and the run's cost, written last

Every trainer writes this layout (RL runs, the SFT/DPO baselines), and every reader (``rcfd eval``,
reports, sweeps, the demo) goes through :class:`RunDir`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import RcfdError
from ..files import read_json, read_jsonl, write_json, write_text

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
TIMINGS = "timings.jsonl"
CHECKPOINTS = "checkpoints"
DEMO_REWARDS = "demo_rewards.pt"
# What --resume may change: how long, where and how often to save; not what is trained (a resumed run
# with another objective or learning rate would be a different run under the old one's name).
RESUMABLE = ("train.steps", "train.threads", "train.save_every", "train.keep_checkpoints", "model.device",
             "model.dtype")
FINAL = "final"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    # ---------------------------------------------------------------- paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def samples_path(self) -> Path:
        return self.path / SAMPLES

    @property
    def timings_path(self) -> Path:
        return self.path / TIMINGS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def demo_rewards_path(self) -> Path:
        return self.path / DEMO_REWARDS

    @property
    def final(self) -> Path:
        return self.path / FINAL

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    # ---------------------------------------------------------------- state
    def prepare(self, resume: bool = False) -> "RunDir":
        """Create (or, on resume, reuse) the directory, failing early if it cannot be written or, unless
        ``resume``, already holds a run."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"  # one per process under accelerate launch
            probe.write_bytes(b"0" * 1024)
            probe.unlink()
        except OSError as exc:
            raise RcfdError(f"cannot write to output directory '{self.path}' ({exc.strerror}); "
                            f"choose another --out") from None
        if not resume and self.has_started():
            raise RcfdError(f"'{self.path}' already holds a run; continue it with --resume {self.path} "
                            f"or choose another --out")
        return self

    def lock(self):
        """Hold the run directory for one writer (an exclusive lock on RUN/.lock, released when the
        returned file is closed or the process ends): a second trainer of the same --out is refused."""
        import fcntl

        handle = open(self.path / ".lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise RcfdError(f"another process is writing to '{self.path}'; wait for it to finish or choose "
                            "another --out") from None
        return handle

    def has_config(self) -> bool:
        return self.config_path.exists()

    def has_started(self) -> bool:
        """A training step was logged (a run killed while loading has only its config)."""
        return self.metrics_path.exists()

    def is_finished(self) -> bool:
        return self.summary_path.exists()

    def latest_checkpoint(self) -> Path | None:
        from .checkpoint import latest_checkpoint

        return latest_checkpoint(self.checkpoints)

    # ---------------------------------------------------------------- config
    def read_config_dict(self) -> dict | None:
        import yaml

        return yaml.safe_load(self.config_path.read_text()) if self.has_config() else None

    def read_config(self, overrides=()):
        """The run's resolved config (a :class:`rcfd.config.Config`); a one-line error if there is none."""
        from ..config import make_config

        data = self.read_config_dict()
        if data is None:
            raise RcfdError(f"'{self.path}' has no {CONFIG}; pass a run directory written by `rcfd train`, "
                            f"`rcfd sft` or `rcfd dpo`")
        return make_config(data, list(overrides))

    def resume_config(self, overrides=()):
        """The run's config with ``overrides``, which may touch :data:`RESUMABLE` fields only: one line
        naming the first other field an override changes, before anything is written."""
        config = self.read_config(overrides)
        for field, there, now in differences(self.read_config_dict(), config.to_dict()):
            if field not in RESUMABLE:
                raise RcfdError(f"--resume continues '{self.path}' as it was configured, but the overrides change "
                                f"{field} ({there!r} there, {now!r} now); on resume only {', '.join(RESUMABLE)} "
                                f"may change: train with other settings into a new --out")
        return config

    def write_config(self, config) -> None:
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.config_path, yaml.safe_dump(config.to_dict(), sort_keys=False))

    # ---------------------------------------------------------------- logs and results
    def read_jsonl(self, name: str) -> list[dict]:
        return read_jsonl(self.path / name)

    def read_metrics(self) -> list[dict]:
        return self.read_jsonl(METRICS)

    def step_seconds(self) -> float:
        """Summed seconds of the training steps (every invocation of a resumed run)."""
        return sum(r["step_s"] for r in self.read_jsonl(TIMINGS))

    def read_summary(self) -> dict | None:
        return read_json(self.summary_path) if self.is_finished() else None

    def save_final(self, policy, tokenizer) -> Path:
        """The trained policy (LoRA adapter or full model) and its tokenizer, with ``save_pretrained``."""
        policy.save_pretrained(self.final)
        tokenizer.save_pretrained(self.final)
        return self.final

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary_path, summary)


def differences(saved, current, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted field, saved value, current value) for every leaf where two config dicts differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [d for key in sorted(set(saved) | set(current))
                for d in differences(saved.get(key), current.get(key), f"{prefix}{key}.")]
    return [] if saved == current else [(prefix[:-1], saved, current)]
