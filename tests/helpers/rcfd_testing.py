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


class ExplicitDevices:
    """A guard for what breaks on a GPU but not on a CPU-only machine: inside it, a tensor that rcfd's own
    code creates without naming its device (``torch.tensor(...)``, ``torch.zeros(...)``, …) raises, naming
    the file and line. On a CPU-only machine such a tensor silently lands beside the models; on a GPU it
    lands on the CPU while the models sit on the GPU, and the next operation that mixes them fails.
    Libraries' own factories (transformers, tokenizers) are left alone: they are not ours to fix."""

    FACTORIES = ("tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "rand", "randn", "randint",
                 "linspace", "eye")

    def __enter__(self):
        import torch
        from torch.overrides import TorchFunctionMode

        import rcfd

        package = str(Path(rcfd.__file__).parent)
        factories = {getattr(torch, name) for name in self.FACTORIES}
        self.offences = offences = []

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func in factories and "device" not in kwargs:
                    import sys

                    frame = sys._getframe(1)
                    while frame is not None and "/torch/" in frame.f_code.co_filename:
                        frame = frame.f_back
                    if frame is not None and frame.f_code.co_filename.startswith(package):
                        where = f"{Path(frame.f_code.co_filename).relative_to(package)}:{frame.f_lineno}"
                        offences.append(where)
                        raise AssertionError(f"torch.{func.__name__} without a device at rcfd/{where}")
                return func(*args, **kwargs)

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        return False


def tiny_classifier(path, num_labels, id2label=None):
    """A tiny random DistilBERT sequence classifier with a BERT vocabulary, saved at ``path`` (offline)."""
    import torch

    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from rcfd.rewards.quality import packaged_minilm

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=32, hidden_dim=64, n_layers=2, n_heads=2, num_labels=num_labels,
                              id2label=id2label or {i: f"LABEL_{i}" for i in range(num_labels)},
                              label2id={v: k for k, v in (id2label or {}).items()} or None)
    DistilBertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(packaged_minilm()).save_pretrained(path)  # a BERT vocabulary, offline
    return str(path)
