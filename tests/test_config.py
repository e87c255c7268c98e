import pytest

from rcfd.config import Config, load_config, make_config, parse_override
from rcfd.errors import RcfdError


def test_defaults_validate():
    c = make_config({})
    assert isinstance(c, Config)
    assert c.model.lora_r == 32 and c.model.lora_alpha == 64 and c.train.clip_eps == 0.3


def test_overrides_are_typed():
    c = make_config({}, ["train.steps=7", "objective.name=kl", "objective.beta_end=0.3", "reward.names=loglik"])
    assert c.train.steps == 7 and c.objective.name == "kl" and c.objective.beta_end == 0.3
    assert c.reward.names == ["loglik"]
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])


@pytest.mark.parametrize(
    "data,overrides,needle",
    [
        ({"train": {"stpes": 3}}, [], "did you mean 'steps'"),
        ({"trian": {}}, [], "did you mean 'train'"),
        ({}, ["objective.name=ppo"], "unknown objective 'ppo'"),
        ({}, ["train.steps=abc"], "train.steps' must be int"),
        ({}, ["train.steps=0"], "train.steps must be >= 1"),
        ({}, ["train.clip_eps=2"], "train.clip_eps must be in (0, 1)"),
        ({}, ["train.steps=4", "train.warmup_steps=4"], "train.warmup_steps must be below train.steps (4)"),
        ({}, ["reward.names=nonsense"], "unknown reward 'nonsense'"),
        ({}, ["reward.calibrate_also=nonsense"], "unknown reward 'nonsense'"),
        ({}, ["reward.names=loglik", "reward.calibrate_also=loglik"], "name a reward twice (['loglik', 'loglik'])"),
        ({"model": 3}, [], "section 'model.' must be a mapping"),
        ({}, ["train.batch_size=10", "train.num_minibatches=3"], "divisible"),
        ({}, ["novalue"], "must look like key=value"),
        ({}, ["train.batch_size=10", "train.num_generations=4"], "train.batch_size (10) counts completions and must be "
                                                                "divisible by train.num_generations (4)"),
        ({}, ["train.batch_size=16", "train.num_minibatches=4", "train.num_generations=8"], "minibatches hold whole groups"),
        ({}, ["train.advantage=ppo"], "unknown estimator 'ppo' in train.advantage; choose one of whiten, rloo, group"),
        ({}, ["train.advantage=rloo"], "set train.num_generations >= 2"),
        ({}, ["train.loss_type=dapo"], "unknown loss type 'dapo' in train.loss_type; choose one of grpo, dr_grpo"),
        ({}, ["objective.name=rcfd-mean"], "objective.name=rcfd-mean needs train.num_generations >= 2"),
        ({}, ["objective.name=rcfd-mean", "train.num_generations=2", "train.advantage=group"],
         "set train.advantage=rloo"),
        ({}, ["objective.name=rcfd-batch"], "objective.name=rcfd-batch needs train.num_generations >= 2"),
        ({}, ["train.optimizer=lion"], "unknown optimizer 'lion' in train.optimizer; choose one of adamw, adam, sgd"),
        ({}, ["train.optimizer=sgd", "train.momentum=1.0"], "train.momentum must be in [0, 1)"),
        ({}, ["eval.samples_per_prompt=0"], "eval.samples_per_prompt must be >= 1"),
    ],
)
def test_bad_config_names_the_field(data, overrides, needle):
    with pytest.raises(RcfdError) as info:
        make_config(data, overrides)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(RcfdError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(RcfdError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(RcfdError, match="must hold a mapping"):
        load_config(listy)


def test_float_fields_accept_exponents_without_a_dot():
    # YAML 1.1 reads "3e-3" as a string; users write it that way on the command line and in files.
    assert make_config(overrides=["train.learning_rate=3e-3"]).train.learning_rate == 0.003
    with pytest.raises(RcfdError, match="train.learning_rate' must be float"):
        make_config(overrides=["train.learning_rate=fast"])


REMOVED = [  # (override, what the error names)
    ("objective.gap_memory=4", "objective.gap_memory' was removed"),
    ("objective.target_feedback=0.5", "objective.target_feedback' was removed"),
    ("objective.reward_scale=demo", "objective.reward_scale' was removed"),
    ("objective.demo_mean=batch", "objective.demo_mean' was removed"),
    ("train.advantage_scale=first", "train.advantage_scale' was removed"),
    ("train.average_weights=0.5", "train.average_weights' was removed"),
    ("train.stop_credit=branch", "train.stop_credit' was removed"),
    ("train.max_step_kl=0.5", "train.max_step_kl' was removed"),
    ("train.max_step_kl_halvings=3", "train.max_step_kl_halvings' was removed"),
    ("train.advantage=best-of-k", "train.advantage=best-of-k was removed"),
    ("reward.names=[loglik-head]", "reward.names=loglik-head was removed"),
    ("reward.calibrate_also=[loglik-tail]", "reward.calibrate_also=loglik-tail was removed"),
]


@pytest.mark.parametrize("override, message", REMOVED)
def test_a_removed_option_gets_one_line_naming_it_and_where_its_record_lives(override, message):
    from rcfd.config import REMOVED_FIELDS, REMOVED_VALUES

    with pytest.raises(RcfdError) as info:
        make_config({}, [override])
    text = str(info.value)
    assert message in text and "docs/notebook/investigation-log.md" in text and "\n" not in text
    tested = {item.split("=")[0] for item, _ in REMOVED}
    assert set(REMOVED_FIELDS) <= tested and {field for field, _ in REMOVED_VALUES} <= tested


@pytest.mark.parametrize("field", ["objective.gap_memory", "train.stop_credit", "train.average_weights"])
def test_a_removed_field_at_todays_behaviour_still_loads_an_old_run_config(field):
    from rcfd.config import REMOVED_FIELDS

    section, key = field.split(".")
    config = make_config({section: {key: REMOVED_FIELDS[field][0]}})
    assert not hasattr(getattr(config, section), key)
