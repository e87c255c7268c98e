"""Latency and throughput of ``rcfd serve`` under concurrent OpenRLHF-shaped clients.

Starts ``rcfd serve`` on loopback (by default the wiki-continuation task: loglik under the packaged
SmolLM2-135M), warms it up, then C clients each send N requests of R rows (prompt + a fixed response,
the demonstration as label) one after another. Prints and writes (``--out``) p50/p99 latency per
request, requests and rows per second, and the machine, into bench/results/serve-TASK.json and
serve-TASK.md. Run: ``.venv/bin/python bench/serve_bench.py [--task tiny]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def post(url: str, body: dict) -> list[float]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.loads(resp.read())["rewards"]


def cpu_model() -> str:
    """'model name (CPU family F, model M)' from /proc/cpuinfo: the name alone can be just 'AMD EPYC'."""
    fields = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    return f"{fields.get('model name', '?')} (CPU family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="wiki-continuation")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=50, help="per client")
    ap.add_argument("--rows", type=int, default=4, help="rollouts per request")
    ap.add_argument("--out", help="JSON file for the figures, a .md table next to it "
                                   "(default: bench/results/serve-TASK.json)")
    ap.add_argument("--note", default="", help="a sentence for the table, e.g. what else ran on the machine")
    args = ap.parse_args()

    from rcfd.config import load_config
    from rcfd.data import build_datasets
    from rcfd.models import load_tokenizer, resolve_model_path
    from rcfd.tasks import get_task

    config = load_config(get_task(args.task).config_path)
    train, _ = build_datasets(config.data, load_tokenizer(resolve_model_path(config.model.name)))
    pairs = list(zip(train["prompt"][:64], train["demonstration"][:64]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "rcfd", "serve", "--task", args.task, "--port", str(port), "--quiet"],
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                health = json.loads(urllib.request.urlopen(url + "/health", timeout=1).read())
                break
            except OSError:
                time.sleep(0.5)

        def body(i: int) -> dict:
            rows = [pairs[(i * args.rows + j) % len(pairs)] for j in range(args.rows)]
            return {"query": [p + " and then it was over." for p, _ in rows], "prompts": [p for p, _ in rows],
                    "labels": [d for _, d in rows]}

        for i in range(len(pairs) // args.rows):  # warm-up: every demonstration's reward gets cached
            post(url + "/get_reward", body(i))

        def client(c: int) -> list[float]:
            times = []
            for j in range(args.requests):
                t0 = time.perf_counter()
                post(url + "/get_reward", body(c * args.requests + j))
                times.append(time.perf_counter() - t0)
            return times

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            latencies = sorted(t for ts in pool.map(client, range(args.clients)) for t in ts)
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    n = len(latencies)
    result = {
        "task": args.task, "clients": args.clients, "requests": n, "rows_per_request": args.rows,
        "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * latencies[min(n - 1, int(0.99 * n))],
        "requests_per_s": n / wall, "rows_per_s": n * args.rows / wall, "wall_s": wall,
        "cpu": cpu_model(), "cores": os.cpu_count(), "rewards": health["rewards"], "note": args.note,
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out or Path(__file__).parent / "results" / f"serve-{args.task}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        "# rcfd serve under concurrent clients\n\n"
        f"`.venv/bin/python bench/serve_bench.py --task {args.task} --clients {args.clients} "
        f"--requests {args.requests} --rows {args.rows}` on {result['cpu']} ({result['cores']} cores).\n\n"
        "| clients × requests | rows/request | p50 latency | p99 latency | requests/s | rows/s |\n|---|---|---|---|---|---|\n"
        f"| {args.clients} × {args.requests} | {args.rows} | {result['p50_ms']:.0f} ms | {result['p99_ms']:.0f} ms | "
        f"{result['requests_per_s']:.1f} | {result['rows_per_s']:.1f} |\n\n"
        f"Rewards: the {args.task} preset's ({', '.join(health['rewards'])}; model {config.model.name}); "
        f"demonstration rewards cached by a warm-up pass; every request answered. {args.note}\n")


if __name__ == "__main__":
    main()
