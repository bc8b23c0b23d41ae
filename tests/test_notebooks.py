"""The notebooks run top to bottom on a fresh demo store, and are kept in git without outputs.

Each notebook is executed with nbclient on the current environment's ``python3`` kernel (the
ipykernel installed beside hwmarket), from a temporary working folder, with
``HWMARKET_DEMO_DIR`` pointing at an empty temporary folder so the capacity notebook builds the
demo store itself. Any cell error fails the test; the notebooks assert their own claims (the
energy bound contains the counter, more hosts never lower acceptance, invoice lines add up).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, SHARED_DATA, need

NOTEBOOKS = ROOT / "notebooks"
NAMES = ("capacity_analysis", "energy_accuracy")


@pytest.mark.parametrize("name", NAMES)
def test_saved_notebook_has_no_outputs(name: str) -> None:
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{name}.ipynb is saved with outputs in code cells {dirty}: strip them"


@pytest.mark.xdist_group("demo")  # one worker runs the demos: they pick loopback ports
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_without_errors(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need(
        SHARED_DATA.is_dir(),
        f"the shared data folder {SHARED_DATA} is missing (set HWMARKET_SHARED_DATA)",
    )
    work = tmp_path / "work"
    work.mkdir()
    # the kernel inherits this process's environment
    monkeypatch.setenv("HWMARKET_DEMO_DIR", str(tmp_path / "demo-out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        book,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    if name == "capacity_analysis":
        assert (tmp_path / "demo-out" / "hwmarket.db").exists(), "the demo did not run"
