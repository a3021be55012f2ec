"""notebooks/quickstart.ipynb runs top to bottom on data_samples (CPU, about two minutes), and is
committed with its outputs from one run top to bottom, so that it renders on a repository page."""

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


def _is_image(output) -> bool:
    return any(k.startswith("image/") for k in output.get("data", {}))


def test_notebook_committed_with_the_outputs_of_one_clean_run() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    # One run top to bottom in a fresh kernel (re-run it whole after editing a cell).
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [out for cell in code for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert sum(_is_image(out) for out in outputs) >= 6
    # Nothing of the machine it ran on: no absolute paths in what it shows.
    shown = json.dumps([{k: v for k, v in out.items() if k != "data"} for out in outputs])
    shown += json.dumps([out.get("data", {}).get("text/plain", "") for out in outputs])
    for marker in ("/tmp/", "/home/", "/work/", "/Users/", "geochange-quickstart-"):
        assert marker not in shown, marker


@pytest.mark.slow  # runs detect on the whole data_samples scene in a kernel
@pytest.mark.timeout(300)
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
        if _is_image(out)
    ]
    # two dates, two series, quicklook, polygons, one polygon's series, the cube's maps
    assert len(images) >= 6


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
