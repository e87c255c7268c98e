"""How well a trained run does at RCfD's own objective on held-out prompts, against the base model
(it measured that RCfD on positive-reviews ends no better than the base model at its own objective).

Samples K completions for each of P held-out prompts from the run's final policy and from the base
model (its LoRA adapter switched off), scores them with every reward of the run, and prints per
reward: the mean, the within-prompt std, and the expected squared error to each prompt's
demonstration reward, E[(R − R_demo)²] = (E[R|x] − R_demo)² + Var(R|x) averaged over prompts.
Run: HF_HUB_OFFLINE=1 .venv/bin/python experiments/calibration_error.py RUN_DIR [--prompts 48] [--per-prompt 8]
"""

import argparse
import contextlib
from pathlib import Path

import torch

from rcfd.train.components import load_trained
from rcfd.train.logprobs import reference_logprobs
from rcfd.rewards.demo_cache import demo_rewards
from rcfd.train.rollout import generate
from rcfd.train.rundir import RunDir


def sample_rewards(run, prompts, batch_size: int) -> torch.Tensor:
    c, parts = run.components, []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        rollout, texts, _ = generate(c.policy, c.tokenizer, batch, run.config.generation)
        ref = reference_logprobs(c.policy, c.reference, rollout, run.config.train.micro_batch_size)
        parts.append(c.rewards(batch, texts, rollout=rollout, ref_logprobs=ref))
    return torch.cat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory written by `rcfd train` (LoRA)")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not RunDir(args.run).read_config().model.lora:
        parser.error("the base model is the run's policy with its LoRA adapter off: pass a LoRA run")
    run = load_trained(args.run, progress=False)  # reads the run, writes nothing into it
    config, c = run.config, run.components
    dataset = c.eval_ds.select(range(min(args.prompts, len(c.eval_ds))))
    n, k = len(dataset), args.per_prompt
    demo = demo_rewards(c.rewards, dataset, c.tokenizer, config.generation.max_new_tokens, progress=False)  # [P, R]
    prompts = [p for p in dataset["prompt"] for _ in range(k)]
    for label, switch in (("policy", contextlib.nullcontext), ("base", c.policy.disable_adapter)):
        torch.manual_seed(args.seed)
        with switch(), torch.no_grad():
            values = sample_rewards(run, prompts, config.eval.batch_size).view(n, k, -1)
        for r, name in enumerate(c.rewards.names):
            v, d = values[..., r], demo[:, r]
            print(f"{label:6s} {name}: mean {v.mean():.3f} (demonstrations {d.mean():.3f}), within-prompt std "
                  f"{v.std(1).mean():.3f}, E[(R - R_demo)^2] {((v - d[:, None]) ** 2).mean():.3f}")


if __name__ == "__main__":
    main()
