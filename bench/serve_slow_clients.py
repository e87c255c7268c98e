"""``rcfd serve`` under slow clients and few file descriptors: do trickling connections get cut off, does
``/health`` stay answered, and how much does the server write to stderr?

Starts ``rcfd serve --task tiny`` with a descriptor limit of ``--nofile`` (``ulimit -n``), opens
``--connections`` connections that send one header byte every 0.2 s, and for ``--seconds`` polls
``/health`` every 0.5 s. Prints and writes bench/results/serve-slow-clients.md: how many trickling
connections the server had closed at the end, /health latency (max) and failures, and the bytes the
server wrote to stderr. Run: ``.venv/bin/python bench/serve_slow_clients.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import provenance  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--nofile", type=int, default=64, help="the server's descriptor limit (default: 64)")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--header-timeout", type=float, default=10)
    args = ap.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stderr = tempfile.TemporaryFile()

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))

    proc = subprocess.Popen([sys.executable, "-m", "rcfd", "serve", "--task", "tiny", "--port", str(port), "--quiet",
                             "--header-timeout", str(args.header_timeout)], stdout=subprocess.DEVNULL, stderr=stderr,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"), preexec_fn=limit)
    url = f"http://127.0.0.1:{port}/health"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                time.sleep(0.5)
        conns = []
        for _ in range(args.connections):
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=2)
                c.sendall(b"POST /get_reward HTTP/1.1\r\n")
                conns.append(c)
            except OSError:
                pass
        health, start, next_poll = [], time.monotonic(), 0.0
        while time.monotonic() - start < args.seconds:
            for c in list(conns):
                try:
                    c.sendall(b"X")
                except OSError:
                    conns.remove(c)  # the server closed it
            if time.monotonic() >= next_poll:
                t0, late = time.perf_counter(), time.monotonic() - start > args.header_timeout + 1
                try:
                    urllib.request.urlopen(url, timeout=5).read()
                    health.append((late, time.perf_counter() - t0))
                except OSError:
                    health.append((late, None))
                next_poll = time.monotonic() + 0.5
            time.sleep(0.2)
        still_open = len(conns)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    stderr.seek(0, 2)
    commit = provenance.commit()
    command = (f".venv/bin/python bench/serve_slow_clients.py --connections {args.connections} --nofile {args.nofile} "
               f"--seconds {args.seconds:g} --header-timeout {args.header_timeout:g}")
    def polls(late: bool) -> dict:
        times = [t for lt, t in health if lt == late]
        answered = [t for t in times if t is not None]
        return {"polls": len(times), "failed": len(times) - len(answered),
                "slowest_ms": 1000 * max(answered) if answered else None}

    result = {"command": command, "commit": commit, "cpu": provenance.cpu_name(), "trickling_connections": args.connections,
              "still_open_at_end": still_open, "health_before_timeout": polls(False),
              "health_after_timeout": polls(True), "server_stderr_bytes": stderr.tell()}
    print(json.dumps(result, indent=2))

    def cells(h):
        slowest = "–" if h["slowest_ms"] is None else f"{h['slowest_ms']:.0f} ms"
        return f"{h['polls']} | {h['failed']} | {slowest}"
    out = Path(__file__).parent / "results" / "serve-slow-clients.md"
    out.write_text(
        "# rcfd serve under slow clients and few descriptors\n\n"
        f"`{command}` at commit {commit} on {result['cpu']}.\n\n"
        "| /health polled | polls | failed (5 s) | slowest |\n|---|---|---|---|\n"
        f"| until the header timeout + 1 s | {cells(result['health_before_timeout'])} |\n"
        f"| after it | {cells(result['health_after_timeout'])} |\n\n"
        f"{args.connections} trickling connections against a descriptor limit of {args.nofile}: {still_open} still "
        f"open after {args.seconds:g} s; the server wrote {result['server_stderr_bytes']} bytes to stderr.\n\n"
        "Each trickling connection sends one byte of a request line every 0.2 s and never finishes its headers; "
        f"the server closes it {args.header_timeout:g} s after it opened. Until then the connections hold the "
        "descriptors, so /health waits for one to free (no server can accept a connection without a descriptor); "
        "once they are closed it is answered at once.\n")


if __name__ == "__main__":
    main()
