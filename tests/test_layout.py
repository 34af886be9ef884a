"""The house: lopt_core's subpackages are layers, and imports run downward only (no import cycle).

Every ``import`` counts, also those inside functions: an upward import that is only deferred is still an
upward dependency. The layers, from the bottom up, are drawn in docs/layout.md."""
import ast
from pathlib import Path

import pytest

import lopt_core

PACKAGE = Path(lopt_core.__file__).resolve().parent
LAYERS = ["utils", "data", "model", "methods", "evaluation", "training", "serving", "lab", "cli"]
BASE = {"utils", "_moved"}  # the bottom floor: imported by everyone, importing nothing of the kit


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return 0 if top in BASE else LAYERS.index(top)


def kit_imports(path: Path) -> list[tuple[str, int, list[str]]]:
    """(imported module, line, names) for every import of a lopt_core module in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, []) for a in node.names if a.name.startswith("lopt_core")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lopt_core"):
            found.append((node.module, node.lineno, [a.name for a in node.names]))
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: kit_imports(p) for m, p in MODULES.items()}


def test_every_subpackage_is_a_layer_and_says_its_job_in_one_line():
    packages = {m.split(".")[1] for m in MODULES if m.count(".") >= 1 and (PACKAGE / m.split(".")[1]).is_dir()}
    assert packages <= set(LAYERS), f"subpackages not in the layer list: {packages - set(LAYERS)}"
    for name in packages:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert doc and len(doc.splitlines()[0]) <= 120, f"lopt_core.{name}: its docstring should open with one line " \
                                                        "saying its job"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "lopt_core"))
def test_imports_run_downward_only(module):
    for target, line, names in GRAPH[module]:
        if target == "lopt_core":  # the front door: only its version, never the curated API
            assert names == ["__version__"], f"{module}:{line} imports {names} from the front door"
            continue
        assert layer(target) <= layer(module), (
            f"{module}:{line} imports {target}, which sits in a higher layer "
            f"({LAYERS[layer(target)]} above {LAYERS[layer(module)]})")


def test_no_import_cycle():
    def targets(module: str, names: list[str]) -> set[str]:
        """``from pkg import sub`` depends on the submodule; ``from pkg import name`` on the package."""
        subs = {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}
        return subs | ({module} if len(subs) < max(len(names), 1) and module in MODULES else set())

    edges = {m: {t for target, _, names in GRAPH[m] for t in targets(target, names) if t != m} for m in MODULES}
    edges.pop("lopt_core", None)  # the front door loads names lazily
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t] if t in path else [m, t]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_the_front_door_names_what_it_exports():
    for name in lopt_core.__all__:
        assert getattr(lopt_core, name) is not None
    assert {"load_backbone", "load_task", "load_task_file", "build_method", "list_methods", "Trainer", "TrainConfig",
            "evaluate", "generate", "Server", "get_profile", "to_peft", "from_peft"} <= set(lopt_core.__all__)


def test_old_module_paths_still_import_with_a_deprecation_warning():
    import importlib
    import sys

    sys.modules.pop("lopt_core.train", None)
    with pytest.warns(DeprecationWarning, match="lopt_core.training.trainer"):
        old = importlib.import_module("lopt_core.train")
    assert old.Trainer is lopt_core.Trainer
