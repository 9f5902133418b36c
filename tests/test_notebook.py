"""The quick-start notebook (``notebooks/quickstart.ipynb``) runs as committed: a copy is
executed with nbclient and its outputs are checked; the committed copy carries its outputs."""

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def _outputs(cell) -> tuple[str, set]:
    """(the cell's printed text, the MIME types it displayed)."""
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    kinds = {k for o in cell.outputs for k in o.get("data", {})}
    return text, kinds


def _cell(nb, fragment: str):
    return next(c for c in nb.cells if c.cell_type == "code" and fragment in c.source)


def test_the_committed_notebook_has_its_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.outputs for c in nb.cells if c.cell_type == "code" and "import" not in c.source)
    assert "image/png" in _outputs(_cell(nb, "plot_loss_curves"))[1]


def test_a_copy_of_the_quickstart_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    copy = tmp_path / "quickstart.ipynb"
    nbformat.write(nb, copy)
    nb = nbformat.read(copy, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    _, kinds = _outputs(_cell(nb, "result.metrics"))
    assert "text/html" in kinds  # the xarray Dataset
    assert "image/png" in _outputs(_cell(nb, "plot_loss_curves"))[1]
    text, _ = _outputs(_cell(nb, "gradient_noise_scale"))
    found = re.search(r"B_simple = ([\d.]+) examples, lambda_max = ([\d.]+)", text)
    assert found and float(found[1]) > 1 and float(found[2]) > 0, text
    text, kinds = _outputs(_cell(nb, "critical_batch_size"))
    found = re.search(r"B_crit = (\d+) examples", text)
    assert found and 16 <= int(found[1]) <= 10**4, text
    assert "image/png" in kinds
    steps = _cell(nb, "steps_to_target").outputs[0]["data"]["text/plain"]
    values = [float(line.split()[-1]) for line in steps.splitlines()[1:-1]]
    assert values == sorted(values, reverse=True), steps  # fewer steps at larger batches
