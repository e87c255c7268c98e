"""Held-out evaluation that makes over-optimization visible.

For a policy (or the base model) on the evaluation prompts, ``eval.samples_per_prompt`` completions
each: reward mean/std, alignment with the demonstrations' reward distribution, Wasserstein-1,
length, diversity (distinct-1/2, repeated 4-grams), naturalness (mean per-token log-likelihood under
the frozen base model), a sampled KL to the reference, and the reference log-likelihood per
generation position up to a longer length than training used (paper, Figure 2). The noise of the
two calibration figures is stated beside them: ``reward_mean_se`` and ``reward_gap_se`` (standard
errors of the mean reward and of its gap to the demonstrations', in demonstration std) and
``alignment_floor`` (the alignment two samples of one distribution score at these sample sizes).
"""

from __future__ import annotations

import contextlib

import torch
from tqdm.auto import tqdm

from . import metrics as M
from ..train.logprobs import Rollout, encode_pairs, reference_context, reference_logprobs
from ..train.rollout import generate, group_rows


def _position_loglik(policy, reference, rollout: Rollout, micro) -> list[list[float]]:
    ref = reference_logprobs(policy, reference, rollout, micro).cpu()
    return [row[m.bool()].tolist() for row, m in zip(ref, rollout.completion_mask.cpu())]


def reward_fields(rewards_names, values: torch.Tensor, demo_values: torch.Tensor, bins, smoothing,
                  per_prompt: int = 1) -> dict:
    """Per-reward and aggregate reward statistics against the demonstrations (``values`` holds
    ``per_prompt`` consecutive samples per prompt, ``demo_values`` one row per prompt)."""
    out = {}
    aligns, wass = [], []
    for k, name in enumerate(rewards_names):
        mean, std = M.mean_std(values[:, k])
        dmean, dstd = M.mean_std(demo_values[:, k])
        align = M.histogram_kl(demo_values[:, k], values[:, k], bins, smoothing)
        w = M.wasserstein(values[:, k], demo_values[:, k])
        aligns.append(align)
        wass.append(w)
        out[f"rewards/{name}/mean"] = mean
        out[f"rewards/{name}/std"] = std
        out[f"rewards/{name}/demo_mean"] = dmean
        out[f"rewards/{name}/demo_std"] = dstd
        out[f"rewards/{name}/alignment"] = align
        out[f"rewards/{name}/wasserstein"] = w
        scale = dstd if dstd > 0 else float("nan")
        out[f"rewards/{name}/mean_se"] = M.mean_standard_error(values[:, k].tolist(), per_prompt) / scale
        out[f"rewards/{name}/gap_se"] = M.gap_standard_error(values[:, k].tolist(), demo_values[:, k].tolist(),
                                                             per_prompt) / scale
        out[f"rewards/{name}/alignment_floor"] = M.alignment_floor(demo_values[:, k].tolist(), len(demo_values),
                                                                   len(values), bins, smoothing)
    first = rewards_names[0]
    out.update(
        reward_mean=out[f"rewards/{first}/mean"], reward_std=out[f"rewards/{first}/std"],
        demo_reward_mean=out[f"rewards/{first}/demo_mean"], demo_reward_std=out[f"rewards/{first}/demo_std"],
        alignment=float(sum(aligns) / len(aligns)), wasserstein=float(sum(wass) / len(wass)),
        reward_mean_se=out[f"rewards/{first}/mean_se"], reward_gap_se=out[f"rewards/{first}/gap_se"],
        alignment_floor=float(sum(out[f"rewards/{n}/alignment_floor"] for n in rewards_names) / len(rewards_names)),
    )
    return out


def several_demos_fields(rewards_names, values: torch.Tensor, per_prompt: int, demo_values: torch.Tensor,
                         demo_counts: torch.Tensor, bins, smoothing) -> dict:
    """Reward statistics against every demonstration of each held-out prompt (datasets with several per
    prompt): the pooled distribution's alignment and Wasserstein-1, and per prompt, the Wasserstein-1 between
    its samples and its own demonstrations and the reward spread of each (means over prompts)."""
    counts = demo_counts.tolist()
    out = {"demos_per_prompt": float(demo_counts.float().mean())}
    for k, name in enumerate(rewards_names):
        v, d = values[:, k].tolist(), demo_values[:, k].tolist()
        out[f"rewards/{name}/alignment_all_demos"] = M.histogram_kl(demo_values[:, k], values[:, k], bins, smoothing)
        out[f"rewards/{name}/wasserstein_all_demos"] = M.wasserstein(v, d)
        out[f"rewards/{name}/wasserstein_per_prompt"] = M.per_prompt_wasserstein(v, per_prompt, d, counts)
        out[f"rewards/{name}/std_per_prompt"] = M.mean_group_std(v, [per_prompt] * (len(v) // per_prompt))
        out[f"rewards/{name}/demo_std_per_prompt"] = M.mean_group_std(d, counts)
    for key in ("alignment_all_demos", "wasserstein_all_demos", "wasserstein_per_prompt"):
        out[key] = float(sum(out[f"rewards/{n}/{key}"] for n in rewards_names) / len(rewards_names))
    return out


def diversity_fields(token_rows, demo_rows, per_prompt: int) -> dict:
    """Distinct-1/2 and repeated 4-grams of the completions and of the demonstrations, each pair cut to
    their common length. Pooled distinct-n falls as text is added, so with several samples per prompt it
    is computed on each replica (the j-th sample of every prompt: as much text as the demonstrations)
    and averaged over replicas. ``repeat_4_texts`` counts the completions (all samples) that repeat a 4-gram,
    ``demo_repeat_4_texts`` the demonstrations: how many events the repetition figures rest on."""
    sums: dict[str, float] = {}
    repeating = 0  # completions that repeat a 4-gram, counted over every replica (a total, not an average)
    for j in range(per_prompt):
        gen_cut, demo_cut = M.truncate_pairwise(token_rows[j::per_prompt], demo_rows)
        repeating += M.texts_repeating(gen_cut, 4)
        for key, value in (("distinct_1", M.distinct_n(gen_cut, 1)), ("demo_distinct_1", M.distinct_n(demo_cut, 1)),
                           ("distinct_2", M.distinct_n(gen_cut, 2)), ("demo_distinct_2", M.distinct_n(demo_cut, 2)),
                           ("repetition_4", M.repetition_n(gen_cut, 4)),
                           ("demo_repetition_4", M.repetition_n(demo_cut, 4)),
                           ("demo_repeat_4_texts", M.texts_repeating(demo_cut, 4))):
            sums[key] = sums.get(key, 0.0) + value
    return {**{key: value / per_prompt for key, value in sums.items()}, "repeat_4_texts": float(repeating)}


def naturalness(ref_logprobs: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Mean per-token log-likelihood of each completion under the frozen base model."""
    return M.sequence_means(ref_logprobs.tolist(), mask.bool().tolist())


def demo_reference(tokenizer, eval_ds, max_tokens: int) -> tuple[Rollout, list[list[int]]]:
    rollout = encode_pairs(tokenizer, eval_ds["prompt"], eval_ds["demonstration"], max_tokens)
    return rollout, rollout.completion_tokens()


@torch.no_grad()
def evaluate(policy, reference, tokenizer, eval_ds, rewards, demo_values, cfg, *, base: bool = False,
             seed: int = 0, desc: str = "eval", progress: bool = True, samples_per_prompt: int | None = None,
             curves: bool = True, every_demo: tuple | None = None, reference_metrics: bool = True) -> dict:
    """Metrics of the policy (``base=True``: of the reference model) on held-out prompts; ``curves=False``
    skips the long-generation log-likelihood curves (the quick evaluation during training), and
    ``reference_metrics=False`` the KL and naturalness, which take two passes of the reference model.
    ``every_demo``, (rewards of every demonstration, count per prompt) when prompts have several, adds
    :func:`several_demos_fields`."""
    gen, ev = cfg.generation, cfg.eval
    per_prompt = ev.samples_per_prompt if samples_per_prompt is None else samples_per_prompt
    unique_prompts = list(eval_ds["prompt"])
    prompts = group_rows(unique_prompts, per_prompt)
    context = reference_context(policy, reference) if base else contextlib.nullcontext()
    model = reference if (base and reference is not None) else policy
    torch.manual_seed(seed)  # same sampling noise for every model evaluated
    values, token_rows, kl_rows, lengths, texts_all, natural = [], [], [], [], [], []
    with context:
        for i in tqdm(range(0, len(prompts), ev.batch_size), desc=f"{desc}: sample", leave=False,
                       disable=not progress):
            batch = prompts[i:i + ev.batch_size]
            rollout, texts, logp = generate(model, tokenizer, batch, gen, want_logprobs=reference_metrics)
            ref = None
            if reference_metrics:
                # Scored in training-sized micro-batches: a 128-row forward holds 0.6 GB of logits at once.
                ref = reference_logprobs(policy, reference, rollout, cfg.train.micro_batch_size)
                kl_rows.append((logp - ref).sum(-1).float().cpu())
                natural += naturalness(ref, rollout.completion_mask)
            values.append(rewards(batch, texts, rollout=rollout, ref_logprobs=ref))
            lengths.append(rollout.lengths().float().cpu())
            texts_all += texts
            token_rows += rollout.completion_tokens()
        if curves:
            long_prompts = unique_prompts[: ev.long_prompts]
            long_rollout, _, _ = generate(model, tokenizer, long_prompts, gen, max_new_tokens=ev.long_tokens)
        demo_rollout, demo_rows = demo_reference(tokenizer, eval_ds, gen.max_new_tokens)
        if reference_metrics:
            demo_natural = naturalness(reference_logprobs(policy, reference, demo_rollout,
                                                          cfg.train.micro_batch_size), demo_rollout.completion_mask)
    values = torch.cat(values, 0)
    out = reward_fields(rewards.names, values, demo_values, ev.bins, ev.smoothing, per_prompt)
    if every_demo is not None:
        out.update(several_demos_fields(rewards.names, values, per_prompt, *every_demo, ev.bins, ev.smoothing))
    if reference_metrics:
        out.update(naturalness_fields(natural, demo_natural, kl_rows, base))
    out.update(
        samples_per_prompt=per_prompt, num_prompts=len(unique_prompts),
        mean_length=float(torch.cat(lengths).mean()),
        demo_mean_length=float(demo_rollout.lengths().float().mean()),
        **diversity_fields(token_rows, demo_rows, per_prompt),
        reward_samples=values.tolist(),
        demo_reward_samples=demo_values.tolist(),
        samples=sample_table(prompts[::per_prompt], texts_all[::per_prompt], values[::per_prompt, 0].tolist(), n=5),
    )
    if curves:
        out.update(
            loglik_by_position=M.mean_by_position(_position_loglik(policy, reference, long_rollout,
                                                                   cfg.train.micro_batch_size)),
            demo_loglik_by_position=demo_curve(policy, reference, tokenizer, eval_ds, cfg))
    return out


def naturalness_fields(natural, demo_natural, kl_rows, base: bool) -> dict:
    """Mean naturalness of the policy's and the demonstrations' texts, and the KL to the reference."""
    demo_mean, demo_std = M.mean_std(demo_natural)
    return {"naturalness": M.mean_std(natural)[0], "demo_naturalness": demo_mean, "demo_naturalness_std": demo_std,
            "kl_to_ref": float(torch.cat(kl_rows).mean()) if not base else 0.0}


@torch.no_grad()
def demo_curve(policy, reference, tokenizer, eval_ds, cfg) -> list[float]:
    """Reference log-likelihood per position of the (long) human continuations."""
    ds = eval_ds.select(range(min(cfg.eval.long_prompts, len(eval_ds))))
    rollout = encode_pairs(tokenizer, ds["prompt"], ds["long_demonstration"], cfg.eval.long_tokens)
    return M.mean_by_position(_position_loglik(policy, reference, rollout, cfg.train.micro_batch_size))


def sample_table(prompts, texts, values, n: int = 3) -> list[dict]:
    return [{"prompt": p, "completion": t, "reward": v} for p, t, v in list(zip(prompts, texts, values))[:n]]


def evaluate_components(components, config, *, base: bool = False, dataset=None, demo_values=None,
                        progress: bool = True) -> dict:
    """:func:`evaluate` on a run's components (:mod:`rcfd.train.components`): its held-out split unless
    ``dataset`` is given, the demonstrations' rewards computed (or read from the cache) unless given."""
    from ..rewards.demo_cache import demo_rewards, every_demo_rewards

    c = components
    dataset = c.eval_ds if dataset is None else dataset
    if demo_values is None:
        demo_values = demo_rewards(c.rewards, dataset, c.tokenizer, config.generation.max_new_tokens,
                                   desc="demonstration rewards (eval)", progress=progress)
    every_demo = None
    if "demonstrations" in dataset.column_names and max(map(len, dataset["demonstrations"]), default=0) > 1:
        every_demo = every_demo_rewards(c.rewards, dataset, c.tokenizer, config.generation.max_new_tokens,
                                        desc="every demonstration's reward (eval)", progress=progress)
    return evaluate(c.policy, c.reference, c.tokenizer, dataset, c.rewards, demo_values, config, base=base,
                    seed=config.train.seed, desc="base" if base else config.objective.name, progress=progress,
                    every_demo=every_demo)
