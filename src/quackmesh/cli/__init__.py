"""Layer 5: the ``quackmesh`` command line (Typer)."""
