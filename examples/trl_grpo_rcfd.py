"""Use case 1 inside TRL: GRPOTrainer optimizing the RCfD reward instead of the raw log-likelihood.

    python examples/trl_grpo_rcfd.py --model tiny-llama --steps 2      # seconds, a smoke run
    python examples/trl_grpo_rcfd.py --model smollm2-135m --steps 20   # the packaged SmolLM2-135M
    python examples/trl_grpo_rcfd.py --reward plain --monitor-every 5  # the raw reward, watched
    python examples/trl_grpo_rcfd.py --reward rcfd-batch --prompts-per-step 8 --minibatches 4 --steps 96
                                       # rcfd's wiki preset in TRL: 24 generations of 8 prompts x 4

The policy is trained by TRL (its generation, loss, distribution); rcfd only supplies the reward:
−(R(x, y) − R(x, y_demo))² with R the average log-likelihood under a frozen copy of the base model
and y_demo the Wikipedia continuation in the dataset's `demonstration` column (``--reward plain``: R
itself; ``--reward rcfd-batch``: the batch's mean reward calibrated, RCfDReward(objective="rcfd-batch")
with GRPO's ``scale_rewards="none"``, against all training demonstrations' mean unless ``--demo-mean
batch``). ``--monitor-every N`` adds rcfd's CalibrationMonitor: every N steps it samples the held-out
prompts and logs ``calibration/...`` (reward against the demonstrations in demo std, alignment,
distinct-2, naturalness, KL) with TRL's own metrics, and warns once if the run over-optimizes.
``--evaluate`` trains on the wiki preset's own split (its 320 training prompts; the 256 held-out ones
are never trained on) and ends with ``rcfd eval``'s evaluation of the trained policy on those 256
held-out prompts, written to OUT/rcfd-eval.json, so that a TRL run and an ``rcfd train`` run of
configs/wiki.yaml are scored on the same prompts by the same code (the peer row of docs/results.md).
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="packaged name, local path or hub id")
    parser.add_argument("--steps", type=int, default=2, help="GRPO optimizer steps (default 2)")
    parser.add_argument("--out", default="runs/trl-rcfd", help="TRL output directory")
    parser.add_argument("--reward", choices=("rcfd", "rcfd-batch", "plain"), default="rcfd",
                        help="RCfD reward (default) or the raw log-likelihood R")
    parser.add_argument("--monitor-every", type=int, default=0, metavar="N",
                        help="log calibration on held-out prompts every N steps (0: off)")
    parser.add_argument("--monitor-prompts", type=int, default=64, help="held-out prompts the monitor samples")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (r 32 on q/v) instead of all weights")
    parser.add_argument("--prompts-per-step", type=int, default=2, help="prompts per generation (default 2)")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt (default 4)")
    parser.add_argument("--minibatches", type=int, default=1,
                        help="optimizer steps per generation (TRL's steps_per_generation; default 1)")
    parser.add_argument("--demo-mean", choices=("all", "batch"), default="all",
                        help="--reward rcfd-batch: compare with the mean reward of all training demonstrations "
                             "(default, RCfDReward.fix_demo_mean) or of each call's own")
    parser.add_argument("--evaluate", action="store_true",
                        help="train on the wiki preset's split and evaluate the result as `rcfd eval` does "
                             "(256 held-out prompts x 2 samples; OUT/rcfd-eval.json)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.evaluate and not args.lora:
        parser.error("--evaluate compares with the wiki preset, which trains a LoRA adapter: add --lora")

    import torch
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rcfd.config import DataConfig, load_config
    from rcfd.data import build_datasets
    from rcfd.integrations.trl import RCfDReward
    from rcfd.models import load_tokenizer, resolve_model_path
    from rcfd.rewards import LogLikelihoodReward
    from rcfd.tasks import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    preset = load_config(get_task("wiki-continuation").config_path,
                         [f"model.name={args.model}", f"train.seed={args.seed}"])
    path = resolve_model_path(args.model)
    tokenizer = load_tokenizer(path)
    rollouts = args.prompts_per_step * args.generations
    if rollouts % args.minibatches:
        parser.error(f"--minibatches {args.minibatches} must divide the {rollouts} completions of a generation")
    generation_rounds = -(-args.steps // args.minibatches)
    if args.evaluate:
        data = preset.data
    else:
        data = DataConfig(prompt_tokens=16, demo_tokens=24,
                          num_train=max(64, args.prompts_per_step * generation_rounds),
                          num_eval=max(16, args.monitor_prompts))
    train, held_out = build_datasets(data, tokenizer)
    scorer = AutoModelForCausalLM.from_pretrained(path).eval().requires_grad_(False)  # frozen π_0
    loglik = LogLikelihoodReward(scorer, scorer, tokenizer, model_id=args.model)
    if args.reward == "plain":
        reward = _plain(loglik)
    else:
        reward = RCfDReward(loglik, demo_column="demonstration", objective=args.reward)
        if args.reward == "rcfd-batch" and args.demo_mean == "all":
            print(f"demonstrations' mean reward over {len(train)} training prompts: {reward.fix_demo_mean(train)[0]:.4f}")
    config = GRPOConfig(output_dir=args.out, use_cpu=True, max_steps=args.steps,
                        per_device_train_batch_size=rollouts // args.minibatches, steps_per_generation=args.minibatches,
                        num_generations=args.generations, max_completion_length=24, learning_rate=args.learning_rate,
                        beta=0.0, logging_steps=1, report_to="none", save_strategy="no", seed=args.seed, bf16=False,
                        # rcfd-batch's advantage shrinks as the run reaches its target: keep its size
                        scale_rewards="none" if args.reward == "rcfd-batch" else "group")
    peft_config = None
    if args.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=[reward], args=config,
                          train_dataset=train, processing_class=tokenizer, peft_config=peft_config)
    if args.monitor_every:
        from rcfd.integrations.trl import CalibrationMonitor

        monitor = CalibrationMonitor(trainer, held_out["prompt"][:args.monitor_prompts],
                                     held_out["demonstration"][:args.monitor_prompts], [loglik],
                                     every=args.monitor_every, reference=scorer, samples_per_prompt=2)
        trainer.add_callback(monitor)
    trainer.train()
    name = reward.__name__
    for record in trainer.state.log_history:
        if f"rewards/{name}/mean" in record:
            print(f"step {record['step']}: {name} reward {record[f'rewards/{name}/mean']:.4f}, "
                  f"completion length {record.get('completions/mean_length', float('nan')):.1f}")
        if "calibration/reward_z" in record:
            print(f"step {record['step']}: calibration: reward {record['calibration/reward_z']:+.2f} demo std, "
                  f"alignment {record['calibration/alignment']:.3f}, distinct-2 {record['calibration/distinct_2_rel']:+.1%}, "
                  f"KL {record['calibration/kl_to_ref']:.2f}")
    if args.evaluate:
        _evaluate(trainer.model, preset, args.out)


def _evaluate(model, preset, out):
    """Copy the trained LoRA weights into the preset's policy and run `rcfd eval`'s evaluation on its
    held-out split (the same prompts, sampling seed and metrics as an `rcfd train` run of the preset)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from rcfd.train.components import build_components
    from rcfd.eval.evaluate import evaluate_components
    from rcfd.files import write_json
    from rcfd.report.tables import print_table

    components = build_components(preset, with_demo_rewards=False)
    loaded = set_peft_model_state_dict(components.policy, get_peft_model_state_dict(model))
    if loaded.unexpected_keys:
        raise SystemExit(f"the trained adapter does not fit the preset's LoRA (e.g. {loaded.unexpected_keys[0]})")
    components.policy.eval()
    result = evaluate_components(components, preset)
    print_table({"trl-grpo": result})
    write_json(os.path.join(out, "rcfd-eval.json"), result)
    print(f"metrics written to {os.path.join(out, 'rcfd-eval.json')}")


def _plain(loglik):
    """R itself, with TRL's reward signature (the run that over-optimizes)."""
    def loglik_reward(prompts, completions, **kwargs):
        return loglik(prompts, completions).tolist()
    return loglik_reward


if __name__ == "__main__":
    main()
