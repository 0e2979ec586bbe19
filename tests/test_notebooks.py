"""The notebooks run top to bottom on a small sample, and are committed without outputs."""

import sys

import nbformat
import pytest
from nbclient import NotebookClient

from models import features as F
from settings.layout import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
INTERACTIVE = PROJECT_ROOT / "notebooks" / "interactive_pipeline.ipynb"


def with_parameters(notebook, **values) -> None:
    """Inserts an assignment cell after the cell tagged `parameters`, as papermill does."""
    index = next(i for i, cell in enumerate(notebook.cells)
                 if "parameters" in cell.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


def test_interactive_pipeline_notebook_runs_and_writes_views(tmp_path):
    notebook = nbformat.read(INTERACTIVE, as_version=4)
    with_parameters(notebook, SAMPLE_ROWS=2500, TRAIN_STEPS=200, EVAL_STEPS=5, MIN_AUC=0.5,
                    WORK_DIR=str(tmp_path))
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(INTERACTIVE.parent)}})
    client.execute()  # a cell error raises CellExecutionError, naming the cell

    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    text = "\n".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "pushed: True" in text, text[-2000:]
    assert "blessed: True" in text and "safe to serve: True" in text
    # The last cell's table holds the pushed model's probabilities for raw rows.
    final = [o for o in notebook.cells[-3].outputs if o.get("output_type") == "execute_result"]
    assert final and f"P({F.LABEL})" in final[0]["data"]["text/plain"]

    views = {p.name: p.read_text() for p in (tmp_path / "views").glob("*.html")}
    assert set(views) == {"statistics.html", "spans_comparison.html", "evaluation.html"}
    for name, page in views.items():
        assert page.count("data:image/png;base64,") >= 1, name  # plots embedded, no server
        assert "<script" not in page, name  # nothing to fetch: renders offline
    for feature in ("fare", "trip_miles", "payment_type", "company"):
        assert feature in views["statistics.html"] and feature in views["spans_comparison.html"]
    assert "payment_type=Cash" in views["evaluation.html"] and "auc" in views["evaluation.html"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
