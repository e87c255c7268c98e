"""Seconds per RL step of one preset under both engines, side by side in one process: rcfd's own loop
and `--engine trl` (TRL's GRPOTrainer), the same config, steps and threads. Each engine trains
``--steps`` steps into a temporary run directory (no evaluation); the median of timings.jsonl's
``step_s`` after the first step is its figure. Writes bench/results/engine-TASK.{json,md}.

    .venv/bin/python bench/engine_bench.py                         # wiki-continuation, 4 steps, 1 thread
    .venv/bin/python bench/engine_bench.py --task positive-reviews --steps 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import statistics
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provenance  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).resolve().parent / "results"


def seconds_per_step(task: str, engine: str, steps: int, threads: int, work: Path, overrides=()) -> dict:
    from rcfd import load_config, run_training
    from rcfd.tasks import get_task

    config = load_config(get_task(task).config_path, [f"train.engine={engine}", f"train.steps={steps}",
                                                      f"train.threads={threads}", "train.save_every=0",
                                                      *overrides])
    run_training(config, work / engine, progress=False, evaluate_after=False)
    rows = [json.loads(line) for line in (work / engine / "timings.jsonl").read_text().splitlines() if line.strip()]
    measured = [r["step_s"] for r in rows[1:]] or [r["step_s"] for r in rows]  # the first step warms up
    return {"median_step_s": statistics.median(measured), "steps": [round(r["step_s"], 2) for r in rows]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="wiki-continuation")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field for both engines (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write engine-TASK.{json,md}")
    args = parser.parse_args(argv)
    import torch
    import trl

    with tempfile.TemporaryDirectory() as tmp:
        found = {engine: seconds_per_step(args.task, engine, args.steps, args.threads, Path(tmp), args.overrides)
                 for engine in ("rcfd", "trl")}
    ratio = found["trl"]["median_step_s"] / found["rcfd"]["median_step_s"]
    command, commit = provenance.command("python bench/engine_bench.py", argv), provenance.commit()
    result = {"command": command, "commit": commit, "task": args.task, "steps": args.steps, "threads": args.threads, "cpu": provenance.cpu_name(),
              "torch": torch.__version__, "trl": trl.__version__, "engines": found, "trl_over_rcfd": ratio}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"engine-{args.task}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Engines on {args.task}: seconds per RL step", "",
          f"{result['cpu']}, {args.threads} thread(s), torch {result['torch']}, TRL {result['trl']}, "
          f"{args.steps} steps each, one after the other in one process (median after the first step).", "",
          f"Command: `{command}` at commit {commit}.", "",
          "| engine | median s/step | every step |", "|---|---|---|"]
    md += [f"| {engine} | {found[engine]['median_step_s']:.2f} | {found[engine]['steps']} |" for engine in found]
    md += ["", f"`--engine trl` / rcfd's own loop: **{ratio:.2f}×**", ""]
    (args.out / f"engine-{args.task}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
