"""CC3M filter input: LAION / img2dataset parquet files, folders and globs; TSV pieces."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instructgen.cc3m.input import BadRow, open_source
from instructgen.errors import InputError


def write_parquet(path: Path, columns: dict, row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def rows_of(inputs, **kwargs) -> list[tuple]:
    return [
        (r.row, r.where, r.reason) if isinstance(r, BadRow) else (r.row, r.id, r.caption, r.url)
        for r in open_source(inputs, **kwargs).read()
    ]


def test_laion_columns_give_caption_and_url_and_row_ids_across_files(tmp_path):
    write_parquet(tmp_path / "laion/part-00000.parquet", {"TEXT": ["a red bus"], "URL": ["u0"]})
    write_parquet(
        tmp_path / "laion/part-00001.parquet",
        {"URL": ["u1", "u2"], "TEXT": ["an  old\tbridge", "a cat"], "similarity": [0.3, 0.4]},
    )
    assert rows_of([tmp_path / "laion"]) == [
        (0, "GCC_train_000000000", "a red bus", "u0"),
        (1, "GCC_train_000000001", "an old bridge", "u1"),
        (2, "GCC_train_000000002", "a cat", "u2"),
    ]


def test_an_id_column_gives_the_ids_and_numbers_become_text(tmp_path):
    data = {"key": [7, 9], "caption": ["a red bus", "a boat"], "url": ["u7", None]}
    path = write_parquet(tmp_path / "shard.parquet", data)
    assert rows_of([path]) == [(0, "7", "a red bus", "u7"), (1, "9", "a boat", None)]


def test_bad_parquet_rows_are_named_by_file_and_row_and_keep_their_numbers(tmp_path):
    path = write_parquet(
        tmp_path / "shard.parquet",
        {"id": ["a", "b", None, "d", "e"], "caption": ["ok", None, "no id", " \t", "fine"]},
        row_group_size=2,
    )
    assert rows_of([path]) == [
        (0, "a", "ok", None),
        (1, f"{path} row 1", "empty caption"),
        (2, f"{path} row 2", "empty id"),
        (3, f"{path} row 3", "empty caption"),
        (4, "e", "fine", None),
    ]


def test_a_glob_takes_the_matching_files_in_sorted_order(tmp_path):
    for name in ("b", "a", "c"):
        write_parquet(tmp_path / f"{name}.parquet", {"caption": [f"caption {name}"]})
    (tmp_path / "notes.txt").write_text("not input")
    rows = rows_of([str(tmp_path / "[ab].parquet")])
    assert [r[2] for r in rows] == ["caption a", "caption b"]


def test_a_parquet_file_without_a_caption_column_is_an_error_naming_it(tmp_path):
    path = write_parquet(tmp_path / "shard.parquet", {"text_en": ["a bus"], "url": ["u"]})
    with pytest.raises(InputError, match=r"shard.parquet: no caption column; .*caption or TEXT"):
        open_source([path])


def test_a_caption_column_that_is_not_text_is_an_error(tmp_path):
    path = write_parquet(tmp_path / "shard.parquet", {"caption": [1, 2]})
    with pytest.raises(InputError, match="column 'caption' holds int64, not text"):
        open_source([path])


def test_a_folder_without_parquet_files_is_an_error(tmp_path):
    with pytest.raises(InputError, match="folder holds no \\*.parquet file"):
        open_source([tmp_path])


def test_tsv_pieces_read_the_same_rows_as_the_whole_file(test_data, tmp_path):
    lines = (test_data / "cc3m_val_300.tsv").read_bytes().splitlines(keepends=True)
    lines[5] = b"no url on this line\n"
    lines[40] = b"caf\xe9\thttp://x\n"
    tsv = tmp_path / "c.tsv"
    tsv.write_bytes(b"caption\turl\n" + b"".join(lines).rstrip(b"\n"))  # header, no final newline
    whole = rows_of([tsv])
    source = open_source([tsv], piece_bytes=1000)
    assert len(source.pieces) > 10 and source.rows == 300
    assert rows_of([tsv], piece_bytes=1000) == whole
    assert (whole[5][1], whole[40][1]) == ("line 7", "line 42")
