"""Plant-historian files: delimiters, decimal commas, timestamps, gaps, row indices and missing values
(:func:`lineguard.training.sensor_data.read_table`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lineguard.errors import ConfigError, DataError
from lineguard.training.sensor_data import SensorTable, read_table

TEP = Path("/work/shared/datasets/tep")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_semicolon_file_with_decimal_commas(tmp_path: Path) -> None:
    text = "machine;temp;pressure;label\nm1;21,5;1,25;0\nm2;22,75;1,5;1\nm1;23;1,125;0\n"
    table = read_table(write(tmp_path / "line.csv", text))
    assert table.features == ["temp", "pressure"]
    assert table.values.tolist() == [[21.5, 1.25], [22.75, 1.5], [23.0, 1.125]]
    assert table.labels is not None and table.labels.tolist() == [0, 1, 0]
    assert table.timestamps is None and table.segments is not None and table.segments.tolist() == [0, 0, 0]
    assert "delimiter ';'" in table.notes and any("decimal comma" in note for note in table.notes)


def test_decimal_comma_column_with_a_bad_cell_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"column 'a' row 2 holds '3,x', not a number"):
        read_table(write(tmp_path / "bad.csv", "a;b\n1,5;2\n3,x;4\n2,5;6\n"))


def test_tab_separated_file(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "line.tsv", "a\tb\tnote\n1.5\t2\tok\n2.5\t3\tok\n"))
    assert table.features == ["a", "b"] and table.values.tolist() == [[1.5, 2.0], [2.5, 3.0]]
    assert "delimiter '\\t'" in table.notes


def test_comma_file_never_reads_a_decimal_comma(tmp_path: Path) -> None:
    # unquoted, 1,5 is two cells; quoted, "1,5" is text, refused rather than read as 1.5
    assert read_table(write(tmp_path / "three.csv", "a,b,c\n1,5,2\n3,4,6\n")).values.tolist() == [[1, 5, 2], [3, 4, 6]]
    with pytest.raises(DataError, match=r"column 'a' row 1 holds '1,5', not a number"):
        read_table(write(tmp_path / "quoted.csv", 'a,b\n"1,5",2\n3,4\n'))


def test_shuffled_rows_are_sorted_by_timestamp(tmp_path: Path) -> None:
    text = (
        "Timestamp,a,b,fault\n"
        "2026-11-01T08:02:00,3,30,x\n"
        "2026-11-01 08:00:00+00:00,1,10,y\n"
        "2026-11-01T10:01:00+02:00,2,20,z\n"  # 08:01 UTC
        "2026-11-01T08:03:00Z,4,40,w\n"
    )
    table = read_table(write(tmp_path / "line.csv", text))
    assert table.features == ["a", "b"]  # the timestamp column is never a feature
    assert table.values[:, 0].tolist() == [1, 2, 3, 4] and table.groups == ["y", "z", "x", "w"]
    start = 1793520000.0  # 2026-11-01T08:00:00Z
    assert table.timestamps is not None and table.timestamps.tolist() == [start + 60 * i for i in range(4)]
    assert table.timestamps.dtype == np.float64 and "sorted by timestamp" in table.notes


def test_epoch_seconds_and_a_named_time_column(tmp_path: Path) -> None:
    path = write(tmp_path / "line.csv", "when,a,b\n120,3,1\n0,1,2\n60,2,3\n")
    table = read_table(path, time_column="when")
    assert table.features == ["a", "b"] and table.values[:, 0].tolist() == [1, 2, 3]
    assert table.timestamps is not None and table.timestamps.tolist() == [0, 60, 120]
    with pytest.raises(ConfigError, match="time column 'then' is not in"):
        read_table(path, time_column="then")
    with pytest.raises(ConfigError, match="timestamp column and never a feature"):
        read_table(path, ["when", "a"], time_column="when")


def test_gaps_split_segments(tmp_path: Path) -> None:
    stamps = [0, 60, 120, 180, 900, 960, 1020, 5000, 5060]  # median interval 60 s; two long pauses
    rows = "".join(f"{t},{i},{2 * i}\n" for i, t in enumerate(stamps))
    path = write(tmp_path / "line.csv", "ts,a,b\n" + rows)
    table = read_table(path)
    assert table.segments is not None and table.segments.dtype == np.int64
    assert table.segments.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2]
    assert "2 gaps longer than 5x the median interval of 60 s: 3 segments" in table.notes
    loose = read_table(path, gap_factor=100.0)
    assert loose.segments is not None and loose.segments.tolist() == [0] * 9
    with pytest.raises(ConfigError, match="gap_factor"):
        read_table(path, gap_factor=0.0)


def test_duplicate_timestamp_names_both_rows(tmp_path: Path) -> None:
    text = "ts,a,b\n2026-11-01T08:00:00,1,2\n2026-11-01T08:01:00,3,4\n2026-11-01 08:00:00,5,6\n"
    with pytest.raises(DataError, match=r"timestamp column 'ts' has 2026-11-01T08:00:00\+00:00 twice, at rows 1 and 3"):
        read_table(write(tmp_path / "dup.csv", text))


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (["2026-11-01T08:00:00", "08:01 yesterday", "2026-11-01T08:02:00"], "timestamp column 'time' row 2 holds"),
        (["2026-11-01T08:00:00", "2026-11-01T08:01:00", ""], "timestamp column 'time' is empty at row 3"),
    ],
)
def test_bad_timestamp_names_the_row(tmp_path: Path, cells: list[str], message: str) -> None:
    text = "a,time,b\n" + "".join(f"{i},{cell},{i}\n" for i, cell in enumerate(cells))
    with pytest.raises(DataError, match=message):
        read_table(write(tmp_path / "bad.csv", text))


GAPPY = "ts,a,b,label\n120,,6,0\n0,0,0,0\n60,,3,1\n180,3,9,0\n240,4,12,0\n"  # a empty at file rows 1 and 3


def test_fill_refuse_is_the_default(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"column 'a' is empty at row 1"):
        read_table(write(tmp_path / "line.csv", GAPPY))
    with pytest.raises(ConfigError, match=r"\['refuse', 'ffill', 'interpolate'\]"):
        zero: Any = "zero"
        read_table(write(tmp_path / "line.csv", GAPPY), fill=zero)


def test_fill_ffill_carries_the_last_reading_in_time(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "line.csv", GAPPY), fill="ffill")
    assert table.values[:, 0].tolist() == [0, 0, 0, 3, 4] and table.values[:, 1].tolist() == [0, 3, 6, 9, 12]
    assert table.labels is not None and table.labels.tolist() == [0, 1, 0, 0, 0]
    assert "filled 2 cell(s) by ffill" in table.notes


def test_fill_interpolate_is_linear_in_time(tmp_path: Path) -> None:
    text = "ts,a,b\n0,0,1\n30,,1\n120,4,1\n180,,1\n240,8,1\n"  # uneven times: 30 s of 120 is a quarter
    table = read_table(write(tmp_path / "line.csv", text), fill="interpolate")
    assert table.values[:, 0].tolist() == [0, 1, 4, 6, 8]
    no_times = read_table(write(tmp_path / "rows.csv", "a,b\n0,1\n,1\n,1\n6,1\n"), fill="interpolate")
    assert no_times.values[:, 0].tolist() == [0, 2, 4, 6]  # in row order


@pytest.mark.parametrize(
    ("fill", "text", "row"),
    [
        ("ffill", "ts,a,b\n60,1,1\n0,,1\n", 2),  # row 2 is the first reading in time
        ("ffill", "ts,a,b\n0,1,1\n60,2,1\n120,3,1\n1000,,1\n1060,5,1\n", 4),  # first after a gap
        ("interpolate", "ts,a,b\n0,1,1\n60,2,1\n120,,1\n", 3),  # nothing after it
        ("interpolate", "ts,a,b\n0,1,1\n60,,1\n1000,3,1\n1060,4,1\n", 2),  # the gap cuts it off from 1000 s
    ],
)
def test_fill_refuses_what_it_cannot_fill(tmp_path: Path, fill: Any, text: str, row: int) -> None:
    with pytest.raises(DataError, match=rf"column 'a' is empty at row {row} and cannot be filled: fill='{fill}'"):
        read_table(write(tmp_path / "line.csv", text), fill=fill)


def test_label_is_never_filled(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"label column 'label' is empty at row 2: labels are never filled"):
        read_table(write(tmp_path / "line.csv", "a,b,label\n1,2,0\n3,4,\n5,6,1\n"), fill="ffill")


def test_parquet_timestamps_and_fill(tmp_path: Path) -> None:
    path = tmp_path / "line.parquet"
    stamps = pa.array([120_000, 0, 60_000], pa.timestamp("ms", tz="UTC"))
    pq.write_table(pa.table({"timestamp": stamps, "a": [3.0, 1.0, float("nan")], "b": [30, 10, None]}), path)
    table = read_table(path, fill="ffill")
    assert table.features == ["a", "b"] and table.values.tolist() == [[1, 10], [1, 10], [3, 30]]
    assert table.timestamps is not None and table.timestamps.tolist() == [0, 60, 120]


def test_sample_column_is_an_index_not_a_feature(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "line.csv", "sample,a,b\n1,5,6\n2,7,8\n3,9,1\n"))
    assert table.features == ["a", "b"] and any("'sample'" in note for note in table.notes)
    assert read_table(tmp_path / "line.csv", ["sample", "a"]).features == ["sample", "a"]  # named: kept
    shuffled = read_table(write(tmp_path / "other.csv", "Index,a,b\n3,5,6\n1,7,8\n2,9,1\n"))
    assert shuffled.features == ["Index", "a", "b"]  # not increasing: a measurement after all


def test_old_constructors_still_work(tmp_path: Path) -> None:
    table = SensorTable(tmp_path, ["a"], np.zeros((2, 1), np.float32), None)
    assert table.timestamps is None and table.segments is None and table.notes == []


@pytest.mark.skipif(not TEP.is_dir(), reason=f"the Tennessee Eastman data set is not at {TEP}")
def test_tennessee_eastman_training_file() -> None:
    table = read_table(TEP / "train_normal.csv")
    assert len(table.features) == 52 and "sample" not in table.features
    assert table.features[0] == "xmeas_1" and table.features[-1] == "xmv_11"
    assert table.values.shape == (500, 52) and np.isfinite(table.values).all()
    assert table.segments is not None and table.segments.tolist() == [0] * 500
