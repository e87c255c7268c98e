"""The names a config can choose from, each registered once with what it means.

Config validation, error messages, ``--help`` text and docs/reference/config.md read these tables; the
implementing modules key their implementations by the same names (``rcfd.rewards.BUILDERS``,
``rcfd.train.advantages.ESTIMATORS``, ``rcfd.train.tracking.BUILDERS``), and a test checks that the two
agree. The objectives keep their own registry beside their classes (``rcfd.train.objectives.OBJECTIVES``).
"""

from __future__ import annotations

from .errors import RcfdError

PAPER_OBJECTIVE = "rcfd"  # the paper's objective (rcfd.train.objectives.RCfD), named here so plans need no torch


class Registry(dict):
    """{name: description} for one config field, with the error a wrong name gets."""

    def __init__(self, kind: str, field: str, entries: dict[str, str], extra: str = ""):
        super().__init__(entries)
        self.kind = kind  # what a name is, for error messages: "reward", "objective", ...
        self.field = field
        self.extra = extra  # what else the field accepts besides the names (e.g. module:function)

    def check(self, name: str) -> None:
        if name not in self:
            also = f" or {self.extra}" if self.extra else ""
            raise RcfdError(f"unknown {self.kind} '{name}' in {self.field}; choose one of {', '.join(self)}{also}")

    def markdown(self) -> str:
        rows = [f"| `{name}` | {text} |" for name, text in self.items()]
        extra = [f"| {self.extra} | |"] if self.extra else []
        return "\n".join([f"| `{self.field}` | meaning |", "|---|---|", *rows, *extra])


REWARDS = Registry("reward", "reward.names", {
    "loglik": "average per-token log-likelihood of the completion under the frozen base model (use case 1)",
    "loglik-spread": "extension: standard deviation of the completion's per-token log-likelihoods (calibrated "
                     "with `loglik`, a loop cannot match the demonstrations on average)",
    "length": "−(completion tokens)",
    "repetition": "extension: share of the completion's tokens that repeat an earlier token of it (calibrated, "
                  "the texts repeat themselves as much as the demonstrations; a loop cannot match)",
    "repetition-4": "extension: share of the completion's 4-grams that repeat an earlier 4-gram of it (rare in "
                    "human text: for `objective.per_sample`, charging each looping text)",
    "repeat-mass": "extension: the frozen base model's mean probability, per completion token, of a token that "
                   "would repeat a bigram the completion already wrote (dense where repeats are rare)",
    "sentiment": "positive logit of the TF-IDF + logistic-regression classifier trained on the packaged IMDB "
                 "reviews (`rcfd reward-model train`; `reward.sentiment_model`)",
    "vader": "VADER compound sentiment",
    "classifier": "a sequence classifier's logit (`reward.classifier_model`, `reward.classifier_label`)",
    "similarity": "cosine similarity of sentence embeddings of prompt and completion (`reward.embedding_model`)",
    "reward-model": "a reward model's scalar head on prompt + completion (`reward.reward_model`)",
}, extra="a callable `module:function` with TRL's reward signature")

ENGINES = Registry("engine", "train.engine", {
    "rcfd": "rcfd's own loop (rcfd.train.trainer): CPU fast paths, every objective and option",
    "trl": "TRL's GRPOTrainer on the same config and run directory (GPU: its vLLM, DeepSpeed, FSDP)",
})

ADVANTAGES = Registry("estimator", "train.advantage", {
    "whiten": "the paper's: (obj − batch mean) / batch std",
    "rloo": "leave-one-out: obj_i − mean of the prompt's other completions",
    "group": "GRPO's: (obj − group mean) / group std",
})

LOSS_TYPES = Registry("loss type", "train.loss_type", {
    "grpo": "each completion's loss is the mean over its tokens (GRPO's; short completions weigh more per token)",
    "dr_grpo": "each completion's loss is the sum over its tokens / generation.max_new_tokens (Dr. GRPO's; "
               "the policy gradient of log π(y), with no weight that depends on the completion's length)",
})

LR_SCHEDULERS = Registry("scheduler", "train.lr_scheduler", {
    "linear": "decay to 0 over train.steps (the transformers/TRL default)",
    "constant": "the same rate at every step (after any warm-up)",
})

OPTIMIZERS = Registry("optimizer", "train.optimizer", {
    "adamw": "AdamW (decoupled weight decay; the transformers/TRL default)",
    "adam": "Adam (weight decay added to the gradient)",
    "sgd": "plain SGD with `train.momentum` (steps in proportion to the gradient)",
})

TARGETS = Registry("target", "objective.target", {
    "demo": "R(x, y_demo) of the prompt's own demonstration (the paper's)",
    "predicted": "extension: a target model's prediction of R(x, y_demo) from the prompt, for every prompt",
    "mixed": "extension: the demonstration's reward where the prompt has one, the prediction elsewhere",
    "mean": "extension: the mean of R(x, y_demo) over the training prompts that have a demonstration",
})

BACKENDS = Registry("backend", "generation.backend", {
    "transformers": "transformers' generate (CPU or GPU; evaluation always uses it)",
    "vllm": "a vLLM engine following the policy (CUDA GPU, `pip install 'rcfd[vllm]'`)",
})

TRACKERS = Registry("tracker", "train.report_to", {
    "tensorboard": "TensorBoard event files under OUT/tensorboard (`pip install 'rcfd[tracking]'`)",
    "wandb": "Weights & Biases, project 'rcfd' (`pip install wandb`)",
})

ALL = (REWARDS, ENGINES, ADVANTAGES, LOSS_TYPES, LR_SCHEDULERS, OPTIMIZERS, TARGETS, BACKENDS, TRACKERS)
