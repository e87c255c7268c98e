"""The package's own imports form no cycle (module-level and inside functions alike), and
``python -m rcfd`` runs the CLI."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import rcfd

PACKAGE = Path(rcfd.__file__).parent


def module_name(path: Path) -> str:
    parts = ["rcfd", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> set[str]:
    """rcfd modules that ``path`` imports (a package counts as its __init__)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    # A parent package is always imported before its modules: `from . import x` is an edge to x only.
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return found - ancestors


def graph() -> dict[str, set[str]]:
    paths = list(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported(p, modules) for p in paths}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, path + [nxt])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_imports_resolve_to_modules():
    edges = graph()
    assert "rcfd.paths" in edges["rcfd.data"]
    assert "rcfd.paths" in edges["rcfd.rewards.demo_cache"]


def test_no_import_cycle():
    edges = graph()
    # The package's __init__ re-exports the public API: modules must not import it back, which
    # the walk checks like any other edge.
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_python_dash_m_rcfd_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "rcfd", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: rcfd" in out.stdout


@pytest.mark.parametrize("argv", [["--help"], ["tasks"], ["train", "--help"]])
def test_help_and_tasks_answer_without_loading_torch(argv):
    """`rcfd --help` and `rcfd tasks` took 2.8 s importing torch; they now print from the config and registry
    modules alone (`train --help` lists the objectives, which live beside their torch code)."""
    code = ("import sys\nfrom rcfd.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('loaded:', sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    expected = "['torch']" if argv[0] == "train" else "[]"
    assert proc.stdout.splitlines()[-1] == f"loaded: {expected}"
    assert ("choices (`rcfd config --reference`" in proc.stdout) == (argv[0] == "train")
