"""The names a config can choose from, each registered once with what it means.

Config validation, error messages, ``--help`` text and docs/reference/config.md read these tables; the
implementing modules key their implementations by the same names (``rcfd.rewards.BUILDERS``,
``rcfd.train.objectives.OBJECTIVE_FUNCTIONS``, ``rcfd.train.objectives.ESTIMATORS``, ``rcfd.train.objectives.SCALES``,
``rcfd.train.tracking.BUILDERS``), and a test checks that the two agree. Kept free of torch so that
``import rcfd`` and config validation stay fast.
"""

from __future__ import annotations

from .errors import RcfdError


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
    "loglik-head": "extension: mean log-likelihood of the completion's first half (with `loglik-tail`: "
                   "each half calibrated)",
    "loglik-tail": "extension: mean log-likelihood of the completion's second half",
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

OBJECTIVES = Registry("objective", "objective.name", {
    "reward": "R summed over rewards (β = 0: plain reward maximization)",
    "kl": "R − β·Σ_t log π_θ/π_0 (`objective.beta`, `objective.beta_end`)",
    "rcfd": "the paper's RCfD, −(R(x,y) − R(x,y_demo))² per sample; several rewards: each term whitened, summed",
    "rcfd-mean": "extension: −(E_π R(x,·) − R(x,y_demo))² per prompt, leave-one-out estimate "
                 "(needs train.num_generations ≥ 2, train.advantage=rloo)",
    "rcfd-batch": "extension: −(mean over prompts of E_π R − mean of R(x,y_demo))², the batch's mean reward "
                  "calibrated (needs train.num_generations ≥ 2, train.advantage=rloo)",
    "weighted": "R_1 + α·(R_2 + … + R_K), the paper's R_quality + α·R_length baseline (`objective.alpha`)",
})

ADVANTAGES = Registry("estimator", "train.advantage", {
    "whiten": "the paper's: (obj − batch mean) / batch std",
    "rloo": "leave-one-out: obj_i − mean of the prompt's other completions (then `train.advantage_scale`)",
    "group": "GRPO's: (obj − group mean) / group std",
    "best-of-k": "extension: 1 for each prompt's best completion by the objective, 0 for the others "
                 "(supervised fine-tuning on the best of k, RAFT)",
})

ADVANTAGE_SCALES = Registry("scale", "train.advantage_scale", {
    "none": "leave the advantage as it is",
    "batch": "divide by this batch's std of the advantage",
    "first": "divide by the first step's std of the advantage, then frozen",
})

LOSS_TYPES = Registry("loss type", "train.loss_type", {
    "grpo": "each completion's loss is the mean over its tokens (GRPO's; short completions weigh more per token)",
    "dr_grpo": "each completion's loss is the sum over its tokens / generation.max_new_tokens (Dr. GRPO's; "
               "the policy gradient of log π(y), with no weight that depends on the completion's length)",
})

STOP_CREDITS = Registry("credit", "train.stop_credit", {
    "sequence": "the stop token is credited like any token, with the completion's advantage",
    "branch": "each decision to go on is compared with stopping there, the prefix scored as a finished "
              "completion (rewards computed on every prefix)",
    "branch-baseline": "as 'branch', and each other token's advantage is the completion's objective minus "
                       "that of stopping just before it (a baseline that depends only on the prefix)",
})

TRACKERS = Registry("tracker", "train.report_to", {
    "tensorboard": "TensorBoard event files under OUT/tensorboard (`pip install 'rcfd[tracking]'`)",
    "wandb": "Weights & Biases, project 'rcfd' (`pip install wandb`)",
})

ALL = (REWARDS, OBJECTIVES, ADVANTAGES, ADVANTAGE_SCALES, LOSS_TYPES, STOP_CREDITS, TRACKERS)
