"""Run under `accelerate launch --num_processes 2`: train the tiny model, then record each process's
parameter checksum so the test can check that gradients were averaged (weights stay identical)."""

import json
import sys

from rcfd.config import load_config
from rcfd.train.trainer import run_training
from rcfd_testing import leave

config_path, out = sys.argv[1], sys.argv[2]
config = load_config(config_path, ["train.steps=2", "train.save_every=1", "objective.name=rcfd"])
trainer, summary = run_training(config, out, progress=False, evaluate_after=False)
checksum = float(sum(p.detach().double().sum() for p in trainer.policy.parameters() if p.requires_grad))
from accelerate.utils import gather_object  # noqa: E402

sums = gather_object([checksum])
if trainer.procs.is_main:
    (trainer.out / "checksums.json").write_text(json.dumps({"checksums": sums, "world": trainer.procs.world}))

leave(trainer.procs)
