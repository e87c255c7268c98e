"""Latency, throughput and memory of ``rcfd serve`` under concurrent OpenRLHF-shaped clients.

Starts ``rcfd serve`` on loopback (by default the wiki-continuation task: loglik under the packaged
SmolLM2-135M) and warms it up. Then two phases on the same server: C clients each send N requests of R
short rows (prompt + a fixed response, the demonstration as label) one after another; then the same C
clients beside L clients whose rows are ``--long-tokens`` tokens long. Prints and writes p50/p99
latency of short and long requests, requests and rows per second, the server's peak memory, the
command, commit and CPU into bench/results/serve-TASK.json and serve-TASK.md.
Run: ``.venv/bin/python bench/serve_bench.py [--task tiny]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provenance  # noqa: E402


def post(url: str, body: dict) -> list[float]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.loads(resp.read())["rewards"]


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MB of a process, from /proc (0, 0 where there is none)."""
    fields = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else "0"
    except OSError:
        return 0.0, 0.0
    return int(fields.get("VmRSS", 0)) / 1024, int(fields.get("VmHWM", 0)) / 1024


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="wiki-continuation")
    ap.add_argument("--clients", type=int, default=8, help="clients sending short rows")
    ap.add_argument("--long-clients", type=int, default=2,
                    help="clients sending rows of --long-tokens tokens, in the mixed phase (default: 2)")
    ap.add_argument("--long-tokens", type=int, default=1000, help="tokens of a long row (default: 1000, "
                                                                   "under the server's --max-row-tokens 1024)")
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
    tokenizer = load_tokenizer(resolve_model_path(config.model.name))
    train, _ = build_datasets(config.data, tokenizer)
    pairs = list(zip(train["prompt"][:64], train["demonstration"][:64]))
    filler = " ".join(d for _, d in pairs)
    while len(tokenizer(filler, add_special_tokens=False)["input_ids"]) < args.long_tokens:
        filler += " " + filler
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "rcfd", "serve", "--task", args.task, "--port", str(port), "--quiet"],
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    url = f"http://127.0.0.1:{port}"

    def body(i: int, long: bool = False) -> dict:
        rows = [pairs[(i * args.rows + j) % len(pairs)] for j in range(args.rows)]
        responses = []
        for p, _ in rows:
            if long:  # prompt + response of exactly --long-tokens tokens
                room = args.long_tokens - len(tokenizer(p, add_special_tokens=False)["input_ids"])
                responses.append(tokenizer.decode(tokenizer(" " + filler, add_special_tokens=False)["input_ids"][:room]))
            else:
                responses.append(" and then it was over.")
        return {"query": [p + r for (p, _), r in zip(rows, responses)], "prompts": [p for p, _ in rows],
                "labels": [d for _, d in rows]}

    def phase(long_clients: int) -> dict:
        def client(c: int) -> tuple[bool, list[float]]:
            long = c >= args.clients
            bodies = [body(c * args.requests + j, long) for j in range(args.requests)]
            times = []
            for b in bodies:
                t0 = time.perf_counter()
                post(url + "/get_reward", b)
                times.append(time.perf_counter() - t0)
            return long, times

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients + long_clients) as pool:
            results = list(pool.map(client, range(args.clients + long_clients)))
        wall = time.perf_counter() - t0
        short = [t for long, ts in results if not long for t in ts]
        longs = [t for long, ts in results if long for t in ts]
        rss, peak = memory_mb(proc.pid)
        n = len(short) + len(longs)
        return {"long_clients": long_clients, "requests": n, "wall_s": wall, "requests_per_s": n / wall,
                "rows_per_s": n * args.rows / wall,
                "short_p50_ms": 1000 * statistics.median(short), "short_p99_ms": 1000 * percentile(short, 0.99),
                "long_p50_ms": 1000 * statistics.median(longs) if longs else None,
                "long_p99_ms": 1000 * percentile(longs, 0.99) if longs else None,
                "server_rss_mb": rss, "server_peak_rss_mb": peak}

    try:
        for _ in range(600):
            try:
                health = json.loads(urllib.request.urlopen(url + "/health", timeout=1).read())
                break
            except OSError:
                time.sleep(0.5)
        for i in range(len(pairs) // args.rows):  # warm-up: every demonstration's reward gets cached
            post(url + "/get_reward", body(i))
        started_mb = memory_mb(proc.pid)[0]
        phases = [phase(0), phase(args.long_clients)]  # side by side on one server: short only, then mixed
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    commit = provenance.commit()
    command = (f".venv/bin/python bench/serve_bench.py --task {args.task} --clients {args.clients} "
               f"--long-clients {args.long_clients} --long-tokens {args.long_tokens} --requests {args.requests} "
               f"--rows {args.rows}")
    result = {"task": args.task, "command": command, "commit": commit, "clients": args.clients,
              "rows_per_request": args.rows, "long_tokens": args.long_tokens, "phases": phases,
              "server_rss_after_warmup_mb": started_mb, "health": health, "cpu": provenance.cpu_name(),
              "cores": os.cpu_count(), "note": args.note}
    print(json.dumps(result, indent=2))
    out = Path(args.out or Path(__file__).parent / "results" / f"serve-{args.task}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")

    def ms(v):
        return "–" if v is None else f"{v:.0f} ms"

    def label(p):
        return f"{args.clients} short" + (f" + {p['long_clients']} long" if p["long_clients"] else "")

    rows = "".join(
        f"| {label(p)} × {args.requests} | "
        f"{ms(p['short_p50_ms'])} | {ms(p['short_p99_ms'])} | {ms(p['long_p50_ms'])} | {ms(p['long_p99_ms'])} | "
        f"{p['requests_per_s']:.1f} | {p['rows_per_s']:.1f} | {p['server_peak_rss_mb']:.0f} MB |\n" for p in phases)
    out.with_suffix(".md").write_text(
        "# rcfd serve under concurrent clients\n\n"
        f"`{command}` at commit {commit} on {result['cpu']} ({result['cores']} cores).\n\n"
        f"Each client sends {args.requests} requests of {args.rows} rows one after another; a short row is its "
        f"prompt + \" and then it was over.\", a long row is {args.long_tokens} tokens (the server's "
        f"--max-row-tokens is {health['max_row_tokens']}, --max-batch-tokens {health['max_batch_tokens']}). "
        "Both phases run on one server, one after the other.\n\n"
        "| clients × requests | short p50 | short p99 | long p50 | long p99 | requests/s | rows/s | server peak RSS |\n"
        "|---|---|---|---|---|---|---|---|\n" + rows +
        f"\nRewards: the {args.task} preset's ({', '.join(health['rewards'])}; model {config.model.name}); "
        f"demonstration rewards cached by a warm-up pass (server RSS after it: {started_mb:.0f} MB); every request "
        f"answered. {args.note}\n")


if __name__ == "__main__":
    main()
