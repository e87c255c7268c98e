"""Demonstration rewards R(x, y_d), computed once and cached on disk.

The key combines the reward stack's identity, a content fingerprint of the pairs, the truncation
length and, where the scorers' models do not compute in float32 on the CPU, their dtypes and device
kinds (bfloat16 or GPU numbers are other numbers), so any change to the reward, the model, its
precision or the data invalidates it.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import fingerprint
from ..files import save_torch
from ..train.logprobs import decode_completions, encode_pairs
from ..paths import cache_dir


def numerics(rewards) -> str:
    """The dtypes and device kinds of the models the rewards hold (attributes up to two levels down)."""
    found = set()

    def visit(obj, depth: int) -> None:
        if isinstance(obj, torch.nn.Module):
            found.update(f"{p.dtype}@{p.device.type}" for p in obj.parameters())
        elif depth < 2 and hasattr(obj, "__dict__"):
            for value in vars(obj).values():
                visit(value, depth + 1)

    for reward in getattr(rewards, "rewards", [rewards]):
        visit(reward, 0)
    return ",".join(sorted(found))


def demo_cache_path(rewards, dataset, max_tokens: int) -> Path:
    text = f"{rewards.identity()}|{fingerprint(dataset)}|{max_tokens}"
    where = numerics(rewards)
    if where not in ("", "torch.float32@cpu"):  # float32 on the CPU keeps the key caches were written under
        text += f"|{where}"
    key = hashlib.sha256(text.encode()).hexdigest()[:24]
    return cache_dir() / "demo_rewards" / f"{key}.pt"


def read_cache(path: Path) -> torch.Tensor | None:
    """The cached tensor, or None where there is none or it cannot be read (empty, torn, or not a tensor:
    it is computed again and rewritten, with one line saying so)."""
    if not path.exists():
        return None
    try:
        cached = torch.load(path, weights_only=True)  # a tensor; nothing in the cache may run code
    except (EOFError, RuntimeError, pickle.UnpicklingError, ValueError) as exc:
        cached = exc
    if isinstance(cached, torch.Tensor) and cached.dim() == 2:
        return cached
    print(f"rcfd: warning: demonstration-reward cache '{path}' is unreadable ({type(cached).__name__}); "
          "computing it again", file=sys.stderr)
    return None


def demo_rewards(rewards, dataset, tokenizer, max_tokens: int, batch_size: int = 32,
                 desc: str = "demonstration rewards", progress: bool = True) -> torch.Tensor:
    """[N, K] rewards of each demonstration (truncated to ``max_tokens`` tokens), cached on disk."""
    path = demo_cache_path(rewards, dataset, max_tokens)
    cached = read_cache(path)
    if cached is not None and cached.shape[0] == len(dataset):
        return cached
    prompts, demos = list(dataset["prompt"]), list(dataset["demonstration"])
    parts = []
    for i in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False, disable=not progress):
        p, d = prompts[i:i + batch_size], demos[i:i + batch_size]
        rollout = encode_pairs(tokenizer, p, d, max_tokens)
        texts = decode_completions(tokenizer, rollout)
        parts.append(rewards(p, texts, rollout=rollout))
    values = torch.cat(parts, 0)
    save_torch(path, values)
    return values


def every_demo_rewards(rewards, dataset, tokenizer, max_tokens: int, desc: str = "demonstration rewards",
                       progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """([M, K] rewards of every demonstration of every row, [N] how many each row has, in row order), for
    datasets whose column ``demonstrations`` holds several per prompt; cached like :func:`demo_rewards`."""
    import datasets

    demos = [list(d) for d in dataset["demonstrations"]]
    flat = datasets.Dataset.from_dict({"prompt": [p for p, ds in zip(dataset["prompt"], demos) for _ in ds],
                                       "demonstration": [d for ds in demos for d in ds]})
    values = demo_rewards(rewards, flat, tokenizer, max_tokens, desc=desc, progress=progress)
    return values, torch.tensor([len(d) for d in demos], device="cpu")
