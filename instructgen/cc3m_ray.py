"""The CC3M filter on Ray Data (extra `[ray]`): parsing and counting on the engine; the
selection and the writers are the local engine's (cc3m.py), so both write the same bytes.

The stages (local mode on a laptop runs the same code as a cluster):
1. read: one task per input piece (a TSV byte range, a parquet row group) gives rows
   (row, id, caption, url, bad), exactly as the local engine reads them;
2. parse: an actor pool, one spaCy pipeline per actor (loaded in the actor, never pickled),
   `nlp.pipe` over the distinct captions of each batch; the rows with their phrases are
   written as parquet to OUT/np_phrases/, which a rerun on the same input and model reads
   instead of parsing;
3. count: one hash shuffle of (phrase, row) records gives each phrase's frequency and the
   rows the driver needs: all rows of a kept phrase of at most `max_per_phrase` rows (they all
   join), and the first PREFIX_FACTOR x `max_per_phrase` rows in sample-key order of a
   frequent one; the same pass counts distinct captions and gathers the bad rows;
4. select, on the driver: the shared walk; a frequent phrase whose prefix runs out of fresh
   rows fetches the rest of its rows from the engine, so the pool stays exact;
5. the pool, sorted by row on the engine, streams to the shared writers through the driver,
   which counts the pool's phrases on the way.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from instructgen.cc3m import (
    BAD_LINES_SHOWN,
    PARSE_CHUNK,
    FilterOptions,
    FilterSummary,
    by_frequency,
    in_key_order,
    load_pipeline,
    model_key,
    phrases_of,
    rare_and_frequent,
    walk,
    write_outputs,
)
from instructgen.cc3m_input import TSV_PIECE_BYTES, BadRow, CaptionRow, Piece, open_source
from instructgen.errors import InstructgenError
from instructgen.files import read_json, write_json

PHRASES_DIR = "np_phrases"  # the parsed rows, parquet; np_phrases.json says what they parsed
PREFIX_FACTOR = 10  # rows per frequent phrase sent to the driver, in units of max_per_phrase
PIECES_PER_WORKER = 4  # a small TSV is cut finer so that every actor gets work
MIN_PIECE_BYTES = 64 << 10
ROWS_PER_PARTITION = 1_000_000  # input rows per hash partition of a shuffle (Ray's default: 200)


def import_ray():
    """Ray, or a one-line error saying how to install the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InstructgenError(
            "the ray engine needs the [ray] extra: pip install 'instructgen[ray]'"
        ) from None
    return ray


def filter_on_ray(
    inputs: Sequence[Path | str],
    out_dir: Path,
    options: FilterOptions,
    workers: int | None,
    address: str | None,
) -> FilterSummary:
    """The filter with parsing and counting on Ray Data; `address` names a running cluster
    (`auto`, `ray://HOST:PORT`), None starts Ray on this machine. `workers`: parse actors
    (default: the cluster's CPUs)."""
    ray = import_ray()
    started = time.perf_counter()
    ours = not ray.is_initialized()
    if ours:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except ConnectionError as e:
            raise InstructgenError(
                f"cannot reach the Ray cluster at {address}: {e}; start it (`ray start --head`) "
                "or leave out --ray-address to run Ray on this machine"
            ) from None
    context = ray.data.DataContext.get_current()
    context.print_on_execution_start = False
    context.enable_progress_bars = sys.stderr.isatty()  # bars on a terminal, not in logs
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        source = open_source(inputs, piece_bytes=_piece_bytes(inputs, workers))
        summary = FilterSummary(
            model=model_key(options.model), layout=source.description, engine="ray"
        )
        summary.rows = source.rows or 0
        parsed = _parsed_rows(ray, source, out_dir, options.model, workers, summary)
        summary.parse_seconds = time.perf_counter() - started
        counts = _count_and_select(parsed, summary, options, _partitions(summary.rows, workers))
        pool = parsed.map_batches(
            _pooled_only, fn_kwargs={"pooled": ray.put(counts.pooled)}, batch_format="pyarrow"
        )
        after = np.zeros(len(counts.phrases), np.int64)
        pool_rows = _pool_rows(pool, counts.phrases, after)
        write_outputs(
            out_dir, options, summary, counts.phrases, counts.freq, lambda: after, pool_rows
        )
    finally:
        if ours:
            ray.shutdown()
    return summary


def _partitions(rows: int, workers: int) -> int:
    """Hash partitions of a shuffle: one per ROWS_PER_PARTITION rows, at least one per worker."""
    return max(workers, rows // ROWS_PER_PARTITION)


def _piece_bytes(inputs: Sequence[Path | str], workers: int) -> int:
    size = sum(Path(p).stat().st_size for p in inputs if Path(p).is_file())
    return max(MIN_PIECE_BYTES, min(TSV_PIECE_BYTES, size // (PIECES_PER_WORKER * workers) + 1))


# --- read and parse --------------------------------------------------------------------------


def _parsed_rows(ray, source, out_dir: Path, model: str, workers: int, summary: FilterSummary):
    """The dataset of parsed rows (row, id, caption, url, bad, phrases), from OUT/np_phrases/
    when it holds this input's parse by this model, else parsed now and written there."""
    table_dir = out_dir / PHRASES_DIR
    manifest = out_dir / f"{PHRASES_DIR}.json"
    wanted = {"model": summary.model, "input": source.fingerprint()}
    reuse = manifest.is_file() and table_dir.is_dir() and read_json(manifest) == wanted
    if not reuse:
        manifest.unlink(missing_ok=True)
        pieces = ray.data.from_items(
            [{"piece": i} for i in range(len(source.pieces))],
            override_num_blocks=len(source.pieces),
        )
        rows = pieces.map_batches(
            _read_pieces,
            fn_kwargs={"pieces": source.pieces},
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=0,  # light next to parsing: reading must not wait for the actors' CPUs
        )
        parsed = rows.map_batches(
            PhraseParser,
            fn_constructor_args=(model,),
            compute=ray.data.ActorPoolStrategy(size=workers),
            batch_size=PARSE_CHUNK,
            batch_format="pyarrow",
            num_cpus=1,
        )
        staging = out_dir / f".{PHRASES_DIR}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        parsed.write_parquet(str(staging))
        shutil.rmtree(table_dir, ignore_errors=True)
        staging.rename(table_dir)
        write_json(manifest, wanted)
    good_rows = summary.rows  # less the bad rows, which the count finds
    summary.parsed, summary.cached = (0, good_rows) if reuse else (good_rows, 0)
    return ray.data.read_parquet(str(table_dir))


def _read_pieces(batch, pieces: list[Piece]):
    """Rows of the pieces named in `batch` as an Arrow table; a bad row keeps its row number
    and says where and why in `bad`."""
    import pyarrow as pa

    columns: dict[str, list] = {"row": [], "id": [], "caption": [], "url": [], "bad": []}
    for index in batch["piece"].to_pylist():
        for item in pieces[index].read():
            columns["row"].append(item.row)
            if isinstance(item, BadRow):
                values = (None, None, None, item.describe())
            else:
                values = (item.id, item.caption, item.url, None)
            for name, value in zip(("id", "caption", "url", "bad"), values, strict=True):
                columns[name].append(value)
    schema = pa.schema(
        [("row", pa.int64())] + [(n, pa.string()) for n in ("id", "caption", "url", "bad")]
    )
    return pa.table(columns, schema=schema)


class PhraseParser:
    """A Ray Data actor: one spaCy pipeline, loaded once when the actor starts."""

    def __init__(self, model: str) -> None:
        self.nlp = load_pipeline(model)

    def __call__(self, batch):
        import pyarrow as pa

        captions = batch["caption"].to_pylist()
        distinct = list(dict.fromkeys(c for c in captions if c is not None))
        found = dict(zip(distinct, phrases_of(self.nlp, distinct), strict=True))
        phrases = [list(found[c]) if c is not None else [] for c in captions]
        return batch.append_column("phrases", pa.array(phrases, pa.list_(pa.string())))


def _pooled_only(batch, pooled):
    import ray

    mask = ray.get(pooled)[batch["row"].to_numpy()]  # zero-copy from the object store
    return batch.filter(mask)


# --- count and select ------------------------------------------------------------------------

# Keys of the count's records besides phrases; no phrase starts with them (they are whitespace,
# which normalization removes).
CAPTION_KEY = "\x1f"  # + caption: one record per good row; a partition sends one count
BAD_KEY = "\x1e"  # + where and why: one record per bad row


def _keyed_rows(batch):
    """The records the count groups by key: (phrase, row) per phrase of each good row,
    (CAPTION_KEY + caption, row) per good row, (BAD_KEY + reason, row) per bad row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    good = batch.filter(pc.is_null(batch["bad"]))
    bad = batch.filter(pc.is_valid(batch["bad"]))
    lengths = pc.list_value_length(good["phrases"]).to_numpy()
    keys = [
        pc.list_flatten(good["phrases"]),
        pc.binary_join_element_wise(CAPTION_KEY, good["caption"], ""),
        pc.binary_join_element_wise(BAD_KEY, bad["bad"], ""),
    ]
    rows = [np.repeat(good["row"].to_numpy(), lengths), good["row"], bad["row"]]
    return pa.table(
        {
            "key": pa.concat_arrays([pa.array(k, pa.string()) for k in map(_chunks, keys)]),
            "row": pa.concat_arrays([pa.array(r, pa.int64()) for r in map(_chunks, rows)]),
        }
    )


def _chunks(column):
    """A ChunkedArray as one Array; other arrays unchanged."""
    return column.combine_chunks() if hasattr(column, "combine_chunks") else column


def _phrase_groups(partition, min_freq: int, max_per_phrase: int, seed: int):
    """The records of one hash partition (every record of a key is in one partition) grouped
    by key: per phrase its frequency and the rows the driver needs (none for a dropped phrase,
    all for a rare kept one, a key-ordered prefix for a frequent one); bad rows as they are;
    one record counting the partition's distinct captions."""
    import pyarrow as pa
    import pyarrow.compute as pc

    grouped = partition.group_by("key").aggregate([("row", "list")])
    keys, lists = grouped["key"], grouped["row_list"]
    freq = pc.list_value_length(lists).to_numpy().astype(np.int64)
    caption = pc.starts_with(keys, CAPTION_KEY).to_numpy(zero_copy_only=False)
    bad = pc.starts_with(keys, BAD_KEY).to_numpy(zero_copy_only=False)
    rare, frequent = rare_and_frequent(freq, min_freq, max_per_phrase)
    phrase = ~caption & ~bad
    frequent &= phrase
    keep = (rare & phrase) | bad
    empty = pa.array([[]] * len(keys), pa.list_(pa.int64()))
    rows = pc.if_else(pa.array(keep), lists, empty)
    prefix = PREFIX_FACTOR * max_per_phrase
    prefixes = [
        in_key_order(seed, keys[i].as_py(), lists[i].values.to_numpy(), prefix)
        for i in np.flatnonzero(frequent)
    ]
    plain = ~caption & ~frequent
    return pa.concat_tables(
        [
            pa.table({"key": keys, "freq": freq, "rows": rows}).filter(pa.array(plain)),
            pa.table(
                {
                    "key": keys.filter(pa.array(frequent)),
                    "freq": freq[frequent],
                    "rows": pa.array(prefixes, pa.list_(pa.int64())),
                }
            ),
            pa.table(
                {
                    "key": pa.array([CAPTION_KEY]),
                    "freq": np.array([np.count_nonzero(caption)], np.int64),
                    "rows": pa.array([[]], pa.list_(pa.int64())),
                }
            ),
        ]
    )


@dataclass
class Counts:
    """What the driver gathers from the count: phrase texts and frequencies, the key-ordered
    prefix of each frequent phrase (by phrase id), the pool of the rare kept phrases, the
    distinct captions, and the bad rows (how many; the first BAD_LINES_SHOWN by row)."""

    phrases: list[str] = field(default_factory=list)
    freq: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    prefixes: dict[int, np.ndarray] = field(default_factory=dict)
    pooled: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    captions: int = 0
    bad: int = 0
    first_bad: list[tuple[int, str]] = field(default_factory=list)


def gather_counts(batches: Iterable, rows: int, options: FilterOptions) -> Counts:
    """Gather the count's records (Arrow batches of key, freq, rows) on the driver."""
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = Counts(pooled=np.zeros(rows, dtype=bool))
    freqs: list[np.ndarray] = []
    for batch in batches:
        caption = pc.equal(batch["key"], CAPTION_KEY)
        counts.captions += int(pc.sum(batch["freq"].filter(caption)).as_py() or 0)
        bad = batch.filter(pc.starts_with(batch["key"], BAD_KEY))
        counts.bad += len(bad)
        found = zip(pc.list_flatten(bad["rows"]).to_pylist(), bad["key"].to_pylist(), strict=True)
        counts.first_bad = sorted([*counts.first_bad, *((r, k[1:]) for r, k in found)])
        counts.first_bad = counts.first_bad[:BAD_LINES_SHOWN]
        batch = batch.filter(pc.invert(pc.or_(caption, pc.starts_with(batch["key"], BAD_KEY))))
        freq = batch["freq"].to_numpy()
        rare, frequent = rare_and_frequent(freq, options.min_freq, options.max_per_phrase)
        if rare.any():
            rare_rows = pc.list_flatten(batch["rows"].filter(pa.array(rare)))
            counts.pooled[rare_rows.to_numpy()] = True
        for i in np.flatnonzero(frequent):
            counts.prefixes[len(counts.phrases) + int(i)] = batch["rows"][int(i)].values.to_numpy()
        counts.phrases.extend(batch["key"].to_pylist())
        freqs.append(freq)
    if len(set(counts.phrases)) != len(counts.phrases):
        raise InstructgenError("the count split a phrase across partitions; please report this")
    counts.freq = np.concatenate(freqs) if freqs else counts.freq
    return counts


def _count_and_select(parsed, summary: FilterSummary, options: FilterOptions, partitions: int):
    """Count on the engine, walk on the driver; the counts, their `pooled` mask complete."""
    keyed = parsed.map_batches(_keyed_rows, batch_format="pyarrow")
    groups = keyed.repartition(partitions, keys=["key"]).map_batches(
        _phrase_groups,
        batch_size=None,  # a whole partition at once: it holds every record of its keys
        batch_format="pyarrow",
        fn_kwargs={
            "min_freq": options.min_freq,
            "max_per_phrase": options.max_per_phrase,
            "seed": options.seed,
        },
    )
    batches = groups.iter_batches(batch_format="pyarrow", batch_size=None)
    counts = gather_counts(batches, summary.rows, options)
    summary.unique_captions = counts.captions
    summary.bad_lines = counts.bad
    summary.bad_examples = [where for _, where in counts.first_bad]
    if summary.parsed:
        summary.parsed -= counts.bad
    else:
        summary.cached -= counts.bad

    walk_on_driver(counts, options, partial(_rows_of, keyed))
    return counts


def walk_on_driver(
    counts: Counts, options: FilterOptions, fetch: Callable[[str], np.ndarray]
) -> int:
    """The shared walk over the gathered counts, completing `counts.pooled`; a frequent phrase
    whose prefix runs out of fresh rows gets all its rows from `fetch`. Returns how many did."""
    fetched = 0

    def candidates(phrase: int) -> Iterator[np.ndarray]:
        nonlocal fetched
        prefix = counts.prefixes.pop(phrase)
        yield prefix
        if len(prefix) < counts.freq[phrase]:
            fetched += 1
            text = counts.phrases[phrase]
            yield in_key_order(options.seed, text, fetch(text))[len(prefix) :]

    _, frequent = rare_and_frequent(counts.freq, options.min_freq, options.max_per_phrase)
    order = by_frequency(counts.phrases, counts.freq, np.flatnonzero(frequent), descending=False)
    walk(order, candidates, counts.pooled, options.max_per_phrase)
    return fetched


def _rows_of(keyed, phrase: str) -> np.ndarray:
    """Every row with `phrase`, from the engine."""
    import pyarrow.compute as pc

    def only(batch):
        return batch.filter(pc.equal(batch["key"], phrase)).select(["row"])

    found = keyed.map_batches(only, batch_format="pyarrow")
    parts = [b["row"].to_numpy() for b in found.iter_batches(batch_format="pyarrow")]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _pool_rows(pool, phrases: list[str], after: np.ndarray) -> Iterator[tuple[CaptionRow, list]]:
    """The pooled rows with their phrases, in input order; counts each phrase into `after`
    on the way (the driver streams every pooled row to the outputs anyway)."""
    index = {p: i for i, p in enumerate(phrases)}
    for batch in pool.sort("row").iter_batches(batch_format="pyarrow"):
        for r in batch.to_pylist():
            for p in r["phrases"]:
                after[index[p]] += 1
            yield CaptionRow(r["row"], r["id"], r["caption"], r["url"]), r["phrases"]
