"""Use case 1 inside TRL: GRPOTrainer optimizing the RCfD reward instead of the raw log-likelihood.

    python examples/trl_grpo_rcfd.py --model tiny-llama --steps 2      # seconds, a smoke run
    python examples/trl_grpo_rcfd.py --model smollm2-135m --steps 20   # the packaged SmolLM2-135M

The policy is trained by TRL (its generation, loss, distribution); rcfd only supplies the reward:
−(R(x, y) − R(x, y_demo))² with R the average log-likelihood under a frozen copy of the base model
and y_demo the Wikipedia continuation in the dataset's `demonstration` column.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="packaged name, local path or hub id")
    parser.add_argument("--steps", type=int, default=2, help="GRPO steps (default 2)")
    parser.add_argument("--out", default="runs/trl-rcfd", help="TRL output directory")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rcfd.config import DataConfig
    from rcfd.data import build_datasets
    from rcfd.integrations.trl import RCfDReward
    from rcfd.models import load_tokenizer, resolve_model_path
    from rcfd.rewards import LogLikelihoodReward

    path = resolve_model_path(args.model)
    tokenizer = load_tokenizer(path)
    train, _ = build_datasets(DataConfig(prompt_tokens=16, demo_tokens=24, num_train=64, num_eval=16), tokenizer)
    scorer = AutoModelForCausalLM.from_pretrained(path).eval().requires_grad_(False)  # frozen π_0
    reward = RCfDReward(LogLikelihoodReward(scorer, scorer, tokenizer, model_id=args.model),
                        demo_column="demonstration")
    config = GRPOConfig(output_dir=args.out, use_cpu=True, max_steps=args.steps, per_device_train_batch_size=8,
                        num_generations=4, max_completion_length=24, learning_rate=5e-5, beta=0.0,
                        logging_steps=1, report_to="none", save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=[reward], args=config,
                          train_dataset=train, processing_class=tokenizer)
    trainer.train()
    for record in trainer.state.log_history:
        if "rewards/rcfd/mean" in record:
            print(f"step {record['step']}: RCfD reward {record['rewards/rcfd/mean']:.4f}, "
                  f"completion length {record.get('completions/mean_length', float('nan')):.1f}")


if __name__ == "__main__":
    main()
