"""The equation map (ddpm_core/equations.py): each equation's function exists and cites it, the map's table lists
each one with its function, and no page writes LaTeX of its own."""

from __future__ import annotations

import ast
import importlib

import pytest

from ddpm_core import equations
from ddpm_core.equations import EQUATIONS
from explorer.classroom import PAGE_NAMES
from tests.conftest import ROOT


def _resolve(path: str):
    module, qualname = path.split(":")
    obj = importlib.import_module(f"ddpm_core.{module}")
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("equation", EQUATIONS.values(), ids=list(EQUATIONS))
def test_each_equation_has_its_function_and_the_function_cites_it(equation):
    function = _resolve(equation.function)
    assert equation.source in " ".join((function.__doc__ or "").split()), (equation.function, equation.source)
    assert set(equation.pages) <= set(PAGE_NAMES)


def test_the_maps_table_lists_every_equation_with_its_function():
    rows = {line.split()[0]: line for line in equations.__doc__.splitlines() if line.startswith("    ")}
    for equation in EQUATIONS.values():
        row = rows["target_eps/x0/v" if equation.id.startswith("target_") else equation.id]
        assert equation.function.replace(":", ".") in row.split(), (equation.id, row)


def _latex_arguments():
    for path in [*(ROOT / "pages").glob("*.py"), *(ROOT / "explorer").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "latex"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "st"):  # fmt: skip
                yield path.name, node.lineno, node.args[0] if node.args else None


def test_no_page_writes_latex_of_its_own():
    found = list(_latex_arguments())
    assert len(found) >= 10  # the scan sees the pages' equations
    for name, line, arg in found:
        literal = isinstance(arg, ast.Constant | ast.JoinedStr | ast.BinOp)
        assert not literal, f"{name}:{line}: st.latex of a literal; put the equation in ddpm_core/equations.py"


def test_the_sampling_equations_follow_the_settings():
    ddpm = " ".join(equations.sampling("ddpm", "posterior", 0.0))
    assert equations.latex("ddpm_step") in ddpm and equations.latex("q_posterior") in ddpm
    assert r"\sigma_t^2 = \beta_t" in " ".join(equations.sampling("ddpm", "beta", 0.0))
    ddim = " ".join(equations.sampling("ddim", "beta", 0.5))
    assert equations.latex("ddim_step") in ddim and r"\eta = 0.5" in ddim
    assert equations.q_sample_at(250, 0.5, 0.75) == r"x_{250} = 0.5000\,x_0 + 0.7500\,\epsilon"
