"""Both notebooks run to the end in a fresh kernel (nbclient, the venv's python3), briefly: the solution, with ddpm_core
pip-installed as on Colab and MNIST on disk (small idx files, read by torchvision), trains, passes the grader and
writes its GIF; the exercise, untouched, from a clone's path, reports every TODO as not done yet and skips the rest.
The committed notebooks are what notebooks/make_notebooks.py writes, without outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from ddpm_core.exercises import EXERCISES
from tests.conftest import ROOT
from tests.test_data import _write_mnist

NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture
def brief_run(tmp_path, monkeypatch):
    """A tmp working folder and the settings of a brief run, which the kernel inherits through its environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the cwd is outside the clone: ddpm_core comes from the path
    monkeypatch.setenv("DDPM_NOTEBOOK_STEPS", "20")
    monkeypatch.setenv("DDPM_NOTEBOOK_T", "50")
    monkeypatch.setenv("DDPM_NOTEBOOK_DATASET", "digits")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny tensors; more threads than free cores only spin
    return tmp_path


def _run(name: str, cwd) -> str:
    """Execute the notebook in cwd; every stream the code cells printed, joined (raises on a failing cell)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The repository pip-installed into a folder of its own, as a Colab user installs it: built from a copy of its
    sources (the build leaves the clone untouched), offline, without its dependencies (this venv has them)."""
    tmp = tmp_path_factory.mktemp("pip")
    src, site = tmp / "src", tmp / "site"
    for package in ("ddpm_core", "explorer"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", src)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "--target", str(site), str(src)], check=True, capture_output=True)
    return site


def test_the_solution_notebook_pip_installed_trains_on_mnist_on_disk_and_writes_its_gif(
    brief_run, installed, monkeypatch
):
    monkeypatch.setenv("PYTHONPATH", str(installed))  # ddpm_core from the install only: no clone on the path
    monkeypatch.setenv("DDPM_NOTEBOOK_DATASET", "auto")  # MNIST, because its files are under data/
    monkeypatch.setenv("DDPM_NOTEBOOK_STEPS", "5")
    monkeypatch.setenv("DDPM_NOTEBOOK_T", "10")
    _write_mnist(brief_run / "data", "MNIST", n_train=64)  # idx files in torchvision's layout
    out = _run("ddpm_solution.ipynb", brief_run)
    assert f"ddpm_core from {installed / 'ddpm_core'};" in out
    assert "mnist: (64, 1, 28, 28) pixels in [0, 1]" in out
    assert f"{len(EXERCISES)} of {len(EXERCISES)} passed" in out
    assert "step     5/5" in out and "Skipped" not in out
    with Image.open(brief_run / "ddpm_samples.gif") as gif:
        assert gif.n_frames > 1
    with Image.open(brief_run / "ddpm_samples.png") as grid:
        assert min(grid.size) >= 8 * 28  # 64 samples of 28×28


def test_the_exercise_notebook_runs_to_the_end_with_every_todo_not_done(brief_run):
    out = _run("ddpm_exercise.ipynb", brief_run)
    rows = [line for line in out.splitlines() if "· not done yet" in line]
    assert [row.split()[1] for row in rows] == [e.name for e in EXERCISES]
    assert "0 of 6 passed" in out
    assert "Skipped training" in out and "Skipped sampling" in out
    assert not (brief_run / "ddpm_samples.gif").exists()


def test_the_committed_notebooks_are_what_the_generator_writes_without_outputs():
    run = subprocess.run([sys.executable, str(NOTEBOOKS / "make_notebooks.py"), "--check"], capture_output=True)
    assert run.returncode == 0, run.stdout.decode()
    for name in ("ddpm_exercise.ipynb", "ddpm_solution.ipynb"):
        cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), name
