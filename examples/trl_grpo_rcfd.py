"""RCfD in your own TRL script: GRPOTrainer with rcfd's reward, watched by CalibrationMonitor (use case 1).

    python examples/trl_grpo_rcfd.py --model tiny-llama --steps 2              # seconds, a smoke run
    python examples/trl_grpo_rcfd.py --steps 64 --reward plain --monitor-every 16   # the raw reward, watched

To train an rcfd preset through TRL into an rcfd run directory (read by `rcfd eval`, `rcfd report`,
`rcfd demo`), use the engine instead: `rcfd train --task wiki-continuation --engine trl --out RUN`
(docs/how-to/trl-engine.md). This script is what a TRL user adds to a script of their own: the
dataset needs a `prompt` and a `demonstration` column; R is the average log-likelihood under a frozen
copy of the base model.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="packaged name, local path or hub id")
    parser.add_argument("--steps", type=int, default=2, help="GRPO optimizer steps (default 2)")
    parser.add_argument("--out", default="runs/trl-rcfd", help="TRL output directory")
    parser.add_argument("--reward", choices=("rcfd", "rcfd-batch", "plain"), default="rcfd-batch",
                        help="rcfd-batch (the batch's mean reward calibrated, default), rcfd (the paper's "
                             "per-sample form) or the raw log-likelihood R")
    parser.add_argument("--monitor-every", type=int, default=0, metavar="N",
                        help="log calibration on 32 held-out prompts every N steps (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rcfd.config import DataConfig
    from rcfd.data import build_datasets
    from rcfd.integrations.trl import CalibrationMonitor, RCfDReward
    from rcfd.models import load_tokenizer, resolve_model_path
    from rcfd.rewards import LogLikelihoodReward

    path = resolve_model_path(args.model)
    tokenizer = load_tokenizer(path)
    train, held_out = build_datasets(DataConfig(prompt_tokens=16, demo_tokens=24, num_train=128, num_eval=32),
                                     tokenizer)
    scorer = AutoModelForCausalLM.from_pretrained(path).eval().requires_grad_(False)  # frozen π_0
    loglik = LogLikelihoodReward(scorer, scorer, tokenizer, model_id=args.model)
    if args.reward == "plain":
        def reward(prompts, completions, **kwargs):
            return loglik(prompts, completions).tolist()
    else:
        reward = RCfDReward(loglik, demo_column="demonstration", objective=args.reward)
        if args.reward == "rcfd-batch":
            reward.fix_demo_mean(train)  # every prompt against all training demonstrations' mean
    config = GRPOConfig(output_dir=args.out, use_cpu=True, max_steps=args.steps, per_device_train_batch_size=8,
                        steps_per_generation=4, num_generations=4, max_completion_length=24, learning_rate=2e-3,
                        beta=0.0, logging_steps=1, report_to="none", save_strategy="no", seed=args.seed,
                        # rcfd-batch's values are advantages whose size shrinks near the target: keep it
                        scale_rewards="none" if args.reward == "rcfd-batch" else "group")
    from peft import LoraConfig

    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=[reward], args=config,
                          train_dataset=train, processing_class=tokenizer,
                          peft_config=LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
    if args.monitor_every:
        trainer.add_callback(CalibrationMonitor(trainer, held_out["prompt"], held_out["demonstration"], [loglik],
                                                every=args.monitor_every, reference=scorer, samples_per_prompt=2))
    trainer.train()
    for record in trainer.state.log_history:
        if "calibration/reward_z" in record:
            print(f"step {record['step']}: reward {record['calibration/reward_z']:+.2f} demo std, alignment "
                  f"{record['calibration/alignment']:.3f}, distinct-2 {record['calibration/distinct_2_rel']:+.1%}, "
                  f"KL {record['calibration/kl_to_ref']:.2f}")


if __name__ == "__main__":
    main()
