"""Where a benchmark figure came from: the command, the commit and the machine, written beside it."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cpu_name() -> str:
    """'model name (CPU family F, model M)' from /proc/cpuinfo: a name alone, e.g. 'AMD EPYC', spans generations."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown CPU"
    return (f"{fields.get('model name', '?')} (CPU family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')})")


def commit() -> str:
    """The checkout's short commit, with '+changes' when the work tree's code differs from it (results
    written by earlier benchmarks do not count)."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=HERE).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":!/bench/results") else "")


def command(script: str, argv=None) -> str:
    """The command line that reproduces this run of ``script`` (e.g. 'bench/run')."""
    return " ".join([script, *(sys.argv[1:] if argv is None else argv)])
