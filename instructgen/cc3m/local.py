"""The local engine: every distinct caption parsed once, by a pool of processes, with the
parses cached in SQLite; the selection and the writers are the shared ones.

Input rows are read twice (once to parse, once to write the pool), never held in memory; what
stays in memory is one entry per distinct caption and flat integer arrays of phrase ids.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np

from instructgen.cc3m.input import BadRow, CaptionRow, CaptionSource, open_source
from instructgen.cc3m.outputs import FilterOptions, FilterSummary, write_outputs
from instructgen.cc3m.phrases import PARSE_CHUNK, PIPE_BATCH, load_pipeline, model_key, phrases_of
from instructgen.cc3m.selection import PhraseTable, select_pool


def filter_local(
    inputs: Sequence[Path | str],
    out_dir: Path,
    options: FilterOptions,
    workers: int | None = None,
    cache_path: Path | None = None,
) -> FilterSummary:
    """The filter in this machine's processes; `workers` defaults to all cores."""
    started = time.perf_counter()
    source = open_source(inputs)
    summary = FilterSummary(model=model_key(options.model), layout=source.description)
    cache = PhraseCache(cache_path or out_dir / "np_cache.sqlite", summary.model)
    try:
        table = _parse_input(source, options.model, cache, workers or os.cpu_count() or 1, summary)
    finally:
        cache.close()
    summary.parse_seconds = time.perf_counter() - started
    pooled = select_pool(table, options.min_freq, options.max_per_phrase, options.seed)
    pool = (
        (item, table.row_phrases(item.row))
        for item in source.read()
        if isinstance(item, CaptionRow) and pooled[item.row]
    )
    after = partial(table.frequency, pooled)
    write_outputs(out_dir, options, summary, table.phrases, table.frequency(), after, pool)
    return summary


def _parse_input(
    source: CaptionSource, model: str, cache: PhraseCache, workers: int, summary: FilterSummary
) -> PhraseTable:
    """Read every row, parse each distinct caption once, and index phrases per row."""
    caption_index: dict[str, int] = {}
    row_caption: list[int] = []  # per row: its distinct caption's index, -1 for a bad row

    def new_captions() -> Iterator[str]:
        for item in source.read():
            summary.rows += 1
            if isinstance(item, BadRow):
                summary.count_bad(item)
                row_caption.append(-1)
                continue
            seen = len(caption_index)
            index = caption_index.setdefault(item.caption, seen)
            row_caption.append(index)
            if index == seen:
                yield item.caption

    count = ParseCount()
    unique = PhraseTable.from_lists(parse_captions(new_captions(), model, cache, workers, count))
    summary.unique_captions = len(caption_index)
    summary.parsed, summary.cached = count.parsed, count.cached
    caption_index.clear()  # the distinct captions are not needed past parsing
    return _expand(unique, np.asarray(row_caption, dtype=np.int64))


def _expand(unique: PhraseTable, row_caption: np.ndarray) -> PhraseTable:
    """The per-row table from the per-distinct-caption one (-1: a bad row, no phrases)."""
    lengths = np.diff(unique.offsets)
    valid = row_caption >= 0
    row_lengths = np.where(valid, lengths[np.where(valid, row_caption, 0)], 0)
    offsets = np.concatenate(([0], np.cumsum(row_lengths))).astype(np.int64)
    starts = np.repeat(unique.offsets[:-1][np.where(valid, row_caption, 0)], row_lengths)
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], row_lengths)
    return PhraseTable(unique.phrases, offsets, unique.ids[starts + within])


class PhraseCache:
    """Noun phrases of captions already parsed, in SQLite: table `noun_phrases`
    (model, caption, phrases as a JSON list), so reruns do not parse again."""

    LOOKUP = 500  # captions per SELECT, under SQLite's bound-variable limit

    def __init__(self, path: Path, key: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS noun_phrases (model TEXT NOT NULL, caption TEXT NOT NULL,"
            " phrases TEXT NOT NULL, PRIMARY KEY (model, caption)) WITHOUT ROWID"
        )

    def get_many(self, captions: Sequence[str]) -> dict[str, tuple[str, ...]]:
        found: dict[str, tuple[str, ...]] = {}
        for i in range(0, len(captions), self.LOOKUP):
            part = captions[i : i + self.LOOKUP]
            marks = ",".join("?" * len(part))
            sql = (
                f"SELECT caption, phrases FROM noun_phrases WHERE model=? AND caption IN ({marks})"
            )
            for caption, phrases in self.db.execute(sql, (self.key, *part)):
                found[caption] = tuple(json.loads(phrases))
        return found

    def put_many(self, parsed: dict[str, tuple[str, ...]]) -> None:
        rows = ((self.key, c, json.dumps(p, ensure_ascii=False)) for c, p in parsed.items())
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO noun_phrases VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self.db.close()


@dataclass
class ParseCount:
    """How many distinct captions were parsed now and how many came from the cache."""

    parsed: int = 0
    cached: int = 0


def parse_captions(
    captions: Iterable[str],
    model: str,
    cache: PhraseCache,
    workers: int = 1,
    count: ParseCount | None = None,
) -> Iterator[tuple[str, ...]]:
    """Yield the noun phrases of each caption in order: from the cache, else parsed by `workers`
    processes (started only if something needs parsing). Captions are streamed in chunks."""
    count = count if count is not None else ParseCount()
    chunks: deque[tuple[list[str], dict[str, tuple[str, ...]], list[str]]] = deque()

    def misses() -> Iterator[list[str]]:
        for chunk in _batched(captions, PARSE_CHUNK):
            found = cache.get_many(chunk)
            missing = [c for c in chunk if c not in found]
            chunks.append((chunk, found, missing))
            yield missing

    for parsed in _parse_stream(misses(), model, workers):
        chunk, found, missing = chunks.popleft()
        new = dict(zip(missing, parsed, strict=True))
        if new:
            cache.put_many(new)
        count.parsed += len(new)
        count.cached += len(found)
        for caption in chunk:
            yield found[caption] if caption in found else new[caption]


def _parse_stream(chunks: Iterator[list[str]], model: str, workers: int) -> Iterator[list]:
    """Parse chunks in order, in this process or in a pool with a bounded number in flight."""
    nlp = None
    pool = None
    pending: deque = deque()
    try:
        for chunk in chunks:
            if not chunk:
                pending.append([])
            elif workers <= 1 or len(chunk) < PIPE_BATCH:  # a few misses: not worth a pool
                nlp = nlp or load_pipeline(model)
                pending.append(phrases_of(nlp, chunk))
            else:
                pool = pool or multiprocessing.Pool(workers, _init_worker, (model,))
                pending.append(pool.apply_async(_parse_in_worker, (chunk,)))
            # two tasks per worker keep every worker busy while bounding memory
            while len(pending) > 2 * max(workers, 1) or (pending and isinstance(pending[0], list)):
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        if pool is not None:
            pool.terminate()


def _result(item) -> list:
    return item if isinstance(item, list) else item.get()


_worker_nlp = None  # the pipeline of a worker process, loaded once by _init_worker


def _init_worker(model: str) -> None:
    global _worker_nlp
    _worker_nlp = load_pipeline(model)


def _parse_in_worker(captions: list[str]) -> list[tuple[str, ...]]:
    return phrases_of(_worker_nlp, captions)


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
