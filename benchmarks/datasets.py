"""Where the benchmarks find the real data sets: ``$LINEGUARD_DATASETS``, by default a ``shared/datasets``
folder beside the repository (the README's "Benchmarks" section names the sets)."""

from __future__ import annotations

import os
from pathlib import Path

DATASETS = Path(os.environ.get("LINEGUARD_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
