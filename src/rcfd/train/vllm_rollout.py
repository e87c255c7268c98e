"""Optional vLLM generation backend (``generation.backend: vllm``, extra ``rcfd[vllm]``, CUDA GPU).

vLLM samples the training rollouts; the policy trains in PyTorch on the same GPU. Before each rollout
the current weights go to the engine: with LoRA the adapter is saved and handed over as a new
``LoRARequest`` (vLLM's documented multi-LoRA path), with full fine-tuning the state dict is loaded
into the engine's model in place (``LLM.apply_model``, which needs the engine in this process:
``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here before vLLM is imported).

The sampling policy's token log-probs ("old" for PPO) are recomputed with the PyTorch policy rather
than taken from vLLM, whose kernels and logit processing differ slightly: the PPO ratio then starts
at exactly 1. Evaluation always generates with transformers, so figures compare across backends.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from ..errors import RcfdError
from .logprobs import Rollout, decode_completions
from .rollout import completion_mask, eos_token_ids


def import_vllm():
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError:
        raise RcfdError("generation.backend=vllm needs vLLM: pip install 'rcfd[vllm]' on a Linux machine with "
                        "a CUDA GPU, or set generation.backend=transformers") from None
    return vllm


def rollout_from_token_lists(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                             eos_ids: set[int], max_new_tokens: int) -> Rollout:
    """Pad token-id lists into a Rollout: prompts left-padded, completions right-padded and cut after
    the first EOS, exactly as the transformers path lays them out."""
    bsz = len(prompt_ids)
    p_len = max(len(p) for p in prompt_ids)
    c_len = max(1, min(max_new_tokens, max((len(c) for c in completion_ids), default=1)))
    prompts = torch.full((bsz, p_len), pad_id, dtype=torch.long, device="cpu")
    p_mask = torch.zeros((bsz, p_len), dtype=torch.long, device="cpu")
    completions = torch.full((bsz, c_len), pad_id, dtype=torch.long, device="cpu")
    filled = torch.zeros((bsz, c_len), dtype=torch.bool, device="cpu")
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        prompts[i, p_len - len(p):] = torch.tensor(p, dtype=torch.long, device="cpu")
        p_mask[i, p_len - len(p):] = 1
        c = list(c)[:c_len]
        if c:
            completions[i, :len(c)] = torch.tensor(c, dtype=torch.long, device="cpu")
            filled[i, :len(c)] = True
    mask = completion_mask(completions, eos_ids) * filled.long()
    completions = completions.masked_fill(mask == 0, pad_id)
    return Rollout(prompts, p_mask, completions, mask)


class VLLMGenerator:
    """Samples one completion per prompt with a vLLM engine that follows the training policy."""

    def __init__(self, policy, tokenizer, model_path: str, model_cfg, gen_cfg, seed: int):
        self.vllm = import_vllm()
        self.tokenizer, self.gen_cfg, self.lora = tokenizer, gen_cfg, model_cfg.lora
        self.eos = eos_token_ids(policy, tokenizer, gen_cfg.stop_at_newline)
        kwargs = dict(enable_lora=True, max_lora_rank=model_cfg.lora_r, max_loras=1) if self.lora else {}
        self.llm = self.vllm.LLM(model=model_path, seed=seed, dtype="float32",
                                 gpu_memory_utilization=gen_cfg.vllm_gpu_memory_utilization, **kwargs)
        self._adapters = tempfile.TemporaryDirectory(prefix="rcfd-vllm-")
        self._version = 0
        self.lora_request = None

    def sync(self, policy) -> None:
        """Push the policy's current weights to the engine."""
        self._version += 1
        if self.lora:
            from vllm.lora.request import LoRARequest

            path = Path(self._adapters.name) / f"v{self._version}"
            policy.save_pretrained(path)
            self.lora_request = LoRARequest(f"policy-v{self._version}", self._version, str(path))
        else:
            weights = [(name, p.detach()) for name, p in policy.state_dict().items()]
            self.llm.apply_model(lambda model: model.load_weights(weights))
            self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights

    def __call__(self, policy, prompts: list[str], max_new_tokens: int | None = None):
        """Same return shape as :func:`rcfd.train.rollout.generate`: (rollout, texts, None)."""
        self.sync(policy)
        max_new = max_new_tokens or self.gen_cfg.max_new_tokens
        params = self.vllm.SamplingParams(temperature=self.gen_cfg.temperature, top_p=self.gen_cfg.top_p,
                                          max_tokens=max_new, stop_token_ids=sorted(self.eos),
                                          min_tokens=min(self.gen_cfg.min_new_tokens, max_new))
        prompt_ids = [self.tokenizer(p)["input_ids"] for p in prompts]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params,
                                    lora_request=self.lora_request, use_tqdm=False)
        completions = [list(o.outputs[0].token_ids) for o in outputs]
        rollout = rollout_from_token_lists(prompt_ids, completions, self.tokenizer.pad_token_id, self.eos, max_new)
        return rollout, decode_completions(self.tokenizer, rollout), None
