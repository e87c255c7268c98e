"""Task presets: a name, what it reproduces, and the packaged config that sets it up.

``rcfd tasks`` lists them; ``rcfd demo --task NAME`` and ``rcfd sweep --task NAME`` use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import packaged_config
from .errors import RcfdError


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    config: str  # name of a packaged config (src/rcfd/configs/NAME.yaml)
    demo_runs: tuple = ("beta0", "kl", "rcfd")  # what `rcfd demo --task NAME` trains (see rcfd.plans.demo.RUNS)

    @property
    def config_path(self) -> Path:
        return packaged_config(self.config)


TASKS = {t.name: t for t in [
    Task("wiki-continuation",
         "use case 1, offline: continue a Wikipedia extract; reward = average log-likelihood under the "
         "frozen SmolLM2-135M (packaged); demonstration = the human continuation", "wiki",
         demo_runs=("beta0", "rcfd")),  # the 20-minute budget goes to the two runs the finding is about
    Task("wiki-continuation-length",
         "use case 1 with two rewards, offline: log-likelihood and length (−tokens), for multi-reward "
         "RCfD and the weighted R_loglik + α·R_length baseline", "wiki-length"),
    Task("positive-reviews",
         "use case 2, offline: continue the first 10 tokens of a positive IMDB review (packaged); reward = "
         "positive logit of the sentiment classifier trained on the packaged IMDB reviews", "positive-reviews",
         demo_runs=("beta0", "rcfd")),  # as use case 1; `--runs beta0,kl,rcfd` adds the β baseline
    Task("wiki-description",
         "use case 3, offline: write the short description of a Wikipedia extract; rewards = MiniLM "
         "text–summary similarity and length; demonstration = the human description", "wiki-description",
         demo_runs=("quality", "rcfd", "alpha=0.003", "alpha=0.01", "alpha=0.03", "alpha=0.1")),
    Task("wiki-continuation-paper",
         "use case 1 at the paper's scale (GPU and internet): prompts of 64 tokens, up to 320 new, 500 "
         "rollouts per step, lr 5e-5, on a hub model (default LLaMA-2-7B)", "wiki-paper", demo_runs=("beta0", "rcfd")),
    Task("imdb-positive",
         "use case 2 as in the paper (needs internet): hub IMDB positive reviews, hub DistilBERT IMDB "
         "classifier's POSITIVE logit", "imdb-positive"),
    Task("tldr",
         "use cases 2b/3 as in the paper (needs internet): TL;DR posts, OpenAssistant DeBERTa reward model "
         "+ length, the human summary as demonstration", "tldr"),
    Task("tiny", "a tiny random Llama on Wikipedia extracts: seconds per run, for tests and trials", "tiny"),
]}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise RcfdError(f"unknown task '{name}'; choose one of {', '.join(TASKS)} (list them with `rcfd tasks`)")
    return TASKS[name]


def describe_tasks() -> str:
    width = max(len(n) for n in TASKS)
    return "\n".join(f"{t.name.ljust(width)}  {t.description}" for t in TASKS.values())
