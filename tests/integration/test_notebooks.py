"""Notebooks: stored without outputs, using only the public API, and executed so they cannot rot.

Each notebook runs in a fresh kernel of the interpreter running the tests (the project's venv), in
a temporary working directory that holds a copy of ``configs/``. The kernel comes from a
kernelspec written under ``tmp_path`` and found through ``JUPYTER_PATH``: nothing is installed in
``$HOME`` or the venv, and no Jupyter configuration on the machine is needed or consulted.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "python3"  # the name every notebook's metadata asks for


def _code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def _execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    client = NotebookClient(nb, timeout=300, kernel_name=KERNEL, resources={"metadata": {"path": str(cwd)}})
    return client.execute()


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``python3`` kernelspec for this interpreter, visible to this test only."""
    jupyter = tmp_path / "jupyter"
    spec_dir = jupyter / "data" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    # JUPYTER_PATH comes first in the kernelspec search, ahead of the user's and the venv's folders.
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter / "data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(jupyter / "config"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(jupyter / "runtime"))  # connection files
    monkeypatch.setenv("IPYTHONDIR", str(jupyter / "ipython"))  # no profile or startup files of the user
    found = KernelSpecManager().get_kernel_spec(KERNEL)
    assert found.argv[0] == sys.executable, found.argv
    return KERNEL


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "no notebooks/*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == KERNEL
    dirty = [
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: code cells {dirty} keep outputs or an execution count; clear them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_imports_only_the_public_api(path: Path) -> None:
    private = []
    for cell in _code_cells(path):
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fraud_detection"):
                names = [*node.module.split("."), *(alias.name for alias in node.names)]
                private += [f"{node.module}: {name}" for name in names if name.startswith("_")]
            elif isinstance(node, ast.Import):
                private += [
                    alias.name
                    for alias in node.names
                    if alias.name.startswith("fraud_detection")
                    and any(part.startswith("_") for part in alias.name.split("."))
                ]
    assert not private, f"{path.name} imports private names: {private}"


def test_kernel_runs_this_interpreter(kernel: str, tmp_path: Path) -> None:
    """The notebooks run against the package installed where the tests run, not another Python."""
    probe = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import sys\nprint(sys.executable)\nprint(sys.prefix)")],
        metadata={"kernelspec": {"name": kernel, "display_name": "Python 3", "language": "python"}},
    )
    executed = _execute(probe, tmp_path)
    executable, prefix = executed.cells[0].outputs[0].text.split("\n")[:2]
    assert (executable, prefix) == (sys.executable, sys.prefix)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path, kernel: str, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    shutil.copytree(REPO_ROOT / "configs", workdir / "configs")  # what the notebooks read; no data/
    nb = nbformat.read(path, as_version=4)
    executed = _execute(nb, workdir)  # raises CellExecutionError, with the cell and traceback, on failure
    errors = [
        output
        for cell in executed.cells
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]
    assert not errors
