"""notebooks/quickstart.ipynb runs top to bottom on data_samples (CPU, under two minutes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
DEFAULT_MODEL = ROOT / "geochange" / "model" / "weights" / "default.ckpt"
KERNEL = "geochange-test"


def _missing_inputs() -> str | None:
    if not any((ROOT / "data_samples" / "stack").glob("*.tif")):
        return "data_samples/stack/*.tif not generated yet (geochange synth data_samples)"
    if not (ROOT / "data_samples" / "truth" / "label.tif").is_file():
        return "data_samples/truth/label.tif not generated yet"
    if not DEFAULT_MODEL.is_file():
        return f"default model {DEFAULT_MODEL.relative_to(ROOT)} not trained yet"
    return None


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this interpreter, whatever `python` is on PATH."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return KERNEL


def test_notebook_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.slow  # runs detect on the whole data_samples scene in a kernel
@pytest.mark.timeout(180)
@pytest.mark.parametrize("cwd", ["notebooks"])
def test_notebook_runs(cwd: str, kernel_name: str) -> None:
    reason = _missing_inputs()
    if reason:
        pytest.skip(reason)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=150,
        resources={"metadata": {"path": str(ROOT / cwd)}},
    )
    client.execute()
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
    images = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]
    assert len(images) >= 5  # two dates, two series, quicklook, polygons, one polygon's series


def test_notebook_finds_samples_from_repo_root(kernel_name: str) -> None:
    # Only the first code cell (imports, locating data_samples/): cwd = repository root.
    if not (ROOT / "data_samples" / "stack").is_dir():
        pytest.skip("data_samples/stack not generated yet (geochange synth data_samples)")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    nb.cells = [first, nbformat.v4.new_code_cell("print(ROOT)\nshutil.rmtree(OUT)")]
    NotebookClient(
        nb, kernel_name=kernel_name, timeout=60, resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    assert nb.cells[1].outputs[0]["text"].strip() == str(ROOT)
