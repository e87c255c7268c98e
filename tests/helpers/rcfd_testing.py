"""Utilities the tests share (importable because pyproject's pytest `pythonpath` holds tests/helpers)."""

import hashlib
from pathlib import Path

TINY = Path(__file__).resolve().parents[2] / "src" / "rcfd" / "configs" / "tiny.yaml"


def fingerprint(run) -> dict:
    """Every file under ``run`` with its SHA-256 (so 'byte-identical' is checked, not assumed)."""
    run = Path(run)
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}
