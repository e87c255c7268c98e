"""Seconds per RL step: rcfd's trainer against TRL's GRPOTrainer on identical work, in one process.

Both sides: the materialized SmolLM2-135M, the same 4 Wikipedia prompts × 4 completions of at most
32 new tokens per step (16 sequences), sampling at temperature 1, a KL term with β = 0.04 (so a
reference forward runs), one optimizer step per rollout batch, the same reward function. Warm-up
steps are excluded; median and spread are over the measured steps. Run through ``bench/run``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import provenance  # noqa: E402

PROMPTS_PER_STEP, COMPLETIONS_PER_PROMPT, MAX_NEW_TOKENS, BETA, LR = 4, 4, 32, 0.04, 1e-5
LORA_R, LORA_ALPHA = 32, 64


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak(dtype, n=2048, repeats=5, device="cpu") -> float:
    """Best-of-N GFLOP/s of an n×n matmul on ``device`` (the denominator of MFU)."""
    small = torch.randn(256, 256, dtype=dtype, device=device)
    small @ small
    if 2 * 256 ** 3 / _timed(lambda: small @ small) < 10e9:  # no fast kernel: a 2048² product would take minutes
        repeats, n = 3, 256
    if device != "cpu":
        n, repeats = 8192, 10
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def bench_prompts(tokenizer) -> list[str]:
    from rcfd.data import wiki_pairs

    return [r["prompt"] for r in wiki_pairs(tokenizer, 16, 24, 24)[:PROMPTS_PER_STEP]]


def step_flops(model_config, n_seq: int, prompt_len: int, completion_len: float, lora: bool) -> float:
    """Model FLOPs of one step: generation + reference forward + policy forward/backward.

    2·P per token for the transformer body; the LM head (2·d·V) only where logits are used
    (every decoded position, the completion positions in the scoring passes). Backward counts 2×
    forward for full fine-tuning and 1× for LoRA (no weight gradients of frozen matrices).
    """
    d, v, layers = model_config.hidden_size, model_config.vocab_size, model_config.num_hidden_layers
    ff, kv = model_config.intermediate_size, model_config.num_key_value_heads * (d // model_config.num_attention_heads)
    body = layers * (2 * d * d + 2 * d * kv + 3 * d * ff)
    head = d * v
    tokens = n_seq * (prompt_len + completion_len)
    gen = 2 * body * tokens + 2 * head * n_seq * completion_len
    score = 2 * body * tokens + 2 * head * n_seq * completion_len
    return gen + score + score * (2 if lora else 3)


def summarize(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0, "steps": times}


# ---------------------------------------------------------------- rcfd
def run_rcfd(setting: dict, prompts, model_path: str, steps: int, warmup: int, workdir: Path, device: str = "cpu") -> dict:
    import datasets

    from rcfd.config import make_config
    from rcfd.train.trainer import Trainer

    config = make_config({
        "model": {"name": model_path, "lora": setting["lora"], "lora_r": LORA_R, "lora_alpha": LORA_ALPHA,
                  "device": device, "dtype": setting["dtype"]},
        "data": {"source": "wiki-offline", "prompt_tokens": 16, "demo_tokens": 24, "num_train": 16, "num_eval": 4},
        "reward": {"names": ["bench_reward:length_reward"]},
        "objective": {"name": "kl", "beta": BETA},
        "generation": {"max_new_tokens": MAX_NEW_TOKENS},
        "train": {"steps": warmup + steps, "batch_size": 16, "micro_batch_size": 16, "learning_rate": LR,
                  "lr_scheduler": "constant", "save_every": 0, "seed": 0},
    })
    trainer = Trainer(config, workdir / f"rcfd-{setting['name']}", progress=False)
    # The same 4 prompts × 4 completions as TRL's group sampling: 16 rows, all used every step.
    rows = [p for p in prompts for _ in range(COMPLETIONS_PER_PROMPT)]
    trainer.train_ds = datasets.Dataset.from_dict({"prompt": rows, "demonstration": rows, "long_demonstration": rows})
    times, gen_times, lengths, records = [], [], [], []
    for i in range(warmup + steps):
        t = _timed(lambda: records.append(trainer.step()[0]))
        if i >= warmup:
            times.append(t)
            gen_times.append(trainer.last_timing["generation_s"])
            lengths.append(records[-1]["completions/mean_length"])
    out = summarize(times)
    out["generation_s_median"] = statistics.median(gen_times)
    out["mean_completion_tokens"] = statistics.mean(lengths)
    out["generation_tokens_per_s"] = 16 * out["mean_completion_tokens"] / out["generation_s_median"]
    return out


# ---------------------------------------------------------------- TRL
def run_trl(setting: dict, prompts, model_path: str, steps: int, warmup: int, workdir: Path, device: str = "cpu") -> dict:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from bench_reward import length_reward

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.lengths = [], []

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])

    total = warmup + steps
    ds = datasets.Dataset.from_dict({"prompt": prompts * total})
    args = GRPOConfig(
        output_dir=str(workdir / f"trl-{setting['name']}"), use_cpu=device == "cpu",
        bf16=setting["dtype"] == "bfloat16" and device != "cpu", seed=0,
        per_device_train_batch_size=16, num_generations=COMPLETIONS_PER_PROMPT, gradient_accumulation_steps=1,
        max_completion_length=MAX_NEW_TOKENS, temperature=1.0, top_p=1.0, beta=BETA, learning_rate=LR,
        lr_scheduler_type="constant", max_steps=total, logging_steps=1, report_to="none", save_strategy="no",
        gradient_checkpointing=setting.get("gradient_checkpointing", True), disable_tqdm=True,
    )
    peft_config = None
    if setting["lora"]:
        from peft import LoraConfig

        peft_config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=length_reward, args=args, train_dataset=ds,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[timer])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its per-step log dicts would flood the table
    trainer.train()
    out = summarize(timer.times[warmup:])
    measured = timer.lengths[warmup:] or timer.lengths
    out["mean_completion_tokens"] = statistics.mean(measured) if measured else None
    return out


# ---------------------------------------------------------------- main
RCFD_SETTINGS = [
    {"name": "full-fp32", "lora": False, "dtype": "float32"},
    {"name": "lora-fp32", "lora": True, "dtype": "float32"},
]
TRL_SETTINGS = [
    {"name": "full-fp32", "lora": False, "dtype": "float32", "note": "TRL defaults (gradient checkpointing on)"},
    {"name": "full-fp32-no-gc", "lora": False, "dtype": "float32", "gradient_checkpointing": False,
     "note": "gradient checkpointing off"},
    {"name": "lora-fp32", "lora": True, "dtype": "float32", "note": "TRL defaults, LoRA r=32"},
]


def markdown(result: dict) -> str:
    st = result["settings"]
    lines = ["# Seconds per RL step: rcfd's loop and TRL's GRPOTrainer on identical work", "",
             f"Command: `{result.get('command', 'bench/run')}` at commit {result.get('commit', 'not recorded')}; "
             f"{st.get('device', 'cpu')}, {st['cpu']}, {st['cpus']} cores, {st['torch_threads']} torch threads, "
             f"torch {st['torch']}.", "",
             f"Workload per step: {st['model']}, {st['prompts_per_step']} prompts × {st['completions_per_prompt']} "
             f"completions of at most {st['max_new_tokens']} new tokens, β = {st['beta']} (a reference forward), "
             f"one optimizer step; {st['measured_steps']} measured steps after {st['warmup_steps']} warm-up, "
             "every setting one after the other in one process.", "",
             "| trainer | setting | median s/step | min–max | MFU | gen tokens/s |", "|---|---|---|---|---|---|"]
    for side in ("rcfd", "trl"):
        for name, r in result[side].items():
            if "skipped" in r:
                lines.append(f"| {side} | {name} | skipped: {r['skipped']} | | | |")
                continue
            mfu = f"{r['mfu']:.0%}" if r.get("mfu") is not None else ""
            tps = f"{r['generation_tokens_per_s']:.0f}" if r.get("generation_tokens_per_s") else ""
            lines.append(f"| {side} | {name} | {r['median_s']:.2f} | {r['min_s']:.2f}–{r['max_s']:.2f} | {mfu} | {tps} |")
    lines.append("")
    lines.append(f"ratio (TRL/rcfd, full fine-tuning, float32): **{result['ratio']:.2f}**" if result.get("ratio") else "")
    if result.get("best_ratio"):
        lines.append(f"best_ratio (best TRL setting / best rcfd setting): **{result['best_ratio']:.2f}** "
                     f"({result['best_settings']['trl']} vs {result['best_settings']['rcfd']})")
    lines.append(f"matmul peak: {result['matmul_peak_gflops']['float32']:.0f} GFLOP/s float32, "
                 f"{result['matmul_peak_gflops']['bfloat16']:.1f} GFLOP/s bfloat16; peak RSS {result['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="measured steps per setting (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps excluded from timing (default 1)")
    parser.add_argument("--no-trl", action="store_true", help="measure rcfd only (TRL not installed or not wanted)")
    parser.add_argument("--only", nargs="*", help="setting names to run (default: all)")
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"), help="JSON result path")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where both trainers run")
    args = parser.parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA GPU here")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["RCFD_TRUST_CODE"] = "1"  # both trainers score with this folder's own bench_reward module

    from rcfd.models import load_tokenizer, materialize_smollm2

    model_path = str(materialize_smollm2())
    prompts = bench_prompts(load_tokenizer(model_path))
    peaks = {"float32": matmul_peak(torch.float32, device=args.device),
             "bfloat16": matmul_peak(torch.bfloat16, device=args.device)}
    # bfloat16 settings run only where the CPU has fast bfloat16 matmul (AMX/AVX512-BF16).
    bf16_ok = peaks["bfloat16"] >= peaks["float32"]
    bf16_skip = f"bfloat16 matmul runs at {peaks['bfloat16']:.1f} GFLOP/s here vs {peaks['float32']:.0f} float32"
    rcfd_settings = RCFD_SETTINGS + [{"name": "lora-bf16", "lora": True, "dtype": "bfloat16"}]
    trl_settings = TRL_SETTINGS + [{"name": "full-bf16", "lora": False, "dtype": "bfloat16"}]
    wanted = (lambda s: args.only is None or s["name"] in args.only)
    result = {"settings": {"model": "SmolLM2-135M (materialized, float32 weights)", "prompts_per_step": PROMPTS_PER_STEP,
                           "completions_per_prompt": COMPLETIONS_PER_PROMPT, "max_new_tokens": MAX_NEW_TOKENS,
                           "beta": BETA, "learning_rate": LR, "warmup_steps": args.warmup, "measured_steps": args.steps,
                           "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                           "cpu": provenance.cpu_name(), "cpus": os.cpu_count(),
                           "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0)},
              "matmul_peak_gflops": peaks, "rcfd": {}, "trl": {},
              "command": provenance.command("bench/run", argv), "commit": provenance.commit()}
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(model_path)
    sides = [("rcfd", rcfd_settings, run_rcfd)] + ([] if args.no_trl else [("trl", trl_settings, run_trl)])
    with tempfile.TemporaryDirectory() as tmp:
        for side, settings, run in sides:
            for s in filter(wanted, settings):
                if s["dtype"] == "bfloat16" and not bf16_ok:
                    result[side][s["name"]] = {"skipped": bf16_skip}
                    continue
                print(f"{side} {s['name']} ...", flush=True)
                r = run(s, prompts, model_path, args.steps, args.warmup, Path(tmp), args.device)
                # MFU counts the model FLOPs of the work itself (not TRL's checkpointing recomputation).
                flops = step_flops(model_config, 16, 16, r["mean_completion_tokens"] or MAX_NEW_TOKENS, s["lora"])
                r["mfu"] = flops / r["median_s"] / (peaks[s["dtype"]] * 1e9)
                result[side][s["name"]] = r
                print(f"  median {r['median_s']:.2f} s/step, MFU {r['mfu']:.0%}", flush=True)
    timed = lambda side: {k: v["median_s"] for k, v in result[side].items() if "median_s" in v}  # noqa: E731
    ours, theirs = timed("rcfd"), timed("trl")
    result["rcfd_s_per_step"] = ours.get("full-fp32")
    result["trl_s_per_step"] = theirs.get("full-fp32")
    result["ratio"] = (theirs["full-fp32"] / ours["full-fp32"]) if "full-fp32" in ours and "full-fp32" in theirs else None
    if ours and theirs:
        best_ours, best_theirs = min(ours, key=ours.get), min(theirs, key=theirs.get)
        result["best_ratio"] = theirs[best_theirs] / ours[best_ours]
        result["best_settings"] = {"rcfd": best_ours, "trl": best_theirs}
    else:
        result["best_ratio"], result["best_settings"] = None, None
    best = result["rcfd"].get((result["best_settings"] or {}).get("rcfd") or "full-fp32", {})
    result["mfu"] = result["rcfd"].get("full-fp32", {}).get("mfu")
    result["best_mfu"] = best.get("mfu")
    result["peak_rss_mb"] = peak_rss_mb()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
