"""The ray engine writes what the local engine writes, byte for byte, on real CC3M captions
with bad rows planted and on LAION-style parquet; a rerun reads the parsed rows back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instructgen.cc3m import filter_cc3m
from instructgen.cc3m import ray_engine as cc3m_ray

ROOT = Path(__file__).resolve().parent.parent
SAME_BYTES = ("cc3m_filtered.jsonl", "pretrain.json", "np_stats.json", "np_hist.png")
REAL_ROWS = 2000  # cc3m_val_2000.tsv: the first rows of the real validation split
CAP = 20  # max per phrase: low enough that the walk samples some phrases of 2,000 rows
BAD = {  # row index -> a bad line planted there
    7: b"a caption without its url\n",
    100: b"caf\xe9 au lait\thttp://x/1.jpg\n",
    1500: b"   \thttp://x/2.jpg\n",
    1999: b"one\ttoo\tmany\tfields\n",
}
pytestmark = pytest.mark.timeout(900)  # Ray on 2 shared cores: minutes, not seconds


@pytest.fixture(scope="module")
def tsv_runs(ray_local, test_data, tmp_path_factory):
    """Real captions with bad rows planted, filtered by both engines with two seeds; the
    ray engine's second run reuses its parsed rows."""
    root = tmp_path_factory.mktemp("engines")
    lines = (test_data / "cc3m_val_2000.tsv").read_bytes().splitlines(keepends=True)
    assert len(lines) == REAL_ROWS
    for row, line in BAD.items():
        lines[row] = line
    tsv = root / "captions.tsv"
    tsv.write_bytes(b"".join(lines))
    cache = root / "cache.sqlite"
    runs = {}
    for seed in (0, 1):
        local = root / f"local{seed}"
        options = {"seed": seed, "max_per_phrase": CAP}
        runs["local", seed] = filter_cc3m(tsv, local, workers=2, cache_path=cache, **options), local
        runs["ray", seed] = filter_cc3m(tsv, root / "ray", engine="ray", **options), root / "ray"
        for name in SAME_BYTES:  # the ray folder is written again by the next seed
            (root / f"ray{seed}.{name}").write_bytes((root / "ray" / name).read_bytes())
    return root, runs


@pytest.mark.parametrize("seed", [0, 1])
def test_both_engines_write_the_same_bytes(tsv_runs, seed):
    root, runs = tsv_runs
    _, local = runs["local", seed]
    for name in SAME_BYTES:
        assert (root / f"ray{seed}.{name}").read_bytes() == (local / name).read_bytes(), name


def test_the_bad_rows_are_counted_and_named_alike(tsv_runs):
    _, runs = tsv_runs
    (local, _), (ray, _) = runs["local", 0], runs["ray", 0]
    assert local.bad_lines == ray.bad_lines == 4
    assert (
        ray.bad_examples
        == local.bad_examples
        == [
            "line 8: 1 fields, expected 2",
            "line 101: invalid UTF-8 at byte 3",
            "line 1501: empty caption",
            "line 2000: 4 fields, expected 2",
        ]
    )
    assert (ray.rows, ray.unique_captions) == (local.rows, local.unique_captions)


def test_the_walk_sampled_frequent_phrases(tsv_runs):
    root, _ = tsv_runs
    stats = json.loads((root / "ray0.np_stats.json").read_text())
    assert max(stats["before"]["frequency"].values()) > CAP
    assert stats["after"]["captions"] < stats["before"]["captions"]


def test_a_rerun_with_another_seed_reads_the_parsed_rows_and_parses_nothing(tsv_runs):
    root, runs = tsv_runs
    first, second = runs["ray", 0][0], runs["ray", 1][0]
    assert (first.parsed, first.cached) == (REAL_ROWS - 4, 0)
    assert (second.parsed, second.cached) == (0, REAL_ROWS - 4)
    assert list((root / "ray/np_phrases").glob("*.parquet"))
    assert (root / "ray0.cc3m_filtered.jsonl").read_bytes() != (
        root / "ray1.cc3m_filtered.jsonl"
    ).read_bytes()


def test_laion_parquet_gives_the_same_bytes_and_ids_from_the_key_column(
    ray_local, test_data, tmp_path, monkeypatch
):
    # small batches and partitions, so the count shuffles between several tasks
    monkeypatch.setattr(cc3m_ray, "PARSE_CHUNK", 50)
    monkeypatch.setattr(cc3m_ray, "ROWS_PER_PARTITION", 100)
    lines = (test_data / "cc3m_val_300.tsv").read_text(encoding="utf-8").splitlines()
    captions = [line.split("\t")[0] for line in lines]
    urls = [line.split("\t")[1] for line in lines]
    captions[3], captions[200] = None, "  "  # bad rows: no caption, a blank one
    keys = [f"{i:09d}" for i in range(len(lines))]
    for part, rows in enumerate((slice(0, 150), slice(150, None))):
        table = pa.table({"key": keys[rows], "TEXT": captions[rows], "URL": urls[rows]})
        (tmp_path / "laion").mkdir(exist_ok=True)
        pq.write_table(table, tmp_path / f"laion/part-{part:05d}.parquet", row_group_size=64)
    glob = str(tmp_path / "laion/*.parquet")
    local = filter_cc3m([glob], tmp_path / "local", workers=2, min_freq=2, max_per_phrase=3)
    ray = filter_cc3m([glob], tmp_path / "ray", engine="ray", min_freq=2, max_per_phrase=3)
    for name in SAME_BYTES:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert ray.bad_lines == local.bad_lines == 2
    assert ray.bad_examples[0] == f"{tmp_path}/laion/part-00000.parquet row 3: empty caption"
    pool = (tmp_path / "ray/cc3m_filtered.jsonl").read_text().splitlines()
    ids = {json.loads(line)["id"] for line in pool}
    assert ids and ids <= set(keys)


def test_without_the_extra_the_ray_engine_says_how_to_install_it(tmp_path):
    code = (
        "import sys; sys.modules['ray'] = None; sys.argv[0] = 'instructgen';"
        "from instructgen.cli import main; main()"
    )
    args = [
        "cc3m",
        str(ROOT / "tests/data/cc3m_val_300.tsv"),
        "-o",
        str(tmp_path),
        "--engine",
        "ray",
    ]
    run = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: the ray engine needs the [ray] extra: pip install 'instructgen[ray]'"
    ]
