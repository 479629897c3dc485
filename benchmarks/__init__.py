"""Speed and accuracy harnesses. Run from the repository root: ``python -m benchmarks.<name> --help``."""
