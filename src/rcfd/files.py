"""Small atomic-file helpers: a reader never sees a half-written file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def write_text(path, text: str) -> None:
    """Write a text file atomically (temp file, fsync, rename).

    The temp file has a unique name, so two processes writing the same file never rename each
    other's temp file away (the last rename wins, whole).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path, obj) -> None:
    """Write JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True))


def append_jsonl(path, record: dict) -> None:
    """Append one JSON line and flush it to disk."""
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())



def publish_dir(staging, final, marker: str) -> None:
    """Move a finished directory into place atomically; if a concurrent writer got there first
    (``final/marker`` exists), keep theirs and drop ours."""
    staging, final = Path(staging), Path(final)
    try:
        os.replace(staging, final)
    except OSError:
        if (final / marker).exists():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            raise


def save_torch(path, obj) -> None:
    """torch.save atomically (temp file in the same directory, then rename)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)
