"""The code base is ruff-clean and ddpm_core stays free of any UI import."""

import ast
import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_is_clean_and_formatted():
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_ddpm_core_never_imports_streamlit():
    for path in (ROOT / "ddpm_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] == "streamlit" for n in names), f"{path} imports streamlit"
