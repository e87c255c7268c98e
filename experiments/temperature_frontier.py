"""Reward and KL of the base model sampled at lower temperatures (the cheapest way to raise the log-likelihood reward, against what RL runs spend).

Sharpening the reference is the cheapest way to raise the log-likelihood reward: at temperature T the
policy π_T ∝ π_0^(1/T) gains reward for little KL(π_T ‖ π_0). This prints, on the demo's held-out
prompts, the reward (average log-likelihood under π_0), its z-score against the demonstrations and the
exact per-token KL summed over each completion, to set against what RL runs spend.
Run: HF_HUB_OFFLINE=1 .venv/bin/python experiments/temperature_frontier.py [--temperatures 1,0.85,0.75]
"""

import argparse
import dataclasses

import torch

from rcfd.eval import metrics
from rcfd.config import load_config
from rcfd.tasks import get_task
from rcfd.data import build_datasets
from rcfd.train.logprobs import encode_pairs, reference_logprobs
from rcfd.models import load_policy
from rcfd.train.rollout import generate


@torch.no_grad()
def exact_kl(model, rollout, temperature: float, micro: int = 32) -> torch.Tensor:
    """Σ_t KL(π_T(·|ctx) ‖ π_0(·|ctx)) over each completion's real tokens."""
    out = []
    for i in range(0, len(rollout), micro):
        r = rollout.select(slice(i, i + micro))
        ids = torch.cat([r.prompt_ids, r.completion_ids], 1)
        mask = torch.cat([r.prompt_mask, r.completion_mask], 1)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
        logits = logits[:, r.prompt_ids.shape[1] - 1:-1]
        log_p0, log_pt = torch.log_softmax(logits, -1), torch.log_softmax(logits / temperature, -1)
        out.append(((log_pt.exp() * (log_pt - log_p0)).sum(-1) * r.completion_mask).sum(-1))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperatures", default="1,0.85,0.75,0.65,0.55")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", default="wiki-continuation", help="task preset (see `rcfd tasks`)")
    args = parser.parse_args()
    cfg = load_config(get_task(args.task).config_path)
    policy, tokenizer, reference = load_policy(cfg.model)
    _, eval_ds = build_datasets(cfg.data, tokenizer)
    prompts = list(eval_ds["prompt"])
    demos = encode_pairs(tokenizer, prompts, list(eval_ds["demonstration"]), cfg.data.demo_tokens)
    demo_logp = reference_logprobs(policy, reference, demos, cfg.train.micro_batch_size)
    demo_reward = demo_logp.sum(-1) / demos.completion_mask.sum(-1)
    print(f"demonstrations: reward {demo_reward.mean():.3f} ± {demo_reward.std():.3f}")
    torch.manual_seed(args.seed)
    with (policy.disable_adapter() if hasattr(policy, "disable_adapter") else torch.no_grad()):
        for t in (float(x) for x in args.temperatures.split(",")):
            gen = dataclasses.replace(cfg.generation, temperature=t, top_p=1.0, stop_at_newline=False)
            rollout, _, logp0 = generate(policy, tokenizer, prompts, gen, want_logprobs=True)
            reward = logp0.sum(-1) / rollout.completion_mask.sum(-1)
            z = (reward.mean() - demo_reward.mean()) / demo_reward.std()
            tokens = [r[m.bool()].tolist() for r, m in zip(rollout.completion_ids, rollout.completion_mask)]
            print(f"T={t}: reward {reward.mean():.3f} ± {reward.std():.3f}, z {z:+.2f}, "
                  f"KL {exact_kl(policy, rollout, t).mean():.2f} nats, distinct-2 {metrics.distinct_n(tokens, 2):.3f}")


if __name__ == "__main__":
    main()
