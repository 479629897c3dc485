"""Reading sensor requests: JSON in, a ``(k, n)`` float64 array out, or a 422 that names the problem (the
service's and the edge runtime's one reader).

Accepted bodies (``n`` = the line's number of features, in the order of its card):

- ``{"values": [v1, ..., vn]}``: one reading;
- ``{"values": [[...], [...]]}``: a batch of readings;
- ``{"features": {"temp": 21.5, ...}}`` or ``{"features": [{...}, {...}]}``: readings by name;
- an optional ``"sensor_id"`` (machine or station, echoed back);
- an optional ``"stream"``: the readings' stream (default: the ``sensor_id``), whose earlier readings a window
  head scores them with and whose alarm they count towards;
- an optional ``"timestamp"``: epoch seconds, one number for one reading or a list, one per reading, in
  time order (a stream refuses readings older than its last).

Numbers only: strings, booleans, null, NaN and infinity are refused (orjson, which the service installs,
refuses NaN, Infinity and numbers too large for a double at parse time; without it the standard library's
parser is told to refuse them, and a number beyond a double's range fails the size check).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lineguard_edge.errors import DataError
from lineguard_edge.text import printable

try:
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
    _JSON_ERROR: type[Exception] = orjson.JSONDecodeError
except ImportError:  # the edge runtime's bare install

    def _refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a number")

    def _loads(body: bytes) -> Any:
        return json.loads(body, parse_constant=_refuse)

    _JSON_ERROR = ValueError

ALLOWED_KEYS = ("values", "features", "sensor_id", "stream", "timestamp")
_NUMBER = (int, float)
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Readings:
    values: np.ndarray  # (k, n) float64, as sent (the model computes in float32)
    single: bool
    sensor_id: str | None
    stream: str | None = None  # the stream the readings belong to: "stream", else the sensor_id
    timestamps: list[float] | None = None  # epoch seconds, one per reading


def parse_readings(body: bytes, line: str, features: list[str], max_rows: int) -> Readings:
    if not body:
        raise DataError('empty body: send JSON like {"values": [..]} with ' + f"{len(features)} numbers")
    try:
        data = _loads(body)
    except _JSON_ERROR as err:
        raise DataError(
            f"body is not valid JSON ({err}); NaN, Infinity and numbers beyond 1e308 are not allowed"
        ) from None
    return readings_from(data, line, features, max_rows)


def readings_from(data: Any, line: str, features: list[str], max_rows: int) -> Readings:
    """Readings from a parsed JSON body (``parse_readings`` without the parsing)."""
    if not isinstance(data, dict):
        raise DataError(f'expected a JSON object like {{"values": [..]}}, got a JSON {_kind(data)}')
    unknown = sorted(set(data) - set(ALLOWED_KEYS))
    if unknown:
        raise DataError(f"unknown field(s) {unknown}: a sensor request has {list(ALLOWED_KEYS)}")
    sensor_id = data.get("sensor_id")
    if sensor_id is not None and not isinstance(sensor_id, str):
        raise DataError("sensor_id must be a string of at most 200 characters")
    if sensor_id is not None:
        printable(sensor_id, "sensor_id", 200)
    stream = data.get("stream", sensor_id)
    if stream is not None and not isinstance(stream, str):
        raise DataError("stream must be a string of at most 200 characters (the machine or sensor the readings are of)")
    if stream is not None:
        printable(stream, "stream", 200)
    if ("values" in data) == ("features" in data):
        raise DataError('send exactly one of "values" (numbers in feature order) or "features" (by name)')
    try:
        if "values" in data:
            rows, single = _rows_from_values(data["values"], line, len(features), max_rows)
        else:
            rows, single = _rows_from_features(data["features"], line, features, max_rows)
    except DataError as err:
        if stream is None:
            raise
        raise DataError(f"stream {stream!r}: {err}") from None
    timestamps = _timestamps(data.get("timestamp"), len(rows), single)
    try:
        values = np.array(rows, dtype=np.float64)
    except OverflowError as err:  # an integer with hundreds of digits
        raise DataError("a value is too large for a number: values must be finite") from err
    if (np.abs(values) > FLOAT32_MAX).any():  # the model computes in float32
        raise DataError("a value is too large: values must be finite numbers below 3.4e38")
    return Readings(values, single, sensor_id, stream, timestamps)


def _timestamps(value: Any, count: int, single: bool) -> list[float] | None:
    if value is None:
        return None
    stamps = [value] if single and not isinstance(value, list) else value
    if not isinstance(stamps, list) or len(stamps) != count:
        raise DataError(
            f'"timestamp" must be {"a number" if single else f"a list of {count} numbers"}: one per reading'
        )
    for i, stamp in enumerate(stamps):
        if type(stamp) not in _NUMBER or not np.isfinite(stamp):
            raise DataError(f"timestamp {i} is {stamp!r}: timestamps are epoch seconds (finite numbers)")
    return [float(t) for t in stamps]


def _rows_from_values(values: Any, line: str, n: int, max_rows: int) -> tuple[list[list[Any]], bool]:
    if not isinstance(values, list) or not values:
        raise DataError(f'"values" must be a non-empty list of {n} numbers (or a list of such lists)')
    single = not isinstance(values[0], list)
    rows = [values] if single else values
    if len(rows) > max_rows:
        raise DataError(f"{len(rows)} readings in one request, over the limit of {max_rows}: split the batch")
    for i, row in enumerate(rows):
        where = "" if single else f"reading {i}: "
        if not isinstance(row, list):
            raise DataError(f"{where}expected a list of {n} numbers, got a JSON {_kind(row)}")
        if len(row) != n:
            raise DataError(f"{where}line {line!r} expects {n} values, got {len(row)}")
    _check_numbers(rows, single)
    return rows, single


def _rows_from_features(named: Any, line: str, features: list[str], max_rows: int) -> tuple[list[list[Any]], bool]:
    single = isinstance(named, dict)
    items = [named] if single else named
    if not isinstance(items, list) or not items:
        raise DataError('"features" must be an object {"name": number, ...} or a non-empty list of them')
    if len(items) > max_rows:
        raise DataError(f"{len(items)} readings in one request, over the limit of {max_rows}: split the batch")
    expected = set(features)
    rows = []
    for i, item in enumerate(items):
        where = "" if single else f"reading {i}: "
        if not isinstance(item, dict):
            raise DataError(f"{where}expected an object of feature values, got a JSON {_kind(item)}")
        if item.keys() != expected:
            unknown, missing = sorted(set(item) - expected), sorted(expected - set(item))
            problems = ([f"unknown feature(s) {unknown}"] if unknown else []) + (
                [f"missing feature(s) {missing}"] if missing else []
            )
            raise DataError(f"{where}{' and '.join(problems)}: line {line!r} expects {features}")
        rows.append([item[name] for name in features])
    _check_numbers(rows, single)
    return rows, single


def _check_numbers(rows: list[list[Any]], single: bool) -> None:
    """Every cell an int or a float (bool is an int subclass in Python: refused by exact type)."""
    if {type(v) for row in rows for v in row} <= set(_NUMBER):
        return
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if type(v) not in _NUMBER:
                where = f"value {j}" if single else f"reading {i}, value {j}"
                raise DataError(f"{where} is a JSON {_kind(v)}: values must be numbers")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", str: "string", list: "array", dict: "object", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )
