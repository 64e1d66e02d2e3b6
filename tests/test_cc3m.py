"""The CC3M filter on tiny hand-made inputs: phrase normalization, the walk, input layouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spacy
from spacy.tokens import Doc

from instructgen.cc3m import filter_cc3m
from instructgen.cc3m.input import detect_layout, read_rows
from instructgen.cc3m.local import PhraseCache
from instructgen.cc3m.phrases import noun_phrases, resolve_model
from instructgen.cc3m.selection import PhraseTable, in_key_order, sample_keys, select_pool, walk
from instructgen.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def parsed(words, pos, heads, deps) -> Doc:
    """A Doc with a hand-written parse (no model), so noun chunks are known in advance."""
    return Doc(spacy.blank("en").vocab, words=words, pos=pos, heads=heads, deps=deps)


def test_noun_phrases_are_lowercased_without_leading_determiners():
    doc = parsed(
        ["All", "the", "Red", "cars", "near", "a", "house"],
        ["DET", "DET", "ADJ", "NOUN", "ADP", "DET", "NOUN"],
        [3, 3, 3, 3, 3, 6, 4],
        ["predet", "det", "amod", "ROOT", "prep", "det", "pobj"],
    )
    assert noun_phrases(doc) == ("red cars", "house")


def test_a_chunk_of_only_determiners_gives_no_phrase_and_repeats_count_once():
    doc = parsed(
        ["this", "and", "dog", "and", "dog"],
        ["DET", "CCONJ", "NOUN", "CCONJ", "NOUN"],
        [0, 0, 0, 2, 2],
        ["ROOT", "cc", "conj", "cc", "conj"],
    )
    assert noun_phrases(doc) == ("dog",)


def mask(pool: np.ndarray) -> set[int]:
    return set(np.flatnonzero(pool).tolist())


def test_phrases_below_min_freq_do_not_bring_captions_in():
    table = PhraseTable.from_lists([["rare"], ["rare"], ["cat"], ["cat"], ["cat"]])
    assert mask(select_pool(table, min_freq=3)) == {2, 3, 4}


def test_a_phrase_with_few_captions_takes_all_of_them():
    table = PhraseTable.from_lists([["cat", "mat"]] * 3 + [["mat"]] * 2)
    assert mask(select_pool(table, min_freq=3, max_per_phrase=100)) == {0, 1, 2, 3, 4}


def test_a_frequent_phrase_adds_at_most_max_per_phrase_captions():
    table = PhraseTable.from_lists([["dog"]] * 10)
    assert len(mask(select_pool(table, min_freq=1, max_per_phrase=4))) == 4


def test_the_walk_goes_from_least_to_most_frequent_phrase():
    # cat (2 rows) is walked first and takes rows 0 and 1; dog then samples 2 of rows 2-4
    table = PhraseTable.from_lists([["dog", "cat"], ["cat", "dog"], ["dog"], ["dog"], ["dog"]])
    for seed in range(20):
        pool = mask(select_pool(table, min_freq=1, max_per_phrase=2, seed=seed))
        assert {0, 1} <= pool and len(pool) == 4


def test_equally_frequent_phrases_walk_in_text_order_taking_fresh_rows_of_smallest_key():
    # "b" (rows 0-2) and "a" (rows 1-3) tie at 3 rows; "a" is walked first
    table = PhraseTable.from_lists([["b"], ["b", "a"], ["a", "b"], ["a"]])
    for seed in range(10):
        a = in_key_order(seed, "a", np.array([1, 2, 3]))[0]
        b = next(r for r in in_key_order(seed, "b", np.array([0, 1, 2])) if r != a)
        assert mask(select_pool(table, min_freq=1, max_per_phrase=1, seed=seed)) == {a, b}


def test_sample_keys_are_distinct_per_row_and_change_with_seed_and_phrase():
    rows = np.arange(100_000)
    keys = sample_keys(0, "dog", rows)
    assert len(np.unique(keys)) == len(rows)
    assert not np.array_equal(keys, sample_keys(1, "dog", rows))
    assert not np.array_equal(keys, sample_keys(0, "cat", rows))


def test_the_walk_pools_the_same_rows_when_candidates_come_in_chunks():
    # the ray engine sends a key-ordered prefix and fetches the rest only when it runs out
    rng = np.random.default_rng(0)
    lists = {p: np.sort(rng.choice(500, 120, replace=False)) for p in range(30)}
    ordered = {p: in_key_order(3, str(p), rows) for p, rows in lists.items()}
    whole, chunked = np.zeros(500, bool), np.zeros(500, bool)
    chunked[:50] = whole[:50] = True  # rows pooled earlier, by rarer phrases
    walk(range(30), lambda p: [ordered[p]], whole, max_per_phrase=20)
    walk(range(30), lambda p: np.array_split(ordered[p], 12), chunked, max_per_phrase=20)
    assert np.array_equal(whole, chunked)


def test_a_phrase_counts_once_per_caption():
    table = PhraseTable.from_lists([["cat", "cat"], ["cat"]])
    assert table.frequency().tolist() == [2]
    assert table.row_phrases(0) == ["cat"]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_bad_lines_are_reported_and_do_not_shift_ids(tmp_path):
    tsv = write(
        tmp_path / "c.tsv",
        b"a dog on a beach\thttp://x/0.jpg\n"
        b"no url here\n"
        b"caf\xe9 in paris\thttp://x/2.jpg\n"
        b"  \thttp://x/3.jpg\n"
        b"a cat on a sofa\thttp://x/4.jpg\r\n",
    )
    items = list(read_rows(tsv, detect_layout(tsv)))
    good = [i for i in items if not hasattr(i, "reason")]
    bad = [(i.where, i.reason) for i in items if hasattr(i, "reason")]
    assert [(g.id, g.caption, g.url) for g in good] == [
        ("GCC_train_000000000", "a dog on a beach", "http://x/0.jpg"),
        ("GCC_train_000000004", "a cat on a sofa", "http://x/4.jpg"),
    ]
    assert bad == [
        ("line 2", "1 fields, expected 2"),
        ("line 3", "invalid UTF-8 at byte 3"),
        ("line 4", "empty caption"),
    ]


def test_plain_text_is_one_caption_per_line(tmp_path):
    txt = write(tmp_path / "c.txt", b"a red bus\nthe old bridge\n")
    rows = list(read_rows(txt, detect_layout(txt)))
    assert [(r.id, r.caption, r.url) for r in rows] == [
        ("GCC_train_000000000", "a red bus", None),
        ("GCC_train_000000001", "the old bridge", None),
    ]


def test_an_id_column_gives_the_ids(tmp_path):
    tsv = write(tmp_path / "c.tsv", b"img7\ta red bus\thttp://x/7.jpg\n\ta boat\thttp://x/8.jpg\n")
    items = list(read_rows(tsv, detect_layout(tsv)))
    assert (items[0].id, items[0].caption) == ("img7", "a red bus")
    assert items[1].reason == "empty id"


def test_a_header_row_names_the_columns(tmp_path):
    tsv = write(tmp_path / "c.tsv", b"url\tcaption\nhttp://x/0.jpg\ta red bus\n")
    (row,) = read_rows(tsv, detect_layout(tsv))
    assert (row.id, row.caption, row.url) == ("GCC_train_000000000", "a red bus", "http://x/0.jpg")


def test_an_unknown_layout_is_an_error_that_says_what_is_expected(tmp_path):
    tsv = write(tmp_path / "c.tsv", b"a\tb\tc\td\n" * 3)
    with pytest.raises(InputError, match="expected 1 \\(caption\\), 2"):
        detect_layout(tsv)


def test_a_missing_model_says_how_to_install_one():
    with pytest.raises(InputError, match="python -m spacy download en_core_web_sm"):
        resolve_model("no_such_spacy_model")


def test_the_cache_returns_what_was_stored_for_the_same_model_only(tmp_path):
    cache = PhraseCache(tmp_path / "c.sqlite", "model-a")
    cache.put_many({"a red bus": ("red bus",), "it": ()})
    assert cache.get_many(["a red bus", "it", "other"]) == {"a red bus": ("red bus",), "it": ()}
    cache.close()
    assert PhraseCache(tmp_path / "c.sqlite", "model-b").get_many(["a red bus"]) == {}


def test_a_small_run_writes_every_output(test_data, tmp_path):
    tsv = write(
        tmp_path / "c.tsv",
        b"a dog on a beach\thttp://x/0.jpg\n" * 3
        + b"broken line\n"
        + b"a dog in snow\thttp://x/4\n",
    )
    s = filter_cc3m(tsv, tmp_path / "out", workers=1)
    assert (s.rows, s.bad_lines, s.unique_captions, s.parsed) == (5, 1, 2, 2)
    assert s.bad_examples == ["line 4: 1 fields, expected 2"]
    pool = [json.loads(line) for line in (tmp_path / "out/cc3m_filtered.jsonl").open()]
    assert [r["id"] for r in pool] == [f"GCC_train_00000000{i}" for i in (0, 1, 2, 4)]
    assert pool[0]["noun_phrases"] == ["dog", "beach"]
    stats = json.loads((tmp_path / "out/np_stats.json").read_text())
    assert stats["before"]["frequency"] == {"dog": 4, "beach": 3, "snow": 1}
    assert stats["after"]["captions"] == 4
    assert len(json.loads((tmp_path / "out/pretrain.json").read_text())) == 4


def test_the_command_turns_bad_input_into_one_line(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "instructgen.cli",
            "cc3m",
            str(tmp_path / "none.tsv"),
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 1
    assert "none.tsv: no such file" in run.stderr and "Traceback" not in run.stderr
