"""The core's layers (ddpm_core.LAYERS): every module is in one layer, imports only from its own layer and the ones
below it, and no two modules import each other, directly or round a cycle. Imports under `if TYPE_CHECKING:` are
for annotations only and do not count."""

import ast
import graphlib

import ddpm_core
from tests.conftest import ROOT

CORE = ROOT / "ddpm_core"


def _runtime_imports(tree: ast.AST) -> set[str]:
    """The ddpm_core modules a module imports when it runs (at the top or inside functions)."""
    found, skip = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ddpm_core":
            found |= {a.name for a in node.names} if node.module == "ddpm_core" else {node.module.split(".")[1]}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ddpm_core.")}
    return found


def imports() -> dict[str, set[str]]:
    modules = {p.stem for p in CORE.glob("*.py")} - {"__init__"}
    graph = {m: _runtime_imports(ast.parse((CORE / f"{m}.py").read_text())) & modules - {m} for m in modules}
    return graph


def test_every_module_is_in_exactly_one_layer():
    listed = [m for layer in ddpm_core.LAYERS.values() for m in layer]
    assert sorted(listed) == sorted(imports()), "ddpm_core.LAYERS must list each module of ddpm_core once"
    table = ddpm_core.__doc__
    for layer, modules in ddpm_core.LAYERS.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {layer} "))
        assert all(m in row for m in modules), f"the docstring's row for {layer!r} must name {modules}"


def test_no_module_imports_from_a_layer_above_its_own():
    rank = {m: i for i, layer in enumerate(ddpm_core.LAYERS.values()) for m in layer}
    upward = [f"{m} → {d}" for m, deps in imports().items() for d in deps if rank[d] > rank[m]]
    assert not upward, f"imports from a higher layer: {upward}"


def test_there_is_no_import_cycle():
    graphlib.TopologicalSorter(imports()).prepare()  # raises CycleError naming the cycle
