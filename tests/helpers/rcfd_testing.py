"""Utilities the tests share (importable because pyproject's pytest `pythonpath` holds tests/helpers)."""

import hashlib
from pathlib import Path

TINY = Path(__file__).resolve().parents[2] / "src" / "rcfd" / "configs" / "tiny.yaml"


def fingerprint(run) -> dict:
    """Every file under ``run`` with its SHA-256 (so 'byte-identical' is checked, not assumed)."""
    run = Path(run)
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def leave(procs) -> None:
    """End a two-process helper: leave the gloo group together, then exit without the interpreter's
    teardown, where gloo's threads can still abort a finished process on two busy cores ("terminate called
    without an active exception", exit code -6, seen twice in the slow suite). Call it last: anything
    that fails earlier still raises and exits non-zero."""
    import os
    import sys

    procs.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
