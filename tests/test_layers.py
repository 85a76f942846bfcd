"""Data flows one way: a module imports only from its own layer or the layers below it (docs/ARCHITECTURE.md,
"Layers"). Imports under ``if TYPE_CHECKING:`` are annotations, not dependencies, and are not counted."""

from __future__ import annotations

import ast
from pathlib import Path

import defuse

LAYERS = [
    ("errors", "fileio", "config", "config_file", "runs", "__init__"),  # the run-directory contract, settings
    ("data",),
    ("models",),
    ("training",),
    ("evaluation",),  # generation, judges, metrics: what every stage measures with
    ("attacks", "encoders"),  # poisoning, jailbreak data, encoder planting and PEFT victims
    ("defenses",),
    ("scenarios", "demo"),  # the runs: each scenario's attack, defense and re-evaluation end to end
    ("bench",),
    ("cli", "cli_common", "cli_data", "cli_model", "cli_bench"),
]
ROOT = Path(defuse.__file__).parent


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"defuse.{module} is in no layer; add its package to LAYERS and the docs' table")


def _imports(tree: ast.Module):
    """Every ``defuse.*`` module imported, outside ``if TYPE_CHECKING:`` blocks, with its line."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skip |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "defuse":  # ``from defuse import cli``
            yield from ((alias.name, node.lineno) for alias in node.names if alias.name != "__version__")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("defuse."):
            yield node.module.removeprefix("defuse."), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("defuse."):
                    yield alias.name.removeprefix("defuse."), node.lineno


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for target, line in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if _layer(target) > _layer(module):
                upward.append(f"defuse/{path.relative_to(ROOT)}:{line} imports defuse.{target}")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import():
    tree = ast.parse("from defuse.scenarios import get_scenario\nif TYPE_CHECKING:\n    import defuse.cli\n")
    found = list(_imports(tree))
    assert found == [("scenarios", 1)] and _layer("scenarios") > _layer("attacks.poison")
