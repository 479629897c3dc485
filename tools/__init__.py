"""Developer tools that understand the package layout (run from the repository root: ``python -m tools.X``)."""
