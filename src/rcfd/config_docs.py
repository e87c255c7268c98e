"""docs/reference/config.md and `rcfd config --show`: the config's documentation, generated from its
dataclasses, the registries and what the presets and the demo plan set."""

from __future__ import annotations

from pathlib import Path

import yaml

from .config import Config, _yaml_value, field_docs, field_groups, sections
from .registry import ALL as REGISTRIES


# Fields that no preset or demo run sets and that stay all the same: the knobs users of TRL-style trainers
# expect (sampling, optimizer, PPO, checkpoints, logging), where a model or column lives, and caps.
STANDARD_KNOBS = {
    "model.lora_dropout", "data.split_seed", "data.chosen_column", "data.rejected_column",
    "reward.sentiment_model", "reward.embedding_model", "objective.target_model",
    "generation.temperature", "generation.top_p", "generation.backend", "generation.vllm_gpu_memory_utilization",
    "train.engine", "train.warmup_steps", "train.optimizer", "train.momentum", "train.adam_epsilon", "train.weight_decay",
    "train.max_grad_norm", "train.ppo_epochs", "train.clip_eps", "train.loss_type", "train.eval_prompts",
    "train.seed", "train.threads", "train.keep_checkpoints", "train.sample_every", "train.skip_nonfinite",
    "train.report_to", "eval.bins", "eval.smoothing",
}


def field_uses() -> dict[str, str]:
    """{section.field: who sets it}: the presets (src/rcfd/configs), the demo plan's runs, or 'standard knob'."""
    from .plans.demo import RUNS

    users: dict[str, list[str]] = {}
    for path in sorted((Path(__file__).parent / "configs").glob("*.yaml")):
        for section, values in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).items():
            for key in values or {}:
                users.setdefault(f"{section}.{key}", []).append(path.stem)
    for run in RUNS.values():
        for override in run.overrides:
            users.setdefault(override.split("=")[0], []).append(f"demo run {run.name}")
    return {key: ", ".join(dict.fromkeys(names)) for key, names in users.items()} | {
        key: "standard knob" for key in STANDARD_KNOBS if key not in users}


def all_registries() -> tuple:
    """Every choice list: the registry's and the objectives'."""
    from .train.objectives import OBJECTIVES

    return (OBJECTIVES, *REGISTRIES)



def config_reference() -> str:
    """docs/reference/config.md: every field with its default and documentation."""
    lines = ["# Config reference", "",
             "Generated from the dataclasses in `src/rcfd/config.py` (by `src/rcfd/config_docs.py`, `rcfd config --reference`) "
             "(a test fails when this file and the code differ). Set any field in a YAML file or with "
             "`--set section.field=value`; `rcfd config --show` prints a resolved config with these notes. "
             "'set by' names the presets (`src/rcfd/configs/`) and `rcfd demo` runs that set a field; a "
             "standard knob is one no preset needs that users of TRL-style trainers expect.", ""]
    uses = field_uses()
    for name, cls in sections():
        lines += [f"## `{name}`", ""]
        doc = " ".join((cls.__doc__ or "").split())
        if doc and not doc.startswith(f"{cls.__name__}("):
            lines += [doc, ""]
        docs, defaults = field_docs(cls), cls()
        for title, names in field_groups(cls):
            lines += ([f"### {title}", ""] if title else []) + ["| field | default | set by | meaning |",
                                                                  "|---|---|---|---|"]
            for key in names:
                meaning = docs.get(key, "").replace("|", "\\|")
                lines.append(f"| `{name}.{key}` | `{_yaml_value(getattr(defaults, key))}` | "
                             f"{uses.get(f'{name}.{key}', '')} | {meaning} |")
            lines.append("")
    lines += ["## Choices", "", "The names these fields accept (`src/rcfd/registry.py`; the objectives' own in "
              "`src/rcfd/train/objectives.py`).", ""]
    for registry in all_registries():
        lines += [registry.markdown(), ""]
    return "\n".join(lines)


def annotated_yaml(config: Config) -> str:
    """A resolved config as YAML with each field's documentation as a comment above it."""
    import textwrap

    data = config.to_dict()
    out = []
    for name, cls in sections():
        out.append(f"{name}:")
        docs = field_docs(cls)
        for key, value in data[name].items():
            for line in textwrap.wrap(docs.get(key, ""), 96):
                out.append(f"  # {line}")
            out.append(f"  {key}: {_yaml_value(value)}")
        out.append("")
    return "\n".join(out)
