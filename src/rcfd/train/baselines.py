"""Baselines that learn from demonstrations or preferences instead of a reward: SFT and DPO.

The paper compares RCfD with supervised fine-tuning (SFT) on the same demonstrations; where
preference pairs exist (e.g. TL;DR's human comparisons) DPO is the other standard baseline. Both run
TRL's trainers (``SFTTrainer``, ``DPOTrainer``) on the same policy, LoRA settings and seed as an RL
run, then are evaluated with the same held-out metrics. A run directory has the layout of an RL run
(config.yaml, final/, summary.json) plus TRL's log in ``sft_log.jsonl`` / ``dpo_log.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from ..errors import RcfdError
from ..files import strict_json
from .rundir import RunDir


def _trl():
    try:
        import trl
    except ImportError:
        raise RcfdError("the SFT and DPO baselines run TRL's trainers: pip install 'trl>=1.16,<1.17'") from None
    return trl


def _load(config, out_dir, progress):
    """The run directory (its config written first, as for an RL run) and the components an RL run of
    ``config`` loads, in the same order, so the policy, reference, rewards and data are the same."""
    from .components import build_components

    run = RunDir(out_dir).prepare()
    run.write_config(config)
    return run, build_components(config, progress=progress, with_demo_rewards=False)


def _trl_args(config, out_dir, name: str, *, epochs, learning_rate, progress) -> dict:
    """TrainingArguments shared by both baselines: the RL run's minibatch size, schedule, seed and lengths."""
    c = config.train
    return dict(
        output_dir=str(Path(out_dir) / name), num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=c.micro_batch_size,
        gradient_accumulation_steps=max(1, c.batch_size // c.num_minibatches // c.micro_batch_size),
        lr_scheduler_type=c.lr_scheduler, seed=c.seed, use_cpu=True, gradient_checkpointing=False,
        save_strategy="no", report_to=[], logging_steps=1, disable_tqdm=not progress,
        max_length=config.data.prompt_tokens + config.generation.max_new_tokens + 8,
    )


def _finish(run, components, config, trl_trainer, name: str, t0: float, extra: dict, progress: bool) -> dict:
    """Write TRL's log, export the policy, evaluate it like an RL run, write ``summary.json``."""
    from ..eval.evaluate import evaluate_components

    (run.path / f"{name}_log.jsonl").write_text("".join(json.dumps(strict_json(r), allow_nan=False) + "\n"
                                                          for r in trl_trainer.state.log_history))
    components = dataclasses.replace(components, policy=trl_trainer.model)
    run.save_final(components.policy, components.tokenizer)
    summary = {"objective": name, "steps": trl_trainer.state.global_step,
               "train_seconds": time.perf_counter() - t0, **extra,
               **evaluate_components(components, config, progress=progress)}
    summary["wall_seconds"] = time.perf_counter() - t0
    run.write_summary(summary)
    return summary


def run_sft(config, out_dir, *, epochs: float = 1.0, learning_rate: float = 2e-4, progress: bool = True) -> dict:
    """Fine-tune on the demonstrations (loss on demonstration tokens only), evaluate; return the summary."""
    trl = _trl()
    t0 = time.perf_counter()
    run, components = _load(config, out_dir, progress)
    labelled = components.train_ds.filter(lambda row: bool(row["demonstration"].strip()))  # data.demo_fraction
    train = labelled.map(lambda row: {"prompt": row["prompt"], "completion": row["demonstration"]},
                         remove_columns=labelled.column_names)
    args = trl.SFTConfig(**_trl_args(config, out_dir, "sft", epochs=epochs, learning_rate=learning_rate,
                                     progress=progress))
    sft = trl.SFTTrainer(model=components.policy, args=args, train_dataset=train,
                         processing_class=components.tokenizer)
    sft.train()
    return _finish(run, components, config, sft, "sft", t0, {"sft_learning_rate": learning_rate, "sft_epochs": epochs},
                   progress)


def run_dpo(config, out_dir, *, epochs: float = 1.0, learning_rate: float = 5e-5, beta: float = 0.1,
            progress: bool = True) -> dict:
    """DPO on the preference pairs of ``data.preference_source``, evaluate; return the summary.

    The DPO reference is the initial policy: with LoRA, TRL keeps a frozen copy of the (zero-initialized)
    adapter; with full fine-tuning, the RL run's reference model.
    """
    from ..data import load_preference_pairs

    trl = _trl()
    pairs = load_preference_pairs(config.data)  # before loading models: a bad source fails fast
    t0 = time.perf_counter()
    run, components = _load(config, out_dir, progress)
    args = trl.DPOConfig(**_trl_args(config, out_dir, "dpo", epochs=epochs, learning_rate=learning_rate,
                                     progress=progress),
                         beta=beta)
    dpo = trl.DPOTrainer(model=components.policy, ref_model=components.reference, args=args, train_dataset=pairs,
                         processing_class=components.tokenizer)
    dpo.train()
    if "ref" in getattr(dpo.model, "peft_config", {}):  # TRL's frozen copy of the adapter: not part of the result
        dpo.model.delete_adapter("ref")
    return _finish(run, components, config, dpo, "dpo", t0,
                   {"dpo_learning_rate": learning_rate, "dpo_epochs": epochs, "dpo_beta": beta,
                    "preference_pairs": len(pairs)}, progress)
