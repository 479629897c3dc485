"""Reading a sensor line's table: a CSV with a header, or Parquet; one row per reading.

Feature columns are numeric; an optional label column (``label``, ``is_anomaly`` or ``anomaly`` by
default, 0 = normal, 1 = anomalous) marks known anomalies, and other text columns (a timestamp, a
machine id, a fault type) are ignored unless named in ``columns``. Anything unusable is refused with
an error that names the column and the first offending row (row 1 = the first data row).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from lineguard.errors import ConfigError, DataError

LABEL_COLUMNS = ("label", "is_anomaly", "anomaly")


@dataclass
class SensorTable:
    path: Path
    features: list[str]
    values: np.ndarray  # (N, n) float32
    labels: np.ndarray | None  # (N,) int, 1 = anomalous
    groups: list[str] | None = None  # e.g. the fault type of each row, for the per-type breakdown


def read_table(
    path: Path | str,
    columns: Sequence[str] | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
) -> SensorTable:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sensor data file {path} does not exist (expected a CSV with a header, or Parquet)")
    table = _load(path)
    if table.num_rows < 2:
        raise DataError(f"{path} has {table.num_rows} data row(s): a sensor line needs at least 2 normal rows")
    names = list(table.column_names)
    label = label_column or next((c for c in LABEL_COLUMNS if c in names), None)
    if label_column and label_column not in names:
        raise ConfigError(f"label column {label_column!r} is not in {path}: columns are {names}")
    group = group_column if group_column in names else ("fault" if "fault" in names else None)
    if columns:
        missing = [c for c in columns if c not in names]
        if missing:
            raise ConfigError(f"column(s) {missing} are not in {path}: columns are {names}")
        features = list(columns)
    else:
        features = [c for c in names if c not in (label, group) and _looks_numeric(table.column(c))]
        if len(features) < 2:
            raise DataError(f"{path} has {len(features)} numeric feature column(s) ({features}): need at least 2")
    values = np.stack([_numeric(table.column(c), c, path) for c in features], axis=1).astype(np.float32)
    labels = None
    if label is not None:
        raw = _numeric(table.column(label), label, path)
        if not np.isin(raw, (0, 1)).all():
            row = int(np.nonzero(~np.isin(raw, (0, 1)))[0][0]) + 1
            raise DataError(
                f"label column {label!r} must hold 0 (normal) or 1 (anomalous): row {row} has {raw[row - 1]}"
            )
        labels = raw.astype(np.int64)
    groups = [str(v) for v in table.column(group).to_pylist()] if group else None
    return SensorTable(path, features, values, labels, groups)


def _load(path: Path) -> pa.Table:
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path)
    import pyarrow.csv as pacsv

    try:
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    except pa.ArrowInvalid as err:
        raise DataError(f"{path} is not a readable CSV with a header row: {err}") from err


def _looks_numeric(column: pa.ChunkedArray) -> bool:
    """Numeric columns, and text columns whose cells are mostly numbers (one bad cell makes a numeric
    column text: it must be reported by row, not silently dropped)."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return True
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        return False
    cells = [c for c in column.to_pylist() if c not in (None, "")]
    parsed = 0
    for cell in cells:
        try:
            float(cell)
            parsed += 1
        except ValueError:
            pass
    return bool(cells) and parsed >= 0.5 * len(cells)


def _numeric(column: pa.ChunkedArray, name: str, path: Path) -> np.ndarray:
    """float64 values of a column, or an error naming the first empty or non-numeric row.

    Columns Arrow already parsed as numbers are converted in one go (a million rows of 50 sensors is
    50 million cells); only text columns are read cell by cell, to name the row that is not a number.
    """
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        if column.null_count:
            row = int(np.nonzero(column.is_null().to_numpy(zero_copy_only=False))[0][0]) + 1
            raise DataError(f"{path}: column {name!r} is empty at row {row}")
        values: np.ndarray = column.to_numpy().astype(np.float64)
        bad = np.nonzero(~np.isfinite(values))[0]
        if bad.size:
            row = int(bad[0]) + 1
            value = float(values[row - 1])
            raise DataError(f"{path}: column {name!r} row {row} is {value!r}: values must be finite numbers")
        return values
    cells = column.to_pylist()
    out = np.empty(len(cells), dtype=np.float64)
    for row, cell in enumerate(cells, start=1):
        if cell is None or cell == "":
            raise DataError(f"{path}: column {name!r} is empty at row {row}")
        if isinstance(cell, bool):
            raise DataError(f"{path}: column {name!r} row {row} holds {cell!r}, not a number")
        try:
            value = float(cell)
        except (TypeError, ValueError):
            raise DataError(f"{path}: column {name!r} row {row} holds {cell!r}, not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{path}: column {name!r} row {row} is {cell!r}: values must be finite numbers")
        out[row - 1] = value
    return out
