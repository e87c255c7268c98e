"""Baseline from demonstrations: supervised fine-tuning (SFT) on the prompt/demonstration pairs.

The paper compares RCfD with SFT on the same demonstrations. We run TRL's ``SFTTrainer`` (prompt-
completion format, so the loss covers only the demonstration tokens) on the same policy, LoRA settings
and training pairs as an RL run, then evaluate it with the same held-out metrics. The run directory
has the layout of an RL run (config.yaml, final/, summary.json) plus TRL's log in ``sft_log.jsonl``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .files import write_json


def run_sft(config, out_dir, *, epochs: float = 1.0, learning_rate: float = 2e-4, progress: bool = True) -> dict:
    """Fine-tune on the demonstrations with TRL, evaluate, write ``summary.json``; return the summary."""
    try:
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        from .errors import RcfdError

        raise RcfdError("the SFT baseline runs TRL's SFTTrainer: pip install 'trl>=1.16,<1.17'") from None
    import dataclasses

    from .trainer import Trainer

    t0 = time.perf_counter()
    # An RL trainer object loads the policy, rewards and data exactly as the RL runs do; objective
    # 'reward' skips the demonstration-reward pass that only RCfD needs for training.
    config = dataclasses.replace(config, objective=dataclasses.replace(config.objective, name="reward"))
    trainer = Trainer(config, out_dir, progress=progress)
    train = trainer.train_ds.map(lambda row: {"prompt": row["prompt"], "completion": row["demonstration"]},
                                 remove_columns=trainer.train_ds.column_names)
    c = config.train
    args = SFTConfig(
        output_dir=str(Path(out_dir) / "sft"), num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=c.micro_batch_size,
        gradient_accumulation_steps=max(1, c.batch_size // c.num_minibatches // c.micro_batch_size),
        lr_scheduler_type=c.lr_scheduler, seed=c.seed, use_cpu=True, gradient_checkpointing=False,
        save_strategy="no", report_to=[], logging_steps=1, disable_tqdm=not progress,
        max_length=config.data.prompt_tokens + config.generation.max_new_tokens + 8,
    )
    sft = SFTTrainer(model=trainer.policy, args=args, train_dataset=train, processing_class=trainer.tokenizer)
    sft.train()
    (Path(out_dir) / "sft_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft.state.log_history))
    trainer.policy = sft.model
    trainer.export()
    train_seconds = time.perf_counter() - t0
    summary = {"objective": "sft", "steps": sft.state.global_step, "train_seconds": train_seconds,
               "sft_learning_rate": learning_rate, "sft_epochs": epochs, **trainer.evaluate()}
    summary["wall_seconds"] = time.perf_counter() - t0
    write_json(Path(out_dir) / "summary.json", summary)
    return summary
