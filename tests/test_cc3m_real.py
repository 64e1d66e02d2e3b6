"""The CC3M filter on real CC3M validation captions (the first 2,000 rows, in tests/data): the
invariants of the pool, the parse cache, the outputs, and noun phrases equal to those of the
full spaCy pipeline; and the same invariants on the whole split where ../shared/data has it."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from instructgen.cc3m import filter_cc3m
from instructgen.cc3m.local import PhraseCache, parse_captions
from instructgen.cc3m.outputs import BRIEF_INSTRUCTIONS
from instructgen.cc3m.phrases import model_key, noun_phrases, resolve_model

MIN_FREQ = 3
MAX_PER_PHRASE = 20  # low enough that phrases of 2,000 captions are sampled, not all taken
ROWS, UNIQUE = 2000, 1981  # rows of cc3m_val_2000.tsv; distinct captions among them


@pytest.fixture(scope="module")
def runs(test_data, tmp_path_factory):
    """One parse of the 2,000 captions, then three selections from the same cache."""
    tsv = test_data / "cc3m_val_2000.tsv"
    root = tmp_path_factory.mktemp("cc3m")
    cache = root / "cache.sqlite"
    options = {"max_per_phrase": MAX_PER_PHRASE, "workers": 2, "cache_path": cache}
    summaries = {
        name: (filter_cc3m(tsv, root / name, seed=seed, **options), root / name)
        for name, seed in (("seed0", 0), ("seed0_again", 0), ("seed1", 1))
    }
    return summaries


def pool(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "cc3m_filtered.jsonl").open(encoding="utf-8")]


def stats(out: Path) -> dict:
    return json.loads((out / "np_stats.json").read_text(encoding="utf-8"))


def assert_every_pool_caption_has_a_phrase_of_at_least_min_freq(out: Path) -> None:
    before = stats(out)["before"]["frequency"]
    for record in pool(out):
        assert max(before[p] for p in record["noun_phrases"]) >= MIN_FREQ, record


def assert_every_kept_phrase_has_at_least_min_of_its_freq_and_the_cap(out: Path, cap: int) -> None:
    before = stats(out)["before"]["frequency"]
    in_pool: dict[str, int] = defaultdict(int)
    for record in pool(out):
        for phrase in record["noun_phrases"]:
            in_pool[phrase] += 1
    kept = {p: f for p, f in before.items() if f >= MIN_FREQ}
    assert kept
    for phrase, freq in kept.items():
        assert in_pool[phrase] >= min(freq, cap), phrase


def test_every_pool_caption_has_a_phrase_of_at_least_min_freq(runs):
    assert_every_pool_caption_has_a_phrase_of_at_least_min_freq(runs["seed0"][1])


def test_every_kept_phrase_has_at_least_min_of_its_freq_and_the_cap_in_the_pool(runs):
    assert_every_kept_phrase_has_at_least_min_of_its_freq_and_the_cap(
        runs["seed0"][1], MAX_PER_PHRASE
    )


def test_rerunning_with_another_seed_parses_nothing(runs):
    first, _ = runs["seed0"]
    assert first.parsed == first.unique_captions == UNIQUE
    for name in ("seed0_again", "seed1"):
        summary, _ = runs[name]
        assert (summary.parsed, summary.cached) == (0, UNIQUE)


def test_the_same_seed_gives_the_same_outputs(runs):
    (_, a), (_, b) = runs["seed0"], runs["seed0_again"]
    for name in ("cc3m_filtered.jsonl", "pretrain.json", "np_stats.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_another_seed_samples_another_subset_of_frequent_phrases(runs):
    before = stats(runs["seed0"][1])["before"]["frequency"]
    pools = {name: pool(runs[name][1]) for name in ("seed0", "seed1")}
    assert pools["seed0"] != pools["seed1"]
    sampled = 0
    for phrase in (p for p, f in before.items() if f > MAX_PER_PHRASE):
        ids = [{r["id"] for r in rows if phrase in r["noun_phrases"]} for rows in pools.values()]
        if len(ids[0]) < before[phrase]:  # not all its captions joined: it was sampled
            sampled += 1
            assert ids[0] != ids[1], phrase
    assert sampled > 0


def test_stats_agree_with_the_pool_and_the_input(runs):
    summary, out = runs["seed0"]
    s = stats(out)
    records = pool(out)
    assert s["input"] == {
        "rows": ROWS,
        "bad_lines": 0,
        "unique_captions": UNIQUE,
        "bad_line_examples": [],
    }
    assert s["before"]["captions"] == ROWS
    assert s["after"]["captions"] == len(records) == summary.pool
    assert 0 < summary.pool < ROWS
    after = defaultdict(int)
    for record in records:
        for phrase in record["noun_phrases"]:
            after[phrase] += 1
    assert s["after"]["frequency"] == dict(after)


def test_pretrain_pairs_a_brief_question_and_the_image_with_the_caption(runs):
    _, out = runs["seed0"]
    phrasings = set(BRIEF_INSTRUCTIONS.read_text().split("\n")) - {""}
    records = json.loads((out / "pretrain.json").read_text(encoding="utf-8"))
    placements = set()
    for sample, row in zip(records, pool(out), strict=True):
        human, gpt = sample["conversations"]
        assert (sample["id"], sample["image"]) == (row["id"], row["id"] + ".jpg")
        assert (human["from"], gpt["from"], gpt["value"]) == ("human", "gpt", row["caption"])
        first, second = human["value"].split("\n")
        assert (first if second == "<image>" else second) in phrasings
        placements.add(first == "<image>")
    assert placements == {True, False}


def test_the_plot_is_a_png_image(runs):
    data = (runs["seed0"][1] / "np_hist.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 800 and height > 400


def captions(test_data: Path) -> list[str]:
    lines = (test_data / "cc3m_val_300.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0] for line in lines]


def test_phrases_equal_those_of_the_full_pipeline(test_data, tmp_path):
    import spacy

    model = resolve_model(None)
    full = spacy.load(model)
    texts = captions(test_data)
    cache = PhraseCache(tmp_path / "c.sqlite", model_key(model))
    ours = list(parse_captions(texts, model, cache, workers=1))
    assert ours == [noun_phrases(full(t)) for t in texts]
    assert sum(map(len, ours)) > 600


def test_worker_processes_give_the_same_phrases_in_the_same_order(test_data, tmp_path):
    model = resolve_model(None)
    texts = captions(test_data)
    one = PhraseCache(tmp_path / "one.sqlite", model_key(model))
    two = PhraseCache(tmp_path / "two.sqlite", model_key(model))
    assert list(parse_captions(texts, model, two, workers=2)) == list(
        parse_captions(texts, model, one, workers=1)
    )


@pytest.mark.shared_data
def test_the_whole_validation_split_keeps_the_pool_invariants(shared_data, tmp_path):
    """All 15,833 rows (15,543 distinct captions) with the default cap of 100 per phrase."""
    tsv = shared_data / "cc3m" / "Validation_GCC-1.1.0-Validation.tsv"
    summary = filter_cc3m(tsv, tmp_path / "out", workers=2, cache_path=tmp_path / "c.sqlite")
    assert (summary.rows, summary.unique_captions, summary.parsed) == (15833, 15543, 15543)
    assert stats(tmp_path / "out")["input"]["bad_lines"] == 0
    assert 0 < summary.pool < 15833
    assert_every_pool_caption_has_a_phrase_of_at_least_min_freq(tmp_path / "out")
    assert_every_kept_phrase_has_at_least_min_of_its_freq_and_the_cap(tmp_path / "out", 100)
