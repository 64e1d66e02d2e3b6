"""CC3M filter speed: spaCy parsing and pool selection, each beside a naive baseline.

1. Parsing, on the real CC3M validation captions (../shared/data/cc3m): the naive baseline
   (`nlp(caption)` per caption, full pipeline) on the first NAIVE_CAPTIONS distinct captions,
   against ours (`parse_captions`: `nlp.pipe`, `ner` and `lemmatizer` excluded, worker
   processes, fresh cache, start-up included) on the same captions and on all of them; the
   noun phrases of both are checked equal; the time for 3.3M captions is projected.
2. Selection on synthetic phrase lists the size of CC3M (3.3M captions, Zipf-distributed
   phrases): `select_pool` against a plain-Python walk, both on a tenth, ours also at full size.

Run: .venv/bin/python benchmarks/cc3m.py  (a few minutes; figures go to stdout)
"""

from __future__ import annotations

import os
import random
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from instructgen.cc3m import (
    PhraseCache,
    PhraseTable,
    model_key,
    noun_phrases,
    parse_captions,
    resolve_model,
    select_pool,
)
from instructgen.cc3m_input import detect_layout, read_rows

CC3M = Path(__file__).resolve().parents[2] / "shared/data/cc3m/Validation_GCC-1.1.0-Validation.tsv"
NAIVE_CAPTIONS = 2000  # the naive baseline runs ~200 captions/s: ~10 s
CC3M_SIZE = 3_300_000
SYNTHETIC_VOCAB = 1_500_000  # phrase ids are drawn in [0, this); ~0.3M of them occur
PHRASES_PER_CAPTION = (1, 6)  # uniform in [1, 6): about 3 on average, as in real captions
ZIPF = 1.3  # phrase-id exponent: gives a pool of ~0.7M of 3.3M, near the real ~595K
WORKERS = os.cpu_count() or 1


def peak_rss_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child, MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def unique_captions() -> list[str]:
    rows = read_rows(CC3M, detect_layout(CC3M))
    return list(dict.fromkeys(r.caption for r in rows if not hasattr(r, "reason")))


def naive(texts: list[str], model: str) -> tuple[float, list]:
    import spacy

    nlp = spacy.load(model)
    started = time.perf_counter()
    phrases = [noun_phrases(nlp(t)) for t in texts]
    return time.perf_counter() - started, phrases


def ours(texts: list[str], model: str, workers: int, tmp: Path) -> tuple[float, list]:
    started = time.perf_counter()  # start-up (model load, worker processes) included
    cache = PhraseCache(tmp / f"cache-{workers}-{len(texts)}.sqlite", model_key(model))
    phrases = list(parse_captions(texts, model, cache, workers=workers))
    cache.close()
    return time.perf_counter() - started, phrases


def synthetic_table(captions: int, seed: int = 0) -> PhraseTable:
    """Phrase lists with Zipf-distributed phrase ids, as real noun phrases are; a phrase is
    listed once per caption, as in real tables."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(*PHRASES_PER_CAPTION, size=captions)
    ids = (rng.zipf(ZIPF, size=int(lengths.sum())) - 1) % SYNTHETIC_VOCAB
    rows = np.repeat(np.arange(captions, dtype=np.int64), lengths)
    pairs = np.unique(rows * SYNTHETIC_VOCAB + ids)  # drops repeats within a caption
    rows, ids = np.divmod(pairs, SYNTHETIC_VOCAB)
    offsets = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=captions))))
    return PhraseTable([f"p{i}" for i in range(SYNTHETIC_VOCAB)], offsets, ids.astype(np.int32))


def python_walk(table: PhraseTable, min_freq=3, max_per_phrase=100, seed=0) -> set[int]:
    """The filter written directly: phrase -> rows, then the walk with random.sample."""
    rows_of: dict[int, list[int]] = defaultdict(list)
    for row in range(table.rows):
        for phrase in table.ids[table.offsets[row] : table.offsets[row + 1]].tolist():
            rows_of[phrase].append(row)
    rng = random.Random(seed)
    pool: set[int] = set()
    for _, rows in sorted((len(r), r) for r in rows_of.values() if len(r) >= min_freq):
        fresh = [r for r in rows if r not in pool]
        pool.update(rng.sample(fresh, max_per_phrase) if len(fresh) > max_per_phrase else fresh)
    return pool


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def main() -> None:
    if not CC3M.is_file():
        sys.exit(f"{CC3M} not found (shared data sits beside the project)")
    model = resolve_model(None)
    texts = unique_captions()
    subset = texts[:NAIVE_CAPTIONS]
    print(
        f"parsing: {model_key(model)}, {WORKERS} CPU cores, load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t_naive, p_naive = naive(subset, model)
        t_one, p_one = ours(subset, model, 1, Path(tmp))
        t_sub, p_sub = ours(subset, model, WORKERS, Path(tmp))
        t_all, p_all = ours(texts, model, WORKERS, Path(tmp))
    assert p_naive == p_one == p_sub == p_all[:NAIVE_CAPTIONS], "noun phrases differ"
    base = len(subset) / t_naive
    print(f"{'':44s}{'captions':>9s}{'seconds':>9s}{'capt/s':>9s}{'vs naive':>9s}{'3.3M, h':>9s}")
    for name, n, t in (
        ("naive: nlp(caption), full pipeline", len(subset), t_naive),
        ("ours, 1 process, same captions", len(subset), t_one),
        (f"ours, {WORKERS} workers, same captions", len(subset), t_sub),
        (f"ours, {WORKERS} workers, all distinct captions", len(texts), t_all),
    ):
        rate = n / t
        print(
            f"{name:44s}{n:9,d}{t:9.1f}{rate:9.0f}{rate / base:8.1f}x{CC3M_SIZE / rate / 3600:9.2f}"
        )
    print("noun phrases identical to the naive baseline's: yes")
    own, child = peak_rss_mib()
    print(f"peak RSS after parsing: main {own:.0f} MiB, largest worker {child:.0f} MiB")

    print(f"\nselection: synthetic Zipf phrase lists, {SYNTHETIC_VOCAB:,} phrase vocabulary")
    tenth = synthetic_table(CC3M_SIZE // 10)
    t_py, pool_py = timed(python_walk, tenth)
    t_np, pool_np = timed(select_pool, tenth)
    # the samples differ (two generators), so pool sizes may differ a little, not more
    assert abs(len(pool_py) - int(pool_np.sum())) < 0.01 * len(pool_py), "the walks disagree"
    full = synthetic_table(CC3M_SIZE)
    t_full, pool_full = timed(select_pool, full)
    print(f"{'':36s}{'captions':>11s}{'pairs':>12s}{'pool':>10s}{'seconds':>9s}{'vs python':>10s}")
    for name, table, pool, t in (
        ("python walk (dict + random.sample)", tenth, len(pool_py), t_py),
        ("select_pool (numpy)", tenth, int(pool_np.sum()), t_np),
        ("select_pool (numpy), CC3M size", full, int(pool_full.sum()), t_full),
    ):
        print(
            f"{name:36s}{table.rows:11,d}{len(table.ids):12,d}{pool:10,d}{t:9.2f}"
            f"{t_py / t * table.rows / tenth.rows:9.1f}x"
        )
    print(f"peak RSS at the end: {peak_rss_mib()[0]:.0f} MiB")


if __name__ == "__main__":
    main()
