"""The code stays readable in one sitting: short functions, a short trainer, objectives named in one place."""

import ast
from pathlib import Path

import rcfd
from rcfd.train.objectives import OBJECTIVES

PACKAGE = Path(rcfd.__file__).parent
MAX_FUNCTION_LINES = 60
MAX_TRAINER_LINES = 350


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield node.end_lineno - node.lineno + 1, f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"


def test_no_function_is_longer_than_the_limit():
    longest = sorted(_functions(), reverse=True)[:5]
    print("longest functions:", *(f"{n} lines  {where}" for n, where in longest), sep="\n  ")
    assert longest[0][0] <= MAX_FUNCTION_LINES, f"split {longest[0][1]} ({longest[0][0]} lines)"


def test_the_trainer_module_stays_short():
    lines = len((PACKAGE / "train" / "trainer.py").read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_TRAINER_LINES


def _compared_strings(tree, text):
    """String constants compared (==, !=, in, not in; alone or in a tuple, list or set) with an expression
    that names an objective."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and "objective" in ast.get_source_segment(text, node):
            for side in (node.left, *node.comparators):
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                for item in items:
                    if isinstance(item, ast.Constant) and isinstance(item.value, str):
                        yield item.lineno, item.value


def test_no_objective_is_named_outside_its_own_module_and_the_presets():
    """Code asks an objective what it needs (``needs_targets``, ``check``, ...) instead of testing its name;
    an ``objective.name=X`` override belongs to a preset or the demo plan."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "train" / "objectives.py" or path.parent.name == "plans":  # plans: the demo's presets
            continue
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        offenders += [f"{path.name}:{line} compares with {value!r}" for line, value in _compared_strings(tree, text)
                      if value in OBJECTIVES]
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        offenders += [f"{path.name}:{n.lineno} sets {n.value}" for n in ast.walk(tree)
                      if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
                      and n.value.startswith("objective.name=")]
    assert not offenders, offenders
