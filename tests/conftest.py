import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("RCFD_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "test-rcfd"))

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "src" / "rcfd" / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_path():
    from rcfd.models import build_tiny_llama

    return str(build_tiny_llama())


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_path):
    from rcfd.models import load_tokenizer

    return load_tokenizer(tiny_path)


@pytest.fixture()
def tiny_config():
    from rcfd.config import load_config

    return lambda *overrides: load_config(TINY, list(overrides))
