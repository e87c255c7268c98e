"""Any Python callable with TRL's reward signature ``f(prompts, completions, **kwargs) -> list[float]``.

Referenced from configs as ``module.path:function`` (e.g. ``reward.names: [my_rewards:brevity]``).
Importing a module runs its code, and a config may come from someone else (a copied run directory,
a shared preset): rcfd imports one only when the user says so, with ``--trust-code`` on the command
line, ``RCFD_TRUST_CODE=1`` in the environment or ``trust_code=True`` (transformers' ``trust_remote_code``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
import sys

import torch

from ..errors import RcfdError


TRUST_ENV = "RCFD_TRUST_CODE"


def code_trusted() -> bool:
    """Whether the user allowed configs to name Python code (``--trust-code`` sets the variable)."""
    return os.environ.get(TRUST_ENV) == "1"


def require_trust(spec: str, trust_code: bool | None = None) -> None:
    """One line naming the entry and the flag, unless the user allowed code."""
    if not (code_trusted() if trust_code is None else trust_code):
        module_name = spec.partition(":")[0]
        raise RcfdError(f"reward '{spec}' imports the Python module '{module_name}' and runs its code; rcfd "
                        f"does that only when told to: pass --trust-code (or set {TRUST_ENV}=1) if you trust "
                        f"where this config came from")


class CallableReward:

    def __init__(self, fn, name: str):
        self.fn = fn
        self.name = name

    @classmethod
    def from_spec(cls, spec: str, trust_code: bool | None = None) -> "CallableReward":
        module_name, _, attr = spec.partition(":")
        require_trust(spec, trust_code)
        if os.getcwd() not in sys.path:  # `rcfd` is a console script: python's own `-m` would look here too
            sys.path.insert(0, os.getcwd())
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
        """Its name and a fingerprint of its code, so cached demonstration rewards go stale when it is edited."""
        fn = self.fn
        return (f"callable:{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', self.name)}"
                f"@{code_fingerprint(fn)}")

    def __call__(self, prompts, completions, **kwargs) -> torch.Tensor:
        return reward_values(self.fn(prompts, completions, **kwargs), len(completions), self.name)


def reward_values(values, n: int, name: str) -> torch.Tensor:
    """``values`` as a float32 tensor [n], or one line naming the reward and the first bad entry."""
    fix = "it must return one number per completion"
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().flatten().tolist()
    try:
        values = list(values)
    except TypeError:
        raise RcfdError(f"reward '{name}' returned {type(values).__name__}, not a list; {fix}") from None
    for i, v in enumerate(values):
        if not isinstance(v, (int, float)) and not hasattr(v, "__float__"):  # a bool counts as 0 or 1
            raise RcfdError(f"reward '{name}' returned {v!r} ({type(v).__name__}) for completion {i}; {fix}")
    if len(values) != n:
        raise RcfdError(f"reward '{name}' returned {len(values)} values for {n} completions; {fix}")
    return torch.tensor([float(v) for v in values], dtype=torch.float32, device="cpu")


def code_fingerprint(fn) -> str:
    """A hash of the source file defining ``fn`` (its helpers and constants included), else of its code
    object; a callable with neither (a builtin, a C extension) is keyed by its name alone."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isclass(fn) else type(fn)
    try:
        text = open(inspect.getsourcefile(target), "rb").read()
    except (TypeError, OSError):
        code = getattr(inspect.unwrap(fn), "__code__", None)
        if code is None:
            return "opaque"
        text = code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def as_reward(r, owner: str):
    """An rcfd reward (one with ``identity()`` and ``name``) as it is; a TRL-signature callable wrapped in
    :class:`CallableReward`; anything else a one-line error naming ``owner``."""
    if hasattr(r, "identity") and hasattr(r, "name"):
        return r
    if callable(r):
        return CallableReward(r, getattr(r, "__name__", type(r).__name__))
    raise RcfdError(f"{owner}: reward {r!r} is not callable")
