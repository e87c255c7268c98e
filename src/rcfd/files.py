"""Small atomic-file helpers: a reader never sees a half-written file."""

from __future__ import annotations

import json
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
