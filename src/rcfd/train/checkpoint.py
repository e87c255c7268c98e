"""Atomic, verifiable checkpoints.

A checkpoint is a directory ``checkpoints/step-XXXXXX`` holding the trainable weights
(safetensors), optimizer state, RNG states, trainer state and the metrics so far. It is written
into a temporary directory, every file fsynced, a manifest with SHA-256 checksums written last,
and then renamed into place; a checkpoint whose manifest is missing or does not match is never
read. The newest ``keep`` checkpoints are kept; a temporary directory a kill left behind goes at the
next save, and a disk that fills up mid-write is one line that leaves the earlier checkpoints intact.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import RcfdError
from ..files import private_dir

MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def trainable_state(model) -> dict:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    """Every random number generator a run draws from: CPU torch, CUDA (sampling on a GPU), numpy, Python."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # as tensors and numbers: loadable without pickle
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`'s generators; a CUDA state is restored where CUDA is present (a run
    resumed on another device carries on with that device's generator)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, step: int, model, optimizer, state: dict, extra_files=(), keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically under ``root``; return its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):  # a kill mid-write left it; the run's lock says no one else writes
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step:06d}"
    tmp = private_dir(root, f".tmp-step-{step:06d}-")
    try:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "rng": rng_state()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, sort_keys=True))
        for src in extra_files:
            src = Path(src)
            if src.exists():
                shutil.copyfile(src, tmp / src.name)
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        for p in files:
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        manifest = {"step": step, "files": {p.name: _sha256(p) for p in files}}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(exc, root):
            raise RcfdError(f"no space left on the device of '{root}' while writing checkpoint step {step}; the "
                            f"earlier checkpoints are intact: free space (or lower train.keep_checkpoints) and "
                            f"continue with --resume") from None
        raise
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def disk_full(exc: BaseException, where: Path) -> bool:
    """Whether ``exc`` is the disk filling up: ENOSPC, or torch's own wording for a failed write
    ('[enforce fail at inline_container.cc ...]') where the device has under 64 MB left."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    if isinstance(exc, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(where).free < 64 << 20
        except OSError:
            return False
    return False


def is_complete(path: Path) -> bool:
    manifest = Path(path) / MANIFEST
    if not manifest.exists():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
        return all((Path(path) / name).exists() and _sha256(Path(path) / name) == digest
                   for name, digest in files.items())
    except (OSError, ValueError, KeyError):
        return False


def list_checkpoints(root: Path) -> list[Path]:
    root = Path(root)
    if not root.exists():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir())


def latest_checkpoint(root: Path) -> Path | None:
    """Newest checkpoint whose manifest verifies; each one skipped is said in one line on stderr, and
    where every one fails, nothing is silently restarted: a one-line error."""
    saved = list_checkpoints(root)
    skipped = []
    for path in reversed(saved):
        if is_complete(path):
            if skipped:
                print(f"rcfd: warning: checkpoint {', '.join(skipped)} fails its checksums (corrupt or edited); "
                      f"using {path.name}", file=sys.stderr)
            return path
        skipped.append(path.name)
    if saved:
        raise RcfdError(f"every checkpoint in '{root}' fails its checksums ({', '.join(skipped)}): nothing to resume "
                        f"or load; restore a copy of the run or start a new --out")
    return None


def load_weights(path: Path, model) -> None:
    """Copy a checkpoint's trainable weights into ``model`` (built from the run's config)."""
    path = Path(path)
    if not is_complete(path):
        raise RcfdError(f"checkpoint '{path}' is incomplete or corrupt; resume from an earlier one")
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise RcfdError(f"checkpoint '{path}' does not match the model (e.g. '{missing[0]}'); "
                        f"resume with the run's own config")
    with torch.no_grad():  # copy_ casts to the parameter's device and dtype: a run resumes anywhere
        for name, value in weights.items():
            params[name].copy_(value)


def load_checkpoint(path: Path, model, optimizer) -> dict:
    """Weights, optimizer and RNG state of a checkpoint; returns its state.json."""
    path = Path(path)
    load_weights(path, model)
    try:  # tensors, numbers and strings only: a checkpoint from elsewhere cannot run code
        blob = torch.load(path / "optimizer.pt", weights_only=True)
    except pickle.UnpicklingError:
        raise RcfdError(f"'{path / 'optimizer.pt'}' holds objects beyond tensors and numbers (written by rcfd "
                        "before 0.2, or altered), which loading would run as code; it was not loaded. Start the "
                        "run again, or evaluate its weights with `rcfd eval`") from None
    optimizer.load_state_dict(blob["optimizer"])
    set_rng_state(blob["rng"])
    return json.loads((path / "state.json").read_text())


class StopAtStepBoundary:
    """The first Ctrl-C or SIGTERM (what Slurm, Kubernetes and `docker stop` send) asks the loop to stop
    after the current step, which then checkpoints and exits; a second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: stopping after this step and saving a checkpoint (again to abort now)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False
