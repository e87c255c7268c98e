"""How much of the log-likelihood reward's variance comes from the prompt (between-prompt variance is what a per-prompt baseline removes).

Samples K completions per prompt from the base model of the demo config and splits the variance of
the reward (average log-likelihood under the reference) into between-prompt and within-prompt parts.
Run: HF_HUB_OFFLINE=1 .venv/bin/python experiments/reward_variance.py [--prompts 16] [--per-prompt 4]
"""

import argparse

import torch

from rcfd.config import load_config
from rcfd.tasks import get_task
from rcfd.data import build_datasets
from rcfd.train.logprobs import reference_logprobs
from rcfd.models import load_policy
from rcfd.train.rollout import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", default="wiki-continuation", help="task preset (see `rcfd tasks`)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    cfg = load_config(get_task(args.task).config_path)
    policy, tokenizer, reference = load_policy(cfg.model)
    train, _ = build_datasets(cfg.data, tokenizer)
    prompts = [train[i]["prompt"] for i in range(args.prompts) for _ in range(args.per_prompt)]
    rewards = []
    for start in range(0, len(prompts), cfg.train.batch_size):
        rollout, _, _ = generate(policy, tokenizer, prompts[start:start + cfg.train.batch_size], cfg.generation)
        logp = reference_logprobs(policy, reference, rollout, cfg.train.micro_batch_size)
        rewards.append(logp.sum(-1) / rollout.completion_mask.sum(-1))
    r = torch.cat(rewards).view(args.prompts, args.per_prompt)
    total, within, between = r.var(unbiased=False), r.var(1, unbiased=False).mean(), r.mean(1).var(unbiased=False)
    print(f"reward variance {total:.3f}: between prompts {between:.3f} ({between / total:.0%}), "
          f"within a prompt {within:.3f}")


if __name__ == "__main__":
    main()
