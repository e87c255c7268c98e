"""Where things live on disk: the cache (materialized models, demonstration rewards) and the installed
data/model packages. Its own module so that data and models both use it without importing each other."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import RcfdError


def cache_dir() -> Path:
    """Where materialized models and cached demonstration rewards live (``RCFD_CACHE``)."""
    root = os.environ.get("RCFD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rcfd"
    )
    return Path(root)


def package_dir(package: str, pip_name: str) -> Path:
    """Directory of an installed data/model package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RcfdError(
            f"package '{pip_name}' is not installed; install it with "
            f"`pip install --no-deps {pip_name}` (or run `make setup`)"
        )
    return Path(list(spec.submodule_search_locations)[0])
