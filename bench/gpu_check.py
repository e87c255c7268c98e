"""The GPU check: what must hold where users train, in one command of under 10 minutes on one GPU.

Where CUDA is present it runs, each timed and with the GPU's peak memory:
  1. the tiny task in bfloat16 on the GPU (train, evaluate);
  2. a resume across devices: 2 steps on the GPU, resumed on the CPU for 2 more, and the reverse;
  3. the use-case-1 demo (beta0 and rcfd) in bfloat16 on the GPU, with `--steps` (default: the preset's);
  4. the step benchmark on the GPU, rcfd against TRL's GRPOTrainer on identical work (bench/step_bench.py);
  5. the tiny task through `--engine trl` in bfloat16 on the GPU (TRL's generate; its vLLM is not wired);
and writes bench/results/gpu-NAME.json and .md. Where no GPU is present it says so in one line and exits 1.

    bench/gpu_check                      # everything
    bench/gpu_check --skip-demo --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import provenance  # noqa: E402


def _peak_reset():
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()


def _timed_part(name: str, fn, results: dict) -> None:
    """Run one part; record its seconds, the GPU's peak memory and what it returned, or its error."""
    import torch

    _peak_reset()
    t0 = time.perf_counter()
    try:
        out = fn()
        status = "ok"
    except Exception as exc:  # a failing part is a finding: record it and go on with the others
        out, status = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}, "failed"
    torch.cuda.synchronize()
    results[name] = {"status": status, "seconds": time.perf_counter() - t0,
                     "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2 ** 30, **(out or {})}
    print(f"{name}: {status} in {results[name]['seconds']:.0f} s", flush=True)


def _step_seconds(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "timings.jsonl").read_text().splitlines() if line.strip()]
    steps = sorted(r["step_s"] for r in rows)
    return {"median_step_s": steps[len(steps) // 2] if steps else None, "steps": len(rows)}


def tiny_bf16(work: Path) -> dict:
    from rcfd import load_config, packaged_config, run_training

    config = load_config(packaged_config("tiny"), ["model.device=cuda", "model.dtype=bfloat16"])
    _, summary = run_training(config, work / "tiny-bf16", progress=False)
    return {"reward_z": (summary["reward_mean"] - summary["demo_reward_mean"]) / summary["demo_reward_std"],
            **_step_seconds(work / "tiny-bf16")}


def tiny_trl_engine(work: Path) -> dict:
    from rcfd import load_config, packaged_config, run_training

    config = load_config(packaged_config("tiny"), ["model.device=cuda", "model.dtype=bfloat16", "train.engine=trl",
                                                   "train.num_generations=4", "train.advantage=rloo"])
    _, summary = run_training(config, work / "tiny-trl", progress=False)
    return {"reward_z": (summary["reward_mean"] - summary["demo_reward_mean"]) / summary["demo_reward_std"],
            **_step_seconds(work / "tiny-trl")}


def resume_across_devices(work: Path) -> dict:
    from rcfd import load_config, packaged_config
    from rcfd.train.trainer import Trainer

    out = {}
    for first, then in (("cuda", "cpu"), ("cpu", "cuda")):
        run = work / f"resume-{first}-{then}"
        config = lambda device: load_config(packaged_config("tiny"), [f"model.device={device}", "train.steps=4"])  # noqa: E731
        Trainer(config(first), run, progress=False).train(steps=2)
        resumed = Trainer(config(then), run, resume=True, progress=False)
        resumed.train()
        out[f"{first}->{then}"] = resumed.step_idx == 4
    if not all(out.values()):
        raise RuntimeError(f"a resume across devices stopped early: {out}")
    return {"resumed": out}


def demo_bf16(work: Path, steps: int | None) -> dict:
    from rcfd.plans.demo import run_demo
    from rcfd.tasks import get_task

    record = run_demo(work / "demo", config_path=get_task("wiki-continuation").config_path, steps=steps,
                      overrides=["model.device=cuda", "model.dtype=bfloat16"], progress=False)
    figures = {}
    for name, run in record.get("runs", {}).items():
        m = run.get("metrics", {})
        if "reward_mean" in m:
            figures[name] = {"reward_z": (m["reward_mean"] - m["demo_reward_mean"]) / m["demo_reward_std"],
                             "distinct_2": m.get("distinct_2"), "demo_distinct_2": m.get("demo_distinct_2"),
                             **_step_seconds(work / "demo" / name)}
    return {"runs": figures}


def step_bench(steps: int) -> dict:
    import step_bench as bench

    out = HERE / "results" / "gpu-step-bench.json"
    bench.main(["--device", "cuda", "--steps", str(steps), "--out", str(out)])
    result = json.loads(out.read_text())
    return {"rcfd_s_per_step": result.get("rcfd_s_per_step"), "trl_s_per_step": result.get("trl_s_per_step"),
            "ratio_trl_over_rcfd": result.get("ratio"),
            "generation_tokens_per_s": {k: v.get("generation_tokens_per_s") for k, v in result["rcfd"].items()}}


def markdown(result: dict) -> str:
    lines = [f"# GPU check on {result['gpu']}", "", f"`{result['command']}` at commit {result['commit']}, "
             f"torch {result['torch']}.", "", "| part | status | seconds | peak GPU memory (GB) | figures |",
             "|---|---|---|---|---|"]
    for name, part in result["parts"].items():
        figures = {k: v for k, v in part.items() if k not in ("status", "seconds", "peak_gpu_memory_gb")}
        lines.append(f"| {name} | {part['status']} | {part.get('seconds', 0):.0f} | "
                     f"{part.get('peak_gpu_memory_gb', 0):.2f} | `{json.dumps(figures)}` |")
    lines += ["", "Not run: `--engine trl` with TRL's vLLM (not wired into the engine yet)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="RL steps per demo run (default: the preset's)")
    parser.add_argument("--bench-steps", type=int, default=3, help="measured steps per benchmark setting (default 3)")
    parser.add_argument("--skip-demo", action="store_true", help="leave out the use-case-1 demo")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results", help="where gpu-NAME.json/.md go")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is false); run it on a machine with one",
              file=sys.stderr)
        return 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    gpu = torch.cuda.get_device_name(0)
    commit = provenance.commit()
    result = {"gpu": gpu, "torch": torch.__version__, "commit": commit, "command": " ".join(["bench/gpu_check", *(argv or sys.argv[1:])]),
              "parts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _timed_part("tiny task, bfloat16", lambda: tiny_bf16(work), result["parts"])
        _timed_part("resume across devices", lambda: resume_across_devices(work), result["parts"])
        if not args.skip_demo:
            _timed_part("use-case-1 demo, bfloat16", lambda: demo_bf16(work, args.steps), result["parts"])
        _timed_part("step benchmark against TRL", lambda: step_bench(args.bench_steps), result["parts"])
        _timed_part("tiny task through --engine trl, bfloat16", lambda: tiny_trl_engine(work), result["parts"])
    name = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"gpu-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out_dir / f"gpu-{name}.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0 if all(p["status"] == "ok" for p in result["parts"].values()) else 2


if __name__ == "__main__":
    raise SystemExit(main())
