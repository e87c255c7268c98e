"""Run under `accelerate launch --num_processes 2`: one RL step of the tiny model with k = 2 completions per
prompt; each process writes the prompts of its rollouts so the test can check how groups were dealt out."""

import json
import sys

from accelerate.utils import gather_object

from rcfd.config import load_config
from rcfd.trainer import Trainer

config_path, out = sys.argv[1], sys.argv[2]
config = load_config(config_path, ["train.steps=1", "train.num_generations=2", "train.num_minibatches=2",
                                   "train.advantage=rloo", "objective.name=rcfd-mean"])
trainer = Trainer(config, out, progress=False)
record, prompts, texts, rewards = trainer.step()
per_process = gather_object([prompts])
if trainer.procs.is_main:
    (trainer.out / "groups.json").write_text(json.dumps({"world": trainer.procs.world, "prompts": per_process,
                                                         "record": record}))
