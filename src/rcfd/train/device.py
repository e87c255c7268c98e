"""Where the models run and in which precision: ``model.device`` and ``model.dtype``.

Convention: token-level tensors (a rollout's ids, its log-probs) live on the model's device; per-sequence
figures (rewards R [B, K], targets, objective values, advantages) live on the CPU in float32, where the
objectives and logs read them, and advantages go to the device inside the update. Trainable weights
(LoRA adapters, or every weight in full fine-tuning) and the optimizer's state stay float32 whatever
the model's dtype.
"""

from __future__ import annotations

import re

import torch

from ..errors import RcfdError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU = torch.device("cpu")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``model.device`` as a torch device: 'auto' is the accelerator when one is present (CUDA, then MPS),
    each process of a multi-GPU launch on its own GPU; otherwise the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return CPU
    if name == "cpu":
        return CPU
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise RcfdError("model.device=mps but this torch build sees no Apple GPU; set model.device=cpu or auto")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise RcfdError(f"model.device must be one of {', '.join(DEVICES)}, got '{name}'")
    if not torch.cuda.is_available():
        raise RcfdError(f"model.device={name} but torch sees no CUDA GPU (a CPU build of torch, or no GPU); "
                        "set model.device=cpu or auto, or install a CUDA build of torch (README)")
    index = int(match.group(1)) if match.group(1) is not None else local_rank % torch.cuda.device_count()
    if index >= torch.cuda.device_count():
        raise RcfdError(f"model.device={name} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                        f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``model.dtype``: 'auto' is bfloat16 where the device runs it fast (a CUDA GPU that supports it),
    float32 elsewhere; float16 needs a GPU."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise RcfdError(f"model.dtype must be auto, {', '.join(DTYPES)}, got '{name}'")
    if name == "float16" and device.type == "cpu":
        raise RcfdError("model.dtype=float16 is not supported on the CPU (its kernels are missing or slow); "
                        "set model.dtype=float32 or bfloat16")
    if name == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RcfdError("model.dtype=bfloat16 but this GPU does not support it; set model.dtype=float16 or float32")
    return DTYPES[name]


def model_device(model) -> torch.device:
    """The device of a model's first parameter (the one its inputs must be on)."""
    return next(model.parameters()).device


def trainable_in_float32(model) -> None:
    """Keep the trainable weights (and so the optimizer's state) in float32 under a lower-precision model."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
