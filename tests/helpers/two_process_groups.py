"""Run under `accelerate launch --num_processes 2`: one RL step of the tiny model with k = 2 completions per
prompt; each process writes the prompts of its rollouts so the test can check how groups were dealt out."""

import json
import sys

from accelerate.utils import gather_object

import torch

from rcfd.config import load_config
from rcfd.train.objectives import prompt_gaps, rcfd_batch_advantages
from rcfd.train.schedule import step_rows
from rcfd.train.trainer import Trainer
from rcfd_testing import leave

config_path, out = sys.argv[1], sys.argv[2]
config = load_config(config_path, ["train.steps=1", "train.num_generations=2", "train.num_minibatches=2",
                                   "train.advantage=rloo", "objective.name=rcfd-mean"])
trainer = Trainer(config, out, progress=False)
record, batch = trainer.step()
prompts, rewards = batch.prompts, batch.rewards
per_process = gather_object([prompts])

# rcfd-batch on these rollouts: each process's advantages from the batch-wide gap totals must equal the
# advantages one process computes on the whole batch.
t = config.train
idx = step_rows(0, len(trainer.train_ds), t.batch_size, t.num_generations, t.seed, trainer.procs.rank,
                trainer.procs.world)
demo = trainer.demo_train[idx]
gaps = prompt_gaps(rewards, demo, t.num_generations)
totals = trainer.procs.sum(torch.cat([gaps.sum(0), torch.tensor([float(len(gaps))], device="cpu")]))
local = rcfd_batch_advantages(rewards, demo, t.num_generations, totals[:-1], int(totals[-1]))
all_rewards, all_demo, all_local = trainer.procs.gather(rewards), trainer.procs.gather(demo), trainer.procs.gather(local)
if trainer.procs.is_main:
    whole = rcfd_batch_advantages(all_rewards, all_demo, t.num_generations)
    (trainer.out / "groups.json").write_text(json.dumps({
        "world": trainer.procs.world, "prompts": per_process, "record": record,
        "batch_advantage_gap": float((whole - all_local).abs().max())}))

leave(trainer.procs)
