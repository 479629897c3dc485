"""Reading a sensor line's table: a CSV with a header, or Parquet; one row per reading.

Feature columns are numeric; an optional label column (``label``, ``is_anomaly`` or ``anomaly`` by
default, 0 = normal, 1 = anomalous) marks known anomalies, and other text columns (a machine id, a fault
type) are ignored unless named in ``columns``. Anything unusable is refused with an error that names the
column and the offending row: row 1 is the first data row *as written in the file*, before any sorting.

Plant historians do not all write the same CSV, so the reader adapts to what it finds:

- **Delimiter.** ``,``, ``;`` or tab, sniffed from the header and the first data lines: the one that
  splits every line into the same number (> 1) of columns.
- **Decimal comma.** When the delimiter is not a comma, text cells such as ``1,25`` are numbers
  (European locales write them so). In a comma-separated file ``"1,25"`` stays text and is refused,
  never silently read as 1.25 or 125.
- **Timestamps.** A column named ``timestamp``, ``datetime``, ``time``, ``date`` or ``ts`` (any case), or
  the one named by ``time_column``, holds ISO-8601 times (``T`` or space, with or without a zone; naive
  times are UTC) or epoch seconds. It becomes :attr:`SensorTable.timestamps` (float seconds since the
  epoch, UTC) and is never a feature. Rows are sorted by it (a stable sort: historians export by tag or
  by shift, not always in time order); a time that cannot be parsed, or one written twice, is refused.
- **Segments.** A pause longer than ``gap_factor`` times the median interval (a stop, a shift change, a
  historian outage) starts a new segment; missing values are never filled across one. Without
  timestamps the rows are one segment, taken as written.
- **Row index.** A numeric column named ``sample`` or ``index`` (any case) that strictly increases
  counts the rows (the Tennessee Eastman files start with one): it is not a feature unless ``columns``
  names it.
- **Missing values.** ``fill="refuse"`` (the default) refuses the first empty cell; ``"ffill"`` carries
  the last reading forward within a segment; ``"interpolate"`` draws a straight line between the
  readings on either side (in time, or in row order without timestamps). A gap with no reading to fill
  from (the start of a segment, or its end for ``interpolate``) is refused, and labels are never filled.

What the reader decided is listed in :attr:`SensorTable.notes`, for the CLI and the model card.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lineguard.errors import ConfigError, DataError

LABEL_COLUMNS = ("label", "is_anomaly", "anomaly")
TIME_COLUMNS = ("timestamp", "datetime", "time", "date", "ts")  # in order of preference, matched in any case
INDEX_COLUMNS = ("sample", "index")  # a strictly increasing one counts rows; it is not a measurement
DELIMITERS = (",", ";", "\t")  # ties go to the earlier one
FILLS = ("refuse", "ffill", "interpolate")
Fill = Literal["refuse", "ffill", "interpolate"]

_SNIFF_BYTES = 1 << 16  # the header and enough data lines to see the delimiter (TEP lines are ~800 bytes)
_SNIFF_LINES = 20  # data lines looked at, after the header
_TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


@dataclass
class SensorTable:
    """The readings of one sensor line, in time order.

    ``values[i]``, ``labels[i]``, ``groups[i]``, ``timestamps[i]`` and ``segments[i]`` describe the same
    reading. The fields after ``groups`` have defaults so tables built by hand (tests, the Ray shards)
    keep working; :func:`read_table` always sets ``segments``.
    """

    path: Path
    features: list[str]
    values: np.ndarray  # (N, n) float32
    labels: np.ndarray | None  # (N,) int, 1 = anomalous
    groups: list[str] | None = None  # e.g. the fault type of each row, for the per-type breakdown
    timestamps: np.ndarray | None = None  # (N,) float64 seconds since the epoch (UTC), sorted; None: no times
    segments: np.ndarray | None = None  # (N,) int64 segment id, 0-based and nondecreasing; a gap starts one
    notes: list[str] = field(default_factory=list)  # what the reader found and did, in plain words


def read_table(
    path: Path | str,
    columns: Sequence[str] | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
    *,
    time_column: str | None = None,
    fill: Fill = "refuse",
    gap_factor: float = 5.0,
) -> SensorTable:
    """Read a sensor table (CSV or Parquet) into features, labels, fault groups, times and segments.

    ``columns`` names the features (default: every numeric column that is not the label, the group,
    the timestamp or a row index); ``label_column`` and ``group_column`` override the default names
    (``label``/``is_anomaly``/``anomaly`` and ``fault``); ``time_column`` names the timestamp column when
    it is not called ``timestamp``, ``time``... ``fill`` says what to do with empty cells, and
    ``gap_factor`` how long a pause (in median intervals) splits the readings into segments.
    Raises :class:`ConfigError` for arguments that do not fit the file and :class:`DataError` for
    cells that cannot be used, naming the column and the row as written in the file.
    """
    if fill not in FILLS:
        raise ConfigError(f"fill={fill!r} is not one of {list(FILLS)}: 'refuse' stops at the first empty cell")
    if not gap_factor > 0:  # also refuses NaN
        raise ConfigError(f"gap_factor={gap_factor!r} must be a number > 0 (the default is 5.0; math.inf never splits)")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sensor data file {path} does not exist (expected a CSV with a header, or Parquet)")
    notes: list[str] = []
    table, delimiter = _load(path)
    if delimiter is not None:
        notes.append(f"delimiter {delimiter!r}")
    if table.num_rows < 2:
        raise DataError(f"{path} has {table.num_rows} data row(s): a sensor line needs at least 2 normal rows")
    names = list(table.column_names)
    label = label_column or next((c for c in LABEL_COLUMNS if c in names), None)
    if label_column and label_column not in names:
        raise ConfigError(f"label column {label_column!r} is not in {path}: columns are {names}")
    group = group_column if group_column in names else ("fault" if "fault" in names else None)
    if time_column is not None and time_column not in names:
        raise ConfigError(f"time column {time_column!r} is not in {path}: columns are {names}")
    time = time_column or _time_column(names)
    if columns and time is not None and time in columns:
        raise ConfigError(
            f"column {time!r} of {path} is the timestamp column and never a feature: leave it out of the"
            " feature columns, or pass time_column= to name the column that holds the times"
        )
    decimal_comma = delimiter is not None and delimiter != ","
    if decimal_comma:
        table, converted = _decimal_commas(table, skip={c for c in (time, group) if c is not None})
        if converted:
            notes.append(f"decimal comma in {len(converted)} column(s): {converted}")

    n = table.num_rows
    order = np.arange(n)
    timestamps: np.ndarray | None = None
    segments = np.zeros(n, dtype=np.int64)
    if time is not None:
        stamps = _timestamps(table.column(time), time, path)
        notes.append(f"timestamp column {time!r}")
        order = np.argsort(stamps, kind="stable")
        timestamps = stamps[order]
        same = np.nonzero(np.diff(timestamps) == 0)[0]
        if same.size:
            first, second = sorted((int(order[same[0]]) + 1, int(order[same[0] + 1]) + 1))
            raise DataError(
                f"{path}: timestamp column {time!r} has {_when(float(timestamps[same[0]]))} twice, at rows"
                f" {first} and {second}: drop or merge the duplicate reading"
            )
        if (order != np.arange(n)).any():
            notes.append("sorted by timestamp")
        segments, note = _segments(timestamps, gap_factor)
        if note:
            notes.append(note)

    if columns:
        missing = [c for c in columns if c not in names]
        if missing:
            raise ConfigError(f"column(s) {missing} are not in {path}: columns are {names}")
        features = list(columns)
    else:
        skip = {label, group, time}
        index = [c for c in names if c not in skip and c.lower() in INDEX_COLUMNS and _is_index(table.column(c))]
        for name in index:
            notes.append(f"column {name!r} counts the rows (strictly increasing): a row index, not a feature")
        features = [
            c for c in names if c not in skip and c not in index and _looks_numeric(table.column(c), decimal_comma)
        ]
        if len(features) < 2:
            raise DataError(f"{path} has {len(features)} numeric feature column(s) ({features}): need at least 2")
    allow_missing = fill != "refuse"
    read = [_numeric(table.column(c), c, path, allow_missing, decimal_comma) for c in features]  # file order
    values = np.stack(read, axis=1)[order]  # time order
    if allow_missing:
        filled = _fill(values, features, order, segments, timestamps, fill, path)
        if filled:
            notes.append(f"filled {filled} cell(s) by {fill}")
    labels = None
    if label is not None:
        column = table.column(label)
        if column.null_count:
            row = int(np.nonzero(column.is_null().to_numpy(zero_copy_only=False))[0][0]) + 1
            raise DataError(
                f"{path}: label column {label!r} is empty at row {row}: labels are never filled, write 0"
                " (normal) or 1 (anomalous), or drop the row"
            )
        raw = _numeric(column, label, path)
        if not np.isin(raw, (0, 1)).all():
            row = int(np.nonzero(~np.isin(raw, (0, 1)))[0][0]) + 1
            raise DataError(
                f"label column {label!r} must hold 0 (normal) or 1 (anomalous): row {row} has {raw[row - 1]}"
            )
        labels = raw.astype(np.int64)[order]
    groups = None
    if group:
        cells = table.column(group).to_pylist()
        groups = [str(cells[i]) for i in order]
    return SensorTable(path, features, values.astype(np.float32), labels, groups, timestamps, segments, notes)


def _load(path: Path) -> tuple[pa.Table, str | None]:
    """The file as an Arrow table, and the CSV delimiter it was split on (None for Parquet)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path), None
    import pyarrow.csv as pacsv

    delimiter = _sniff_delimiter(path)
    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
    except pa.ArrowInvalid as err:
        raise DataError(f"{path} is not a readable CSV with a header row: {err}") from err
    return table, delimiter


def _sniff_delimiter(path: Path) -> str:
    """``,``, ``;`` or tab: the one that splits the header and the first data lines into the same number
    (> 1) of columns, the most columns winning a tie; ``,`` when none does (Arrow then names the problem).

    Quotes are honoured, so a quoted ``"1,5"`` in a semicolon file does not count as a comma split.
    """
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
        at_end = not handle.read(1)
    if not at_end:
        head = head[: head.rfind(b"\n") + 1] or head  # drop a line cut in half
    text = head.decode("utf-8", errors="replace").removeprefix("\ufeff")
    best, best_width = ",", 1
    for delimiter in DELIMITERS:
        rows = [r for r in csv.reader(text.splitlines(), delimiter=delimiter) if r][: _SNIFF_LINES + 1]
        widths = {len(r) for r in rows}
        if len(rows) >= 1 and len(widths) == 1 and (width := widths.pop()) > best_width:
            best, best_width = delimiter, width
    return best


def _decimal_commas(table: pa.Table, skip: set[str]) -> tuple[pa.Table, list[str]]:
    """The table with text columns of decimal-comma numbers (``1,25``) turned into float64 columns, and
    the names of the columns converted. A column with any cell that is not such a number stays text, so
    the feature check names that cell (with its comma) by row."""
    converted = []
    for i, name in enumerate(table.column_names):
        column = table.column(i)
        if name in skip or not _is_text(column) or not pc.any(pc.match_substring(column, ",")).as_py():
            continue
        try:
            numbers = pc.cast(pc.replace_substring(column, ",", "."), pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            try:
                numbers = pa.chunked_array(
                    [pa.array([_cell_number(c, decimal_comma=True) for c in column.to_pylist()], pa.float64())]
                )
            except ValueError:
                continue
        table = table.set_column(i, name, numbers)
        converted.append(name)
    return table, converted


def _cell_number(cell: str | None, decimal_comma: bool = False) -> float | None:
    """The number in a text cell (None for an empty one); ValueError when it is not one."""
    if cell is None or cell.strip() == "":
        return None
    return _parse(cell, decimal_comma)


def _parse(cell: str, decimal_comma: bool) -> float:
    """``float(cell)``, also reading one decimal comma (``1,25``) when ``decimal_comma``; ValueError if
    it is not a number. ``1.234,5`` (a thousands point) is refused rather than guessed at."""
    try:
        return float(cell)
    except ValueError:
        if decimal_comma and cell.count(",") == 1 and "." not in cell:
            return float(cell.replace(",", "."))
        raise


def _time_column(names: Sequence[str]) -> str | None:
    """The column holding the times, by its name (``timestamp`` first, then ``datetime``, ``time``...)."""
    for wanted in TIME_COLUMNS:
        for name in names:
            if name.lower() == wanted:
                return name
    return None


def _timestamps(column: pa.ChunkedArray, name: str, path: Path) -> np.ndarray:
    """float64 seconds since the epoch (UTC) of each row, in file order; an error names the first row that
    is empty or not a time.

    Arrow already parses most ISO-8601 columns (to timestamps, or dates); zone offsets that differ between
    rows, or naive and zoned times mixed, stay text and are parsed here cell by cell. Numbers are epoch
    seconds."""
    if column.null_count:
        row = int(np.nonzero(column.is_null().to_numpy(zero_copy_only=False))[0][0]) + 1
        raise DataError(f"{path}: timestamp column {name!r} is empty at row {row}: every reading needs its time")
    kind = column.type
    if pa.types.is_timestamp(kind):  # stored as UTC when zoned, as wall-clock time (taken as UTC) when naive
        return np.asarray(pc.cast(column, pa.int64()).to_numpy(), np.float64) / _TIME_UNITS[kind.unit]
    if pa.types.is_date32(kind):  # days
        return np.asarray(pc.cast(column, pa.int32()).to_numpy(), np.float64) * 86400.0
    if pa.types.is_date64(kind):  # milliseconds
        return np.asarray(pc.cast(column, pa.int64()).to_numpy(), np.float64) / 1e3
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        out = np.asarray(column.to_numpy(), np.float64)
        bad = np.nonzero(~np.isfinite(out))[0]
        if bad.size:
            raise DataError(_bad_time(path, name, int(bad[0]) + 1, out[bad[0]]))
        return out
    cells = column.to_pylist()
    if not _is_text(column):
        raise DataError(_bad_time(path, name, 1, cells[0]))
    stamps = np.empty(len(cells), dtype=np.float64)
    for row, cell in enumerate(cells, start=1):
        value = _epoch(cell)
        if value is None:
            raise DataError(_bad_time(path, name, row, cell))
        stamps[row - 1] = value
    return stamps


def _epoch(cell: str) -> float | None:
    """Seconds since the epoch of an ISO-8601 time (naive = UTC) or of epoch seconds; None if neither."""
    text = cell.strip()
    try:
        value = float(text)
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _bad_time(path: Path, name: str, row: int, cell: object) -> str:
    return (
        f"{path}: timestamp column {name!r} row {row} holds {cell!r}, not a time: write ISO-8601"
        " (2026-11-01T08:00:00, T or space, with or without a zone; naive is UTC) or epoch seconds,"
        " or pass time_column= to name the column that holds the times"
    )


def _when(seconds: float) -> str:
    """An epoch time as an ISO-8601 UTC string, for messages."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


def _segments(timestamps: np.ndarray, gap_factor: float) -> tuple[np.ndarray, str | None]:
    """The segment id of each (sorted, distinct) time, and a note when a gap split them.

    The median interval is the line's sampling period, robust to the few long pauses being looked for."""
    intervals = np.diff(timestamps)
    median = float(np.median(intervals))
    gaps = intervals > gap_factor * median
    segments = np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
    count = int(gaps.sum())
    if not count:
        return segments, None
    noun = "gap" if count == 1 else "gaps"
    note = f"{count} {noun} longer than {gap_factor:g}x the median interval of {median:g} s: {count + 1} segments"
    return segments, note


def _is_text(column: pa.ChunkedArray) -> bool:
    return bool(pa.types.is_string(column.type) or pa.types.is_large_string(column.type))


def _is_index(column: pa.ChunkedArray) -> bool:
    """A numeric column with no gaps that strictly increases: it counts rows rather than measuring."""
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)) or column.null_count:
        return False
    values = column.to_numpy().astype(np.float64)
    return bool(np.isfinite(values).all() and (np.diff(values) > 0).all())


def _looks_numeric(column: pa.ChunkedArray, decimal_comma: bool = False) -> bool:
    """Numeric columns, and text columns whose cells are mostly numbers (one bad cell makes a numeric
    column text: it must be reported by row, not silently dropped)."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return True
    if not _is_text(column):
        return False
    cells = [c for c in column.to_pylist() if c not in (None, "")]
    parsed = 0
    for cell in cells:
        try:
            _parse(cell, decimal_comma)
            parsed += 1
        except ValueError:
            pass
    return bool(cells) and parsed >= 0.5 * len(cells)


def _numeric(
    column: pa.ChunkedArray, name: str, path: Path, allow_missing: bool = False, decimal_comma: bool = False
) -> np.ndarray:
    """float64 values of a column, or an error naming the first empty or non-numeric row.

    With ``allow_missing`` (a ``fill`` mode), empty cells and NaN are NaN, to be filled; infinities and
    text are still refused; ``decimal_comma`` reads ``1,25`` as 1.25. Columns Arrow already parsed as
    numbers are converted in one go (a million rows of 50 sensors is 50 million cells); only text columns
    are read cell by cell, to name the row that is not a number.
    """
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        if column.null_count and not allow_missing:
            row = int(np.nonzero(column.is_null().to_numpy(zero_copy_only=False))[0][0]) + 1
            raise DataError(f"{path}: column {name!r} is empty at row {row}")
        values: np.ndarray = column.cast(pa.float64()).fill_null(math.nan).to_numpy()
        wrong = np.isinf(values) if allow_missing else ~np.isfinite(values)
        bad = np.nonzero(wrong)[0]
        if bad.size:
            row = int(bad[0]) + 1
            value = float(values[row - 1])
            raise DataError(f"{path}: column {name!r} row {row} is {value!r}: values must be finite numbers")
        return values
    cells = column.to_pylist()
    out = np.empty(len(cells), dtype=np.float64)
    for row, cell in enumerate(cells, start=1):
        if cell is None or cell == "":
            if allow_missing:
                out[row - 1] = math.nan
                continue
            raise DataError(f"{path}: column {name!r} is empty at row {row}")
        if isinstance(cell, bool):
            raise DataError(f"{path}: column {name!r} row {row} holds {cell!r}, not a number")
        try:
            value = _parse(cell, decimal_comma)
        except (TypeError, ValueError):
            raise DataError(f"{path}: column {name!r} row {row} holds {cell!r}, not a number") from None
        if allow_missing and math.isnan(value):
            out[row - 1] = math.nan
            continue
        if not math.isfinite(value):
            raise DataError(f"{path}: column {name!r} row {row} is {cell!r}: values must be finite numbers")
        out[row - 1] = value
    return out


def _fill(
    values: np.ndarray,
    features: Sequence[str],
    order: np.ndarray,
    segments: np.ndarray,
    timestamps: np.ndarray | None,
    fill: str,
    path: Path,
) -> int:
    """Fill the NaN cells of ``values`` (rows in time order) in place, within segments; the cells filled.

    ``order[i]`` is the file row (0-based) of sorted row ``i``, for the messages. A missing cell with no
    reading before it in its segment (and, for ``interpolate``, none after it) cannot be filled: the
    earliest such cell of the first column that has one is refused, by its row in the file.
    """
    n = len(values)
    positions = np.arange(n)
    starts = np.searchsorted(segments, segments, side="left")  # first sorted row of each row's segment
    ends = np.searchsorted(segments, segments, side="right") - 1  # its last
    x = timestamps if timestamps is not None else positions.astype(np.float64)
    filled = 0
    for j, name in enumerate(features):
        missing = np.isnan(values[:, j])
        if not missing.any():
            continue
        before = np.maximum.accumulate(np.where(missing, -1, positions))  # last reading at or before
        after = np.minimum.accumulate(np.where(missing, n, positions)[::-1])[::-1]  # next at or after
        stranded = missing & (before < starts)
        if fill == "interpolate":
            stranded |= missing & (after > ends)
        if stranded.any():
            i = int(np.nonzero(stranded)[0][0])
            row = int(order[i]) + 1
            if fill == "ffill":
                why = "fill='ffill' has no earlier reading in its segment to carry forward"
            else:
                why = "fill='interpolate' needs a reading on both sides of it within its segment"
            raise DataError(
                f"{path}: column {name!r} is empty at row {row} and cannot be filled: {why}"
                " (segments start at the first row and after each long gap); fill the cell in or drop the row"
            )
        rows = np.nonzero(missing)[0]
        if fill == "ffill":
            values[rows, j] = values[before[rows], j]
        else:
            lo, hi = before[rows], after[rows]
            weight = (x[rows] - x[lo]) / (x[hi] - x[lo])
            values[rows, j] = values[lo, j] + weight * (values[hi, j] - values[lo, j])
        filled += int(rows.size)
    return filled
