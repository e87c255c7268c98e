"""Command line: ``rcfd train | eval | demo``. Errors print as one line unless ``--debug``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .errors import RcfdError

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "wiki.yaml"

EXAMPLES = """examples:
  rcfd demo --out runs/demo                       # use case 1: beta0 vs kl vs rcfd, evaluated with base
  rcfd train --config configs/tiny.yaml --out runs/t --set objective.name=kl --set objective.beta=0.05
  rcfd train --resume runs/t                      # continue from the newest complete checkpoint
  rcfd eval runs/t                                # held-out metrics of a finished run
"""


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rcfd",
        description="RL fine-tuning of language models with Reward Calibration from Demonstration (RCfD).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train one run from a YAML config",
                       description="Train one policy. A run directory gets config.yaml, metrics.jsonl, "
                                   "samples.jsonl, checkpoints/, final/ and summary.json.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", type=Path, help=f"YAML config (default: the packaged {DEFAULT_CONFIG.name})")
    t.add_argument("--out", type=Path, help="run directory to create")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its newest complete checkpoint")
    t.add_argument("--steps", type=int, help="override train.steps")
    t.add_argument("--seed", type=int, help="override train.seed")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set objective.name=kl (repeatable)")
    t.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")
    _common(t)

    e = sub.add_parser("eval", help="evaluate a finished run (or its base model) on held-out prompts")
    e.add_argument("run", type=Path, help="run directory written by `rcfd train`")
    e.add_argument("--base", action="store_true", help="evaluate the reference (base) model instead")
    e.add_argument("--out", type=Path, help="where to write the metrics JSON (default: RUN/eval.json)")
    _common(e)

    d = sub.add_parser("demo", help="embedded default: beta0 vs kl vs rcfd on use case 1, offline",
                       description="Train three runs (beta0, kl, rcfd) with the same budget and seed on the "
                                   "packaged SmolLM2-135M and Wikipedia extracts, evaluate them with the base "
                                   "model on held-out prompts, and write DIR/summary.json.")
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default: runs/demo)")
    d.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    d.add_argument("--steps", type=int, help="RL steps per run (default: from the task's config)")
    d.add_argument("--config", type=Path, help="base config of the task (default: the packaged wiki.yaml)")
    d.add_argument("--runs", default="beta0,kl,rcfd", help="comma-separated subset of beta0,kl,rcfd (default: all)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field for every run (repeatable)")
    _common(d)
    return parser


def _overrides(args) -> list[str]:
    extra = list(args.overrides)
    if getattr(args, "steps", None) is not None:
        extra.append(f"train.steps={args.steps}")
    if getattr(args, "seed", None) is not None:
        extra.append(f"train.seed={args.seed}")
    return extra


def cmd_train(args) -> int:
    import yaml

    from .config import load_config, make_config
    from .trainer import run_training

    if args.resume is not None:
        run = args.resume
        saved = run / "config.yaml"
        if not saved.exists():
            raise RcfdError(f"'{run}' has no config.yaml; --resume needs a run directory written by `rcfd train`")
        config = make_config(yaml.safe_load(saved.read_text()), _overrides(args))
        out, resume = run, True
    else:
        if args.out is None:
            raise RcfdError("missing --out; give the run directory to create, e.g. --out runs/my-run")
        config = load_config(args.config or DEFAULT_CONFIG, _overrides(args))
        out, resume = args.out, False
    _, summary = run_training(config, out, resume=resume, progress=not args.quiet, evaluate_after=not args.no_eval)
    from .report import print_table

    if not summary:  # a non-main process under `accelerate launch`: the main one reports
        return 0
    if not args.no_eval:
        print_table({out.name or "run": summary})
    print(f"run written to {out}")
    return 0


def cmd_eval(args) -> int:
    import yaml

    from .config import make_config
    from .files import write_json
    from .trainer import Trainer

    saved = args.run / "config.yaml"
    if not saved.exists():
        raise RcfdError(f"'{args.run}' has no config.yaml; pass a run directory written by `rcfd train`")
    config = make_config(yaml.safe_load(saved.read_text()))
    trainer = Trainer(config, args.run, resume=True, progress=not args.quiet)
    result = trainer.evaluate(base=args.base)
    out = args.out or args.run / ("eval-base.json" if args.base else "eval.json")
    write_json(out, result)
    from .report import print_table

    print_table({"base" if args.base else args.run.name: result})
    print(f"metrics written to {out}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, config_path=args.config or DEFAULT_CONFIG, seed=args.seed, steps=args.steps,
             overrides=args.overrides, progress=not args.quiet,
             runs=tuple(r.strip() for r in args.runs.split(",") if r.strip()))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    handlers = {"train": cmd_train, "eval": cmd_eval, "demo": cmd_demo}
    try:
        return handlers[args.command](args)
    except RcfdError as exc:
        if args.debug:
            raise
        print(f"rcfd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rcfd: interrupted; the run was checkpointed, continue it with `rcfd train --resume DIR`",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for users, the traceback behind --debug
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"rcfd: error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
