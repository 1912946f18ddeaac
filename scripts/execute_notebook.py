"""Executes docs/notebooks/tour.ipynb in a fresh kernel and stores it with its outputs.

Usage: python scripts/execute_notebook.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebooks" / "tour.ipynb"


def main() -> None:
    """Runs the notebook in a temporary directory and writes it back with outputs."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory(prefix="tour-") as tmp:
        NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp}}
        ).execute()
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
