"""Any Python callable with TRL's reward signature ``f(prompts, completions, **kwargs) -> list[float]``.

Referenced from configs as ``module.path:function`` (e.g. ``reward.names: [my_rewards:brevity]``).
"""

from __future__ import annotations

import importlib

import torch

from ..errors import RcfdError


class CallableReward:

    def __init__(self, fn, name: str):
        self.fn = fn
        self.name = name

    @classmethod
    def from_spec(cls, spec: str) -> "CallableReward":
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise RcfdError(f"reward '{spec}': cannot import module '{module_name}' ({exc}); "
                            f"make it importable (PYTHONPATH) or fix the name") from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise RcfdError(f"reward '{spec}': module '{module_name}' has no callable '{attr}'")
        return cls(fn, attr)

    def identity(self) -> str:
        return f"callable:{getattr(self.fn, '__module__', '?')}.{getattr(self.fn, '__qualname__', self.name)}"

    def __call__(self, prompts, completions, **kwargs) -> torch.Tensor:
        return torch.as_tensor(self.fn(prompts, completions, **kwargs), dtype=torch.float32, device="cpu")


def as_reward(r, owner: str):
    """An rcfd reward (one with ``identity()`` and ``name``) as it is; a TRL-signature callable wrapped in
    :class:`CallableReward`; anything else a one-line error naming ``owner``."""
    if hasattr(r, "identity") and hasattr(r, "name"):
        return r
    if callable(r):
        return CallableReward(r, getattr(r, "__name__", type(r).__name__))
    raise RcfdError(f"{owner}: reward {r!r} is not callable")
