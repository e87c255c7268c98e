"""How well a trained run does at RCfD's own objective on held-out prompts, against the base model
(docs/results.md, session 11).

Samples K completions for each of P held-out prompts from the run's final policy and from the base
model (its LoRA adapter switched off), scores them with every reward of the run, and prints per
reward: the mean, the within-prompt std, and the expected squared error to each prompt's
demonstration reward, E[(R − R_demo)²] = (E[R|x] − R_demo)² + Var(R|x) averaged over prompts.
Run: HF_HUB_OFFLINE=1 .venv/bin/python scripts/calibration_error.py RUN_DIR [--prompts 48] [--per-prompt 8]
"""

import argparse
import contextlib
from pathlib import Path

import torch
import yaml

from rcfd.config import make_config
from rcfd.logprobs import reference_logprobs
from rcfd.rewards.demo_cache import demo_rewards
from rcfd.rollout import generate
from rcfd.trainer import Trainer


def sample_rewards(trainer, prompts, batch_size: int) -> torch.Tensor:
    c = trainer.config
    parts = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        rollout, texts, _ = generate(trainer.policy, trainer.tokenizer, batch, c.generation)
        ref = reference_logprobs(trainer.policy, trainer.reference, rollout, c.train.micro_batch_size)
        parts.append(trainer.rewards(batch, texts, rollout=rollout, ref_logprobs=ref))
    return torch.cat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory written by `rcfd train` (LoRA)")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = make_config(yaml.safe_load((args.run / "config.yaml").read_text()))
    if not config.model.lora:
        parser.error("the base model is the run's policy with its LoRA adapter off: pass a LoRA run")
    trainer = Trainer(config, args.run, resume=True, progress=False)
    dataset = trainer.eval_ds.select(range(min(args.prompts, len(trainer.eval_ds))))
    n, k = len(dataset), args.per_prompt
    demo = demo_rewards(trainer.rewards, dataset, trainer.tokenizer, config.generation.max_new_tokens,
                        progress=False)  # [P, R]
    prompts = [p for p in dataset["prompt"] for _ in range(k)]
    for label, switch in (("policy", contextlib.nullcontext), ("base", trainer.policy.disable_adapter)):
        torch.manual_seed(args.seed)
        with switch(), torch.no_grad():
            values = sample_rewards(trainer, prompts, config.eval.batch_size).view(n, k, -1)
        for r, name in enumerate(trainer.rewards.names):
            v, d = values[..., r], demo[:, r]
            print(f"{label:6s} {name}: mean {v.mean():.3f} (demonstrations {d.mean():.3f}), within-prompt std "
                  f"{v.std(1).mean():.3f}, E[(R - R_demo)^2] {((v - d[:, None]) ** 2).mean():.3f}")


if __name__ == "__main__":
    main()
