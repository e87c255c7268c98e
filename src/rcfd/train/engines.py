"""What trains the policy (``train.engine``) and what each engine can run; the TRL engine itself is
:mod:`rcfd.train.trl_engine` (imported only when used: config validation must not pull in TRL)."""

from __future__ import annotations

from ..errors import RcfdError
from .objectives import KL, RCfD, RCfDBatch, Reward, Weighted

ENGINE_OBJECTIVES = (Reward.name, KL.name, Weighted.name, RCfD.name, RCfDBatch.name)


def check_trl_engine(config) -> None:
    """One line naming the field for what GRPOTrainer cannot run as rcfd means it."""
    t, o, g = config.train, config.objective, config.generation
    fix = "or set train.engine=rcfd"
    checks = [
        (o.name in ENGINE_OBJECTIVES, f"train.engine=trl runs objective.name in {', '.join(ENGINE_OBJECTIVES)}, "
                                      f"got '{o.name}'; choose one of them {fix}"),
        (t.num_generations >= 2, "train.engine=trl runs GRPO, whose baseline is the prompt's other completions: "
                                 f"set train.num_generations >= 2 (got {t.num_generations}) {fix}"),
        (t.advantage in ("rloo", "group"), f"train.engine=trl estimates advantages with GRPO's group baseline: set "
                                           f"train.advantage=rloo or group (got '{t.advantage}') {fix}"),
        (o.name != KL.name or o.beta_end in (None, o.beta), "train.engine=trl keeps TRL's β fixed: drop "
                                                          f"objective.beta_end (got {o.beta_end}) {fix}"),
        (t.optimizer in ("adam", "adamw"), f"train.engine=trl trains with AdamW: set train.optimizer=adamw "
                                           f"(got '{t.optimizer}') {fix}"),
        (t.optimizer == "adamw" or t.weight_decay == 0, "train.optimizer=adam has no weight decay: set "
                                                         "train.weight_decay=0 or train.optimizer=adamw"),
        (not t.load_best_model_at_end, "train.engine=trl keeps the last step's weights: set "
                                       f"train.load_best_model_at_end=false {fix}"),
        (not t.skip_nonfinite, f"train.engine=trl stops on a non-finite reward: set train.skip_nonfinite=false {fix}"),
        (not g.stop_at_newline, "train.engine=trl ends completions at EOS only (TRL masks after its EOS): set "
                                f"generation.stop_at_newline=false {fix}"),
        (g.backend == "transformers", "train.engine=trl samples with TRL's own generation: set "
                                      "generation.backend=transformers (TRL's vLLM is GRPOConfig's use_vllm) " + fix),
    ]
    for ok, message in checks:
        if not ok:
            raise RcfdError(message)
