"""docs/reference/ matches the code: every logged metric is documented, and config.md is what the
dataclasses generate today."""

import dataclasses
import json
import re
from pathlib import Path

from rcfd.cli import main
from rcfd.config import TrainConfig, field_docs
from rcfd.config_docs import config_reference

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference"


def documented_names() -> set[str]:
    return set(re.findall(r"`([a-z_0-9{}/]+)`", (REFERENCE / "metrics.md").read_text(encoding="utf-8")))


def generic(key: str, reward_names) -> str:
    """rewards/loglik/mean -> rewards/{name}/mean."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] in ("rewards", "eval") and parts[1] in reward_names:
        return f"{parts[0]}/{{name}}/{parts[2]}"
    return key


def test_every_logged_metric_is_documented(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--task", "tiny", "--out", str(run), "--quiet", "--set", "train.eval_every=2",
                 "--set", "train.eval_prompts=4", "--set", "reward.names=[loglik,length]"]) == 0
    names = ["loglik", "length"]
    logged = {k for line in (run / "metrics.jsonl").read_text().splitlines() for k in json.loads(line)}
    assert {"eval/loglik/reward_z", "eval/length/reward_z"} <= logged  # each reward's curve when there are several
    logged |= set(json.loads((run / "summary.json").read_text()))
    assert main(["eval", str(run), "--quiet", "--out", str(tmp_path / "eval.json")]) == 0
    logged |= set(json.loads((tmp_path / "eval.json").read_text()))
    missing = sorted({generic(k, names) for k in logged} - documented_names())
    assert not missing, f"add to docs/reference/metrics.md: {missing}"


def test_config_reference_is_current():
    saved = (REFERENCE / "config.md").read_text(encoding="utf-8")
    assert saved.strip() == config_reference().strip(), \
        "docs/reference/config.md is stale; regenerate it with `rcfd config --reference > docs/reference/config.md`"


def test_every_config_field_has_documentation():
    from rcfd.config import sections

    for name, cls in sections():
        docs = field_docs(cls)
        undocumented = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not undocumented, f"{name}: document {undocumented} in src/rcfd/config.py"
    assert "Completions sampled per prompt" in field_docs(TrainConfig)["num_generations"]


def test_cli_reference_is_current():
    from rcfd.cli import cli_reference

    saved = (REFERENCE / "cli.md").read_text(encoding="utf-8")
    assert saved.strip() == cli_reference().strip(), \
        "docs/reference/cli.md is stale; regenerate it as its first lines say"


def test_docs_and_code_do_not_point_at_work_sessions():
    root = REFERENCE.parent.parent
    places = [root / "src", root / "docs"]
    hits = []
    for place in places:
        for path in place.rglob("*"):
            if path.is_dir() or "notebook" in path.parts or "egg-info" in str(path) or path.suffix == ".pyc":
                continue
            text = path.read_text(encoding="utf-8", errors="ignore")
            hits += [f"{path.relative_to(root)}: {m}" for m in re.findall(r"[^\n]{0,30}\bsessions?\b[^\n]{0,30}", text, re.I)]
    assert not hits, hits


def test_readme_stays_short():
    readme = REFERENCE.parent.parent / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 150
    results = REFERENCE.parent / "results.md"
    assert len(results.read_text(encoding="utf-8").splitlines()) <= 250
    from rcfd.tasks import TASKS

    headings = [line for line in results.read_text(encoding="utf-8").splitlines() if line.startswith("## ")]
    assert all(any(f"`{name}`" in h for h in headings) for name in TASKS)  # one section per preset


def test_every_registered_name_has_its_implementation():
    from rcfd import registry
    from rcfd.train import advantages, objectives, tracking
    from rcfd.rewards import BUILDERS

    assert set(BUILDERS) == set(registry.REWARDS)
    assert set(objectives.CLASSES) == set(objectives.OBJECTIVES)
    assert set(advantages.ESTIMATORS) == set(registry.ADVANTAGES)
    assert set(tracking.BUILDERS) == set(registry.TRACKERS)
    reference = (REFERENCE / "config.md").read_text(encoding="utf-8")
    for table in (*registry.ALL, objectives.OBJECTIVES):
        assert all(f"| `{name}` |" in reference for name in table)


def test_every_train_field_is_in_exactly_one_group():
    groups = [name for names in TrainConfig.GROUPS.values() for name in names]
    assert sorted(groups) == sorted(f.name for f in dataclasses.fields(TrainConfig))


def test_every_config_field_is_set_by_a_preset_or_the_demo_plan_or_is_a_standard_knob():
    from rcfd.config import sections
    from rcfd.config_docs import STANDARD_KNOBS, field_uses

    uses = field_uses()
    fields = {f"{name}.{f.name}" for name, cls in sections() for f in dataclasses.fields(cls)}
    assert not sorted(fields - set(uses)), "set it in a preset or a demo run, or list it in STANDARD_KNOBS"
    assert STANDARD_KNOBS <= fields  # no stale name
