"""Small atomic-file helpers: a reader never sees a half-written file."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_atomically(path):
    """Yield a unique temp file beside ``path``; on success rename it onto ``path``, on failure
    remove it. Unique, so two processes writing one file never rename each other's temp file away
    (the last rename wins, whole)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide a shared run from colleagues
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    """Write a text file atomically (temp file, fsync, rename)."""
    with replaced_atomically(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def strict_json(obj):
    """``obj`` with every NaN or infinity as ``None``: strict JSON (jq, JavaScript, most parsers) has no
    NaN, so rcfd writes a metric that is not a number as ``null``; :func:`read_json` reads it back as NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def null_as_nan(obj):
    """The inverse of :func:`strict_json` for rcfd's own files, whose every ``null`` is a number that
    was not finite."""
    if obj is None:
        return math.nan
    if isinstance(obj, dict):
        return {k: null_as_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [null_as_nan(v) for v in obj]
    return obj


def write_json(path, obj) -> None:
    """Write strict JSON atomically (non-finite numbers as null)."""
    write_text(path, json.dumps(strict_json(obj), indent=2, sort_keys=True, allow_nan=False))


def read_json(path):
    """A JSON file rcfd wrote, its nulls back as NaN (older files' bare NaN reads as NaN too)."""
    return null_as_nan(json.loads(Path(path).read_text(encoding="utf-8")))


def read_jsonl(path) -> list[dict]:
    """The records of a JSON-lines file rcfd wrote (see :func:`read_json`); none when it is missing."""
    path = Path(path)
    if not path.exists():
        return []
    return [null_as_nan(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_jsonl(path, record: dict) -> None:
    """Append one strict JSON line (non-finite numbers as null) and flush it to disk."""
    with open(path, "a") as f:
        f.write(json.dumps(strict_json(record), sort_keys=True, allow_nan=False) + "\n")
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


@contextmanager
def staged_dir(final, marker: str):
    """Yield a private directory beside ``final`` to write into; on success publish it whole
    (:func:`publish_dir`), on failure remove it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = private_dir(final.parent, f".{final.name}-")
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_dir(staging, final, marker)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def private_dir(parent, prefix: str) -> Path:
    """A new directory under ``parent`` for staging (mkdtemp), with the mode the umask gives others' files."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~_umask())
    return path


def save_torch(path, obj) -> None:
    """torch.save atomically (temp file in the same directory, then rename)."""
    import torch

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:  # a crash after the rename must not leave an empty file behind
            os.fsync(f.fileno())
