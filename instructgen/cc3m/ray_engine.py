"""The CC3M filter on Ray (extra `[ray]`): parsing and counting on the engine; the selection
and the writers are shared with the local engine (selection.py, outputs.py), so both write
the same bytes.

The stages (local mode on a laptop runs the same code as a cluster):
1. read: one Ray Data task per input piece (a TSV byte range, a parquet row group) gives rows
   (row, id, caption, url, bad), exactly as the local engine reads them;
2. parse: a Ray Data actor pool, one spaCy pipeline per actor (loaded in the actor, never
   pickled), `nlp.pipe` over the distinct captions of each batch. The execution keeps input
   order, so its blocks, kept in the object store for the stages below, hold the rows in
   order; they are also written as numbered parquet parts to OUT/np_phrases/, which a rerun on
   the same input and model reads instead of parsing;
3. count: one hash shuffle in Ray tasks over runs of consecutive blocks (one partition per
   ROWS_PER_PARTITION rows, so a small input is grouped by a single task) of (phrase, row)
   records gives each phrase's frequency and the rows the driver needs: all rows of a kept
   phrase of at most `max_per_phrase` rows (they all join), and the first PREFIX_FACTOR x
   `max_per_phrase` rows in sample-key order of a frequent one; the same pass counts distinct
   captions and gathers the bad rows;
4. select, on the driver: the shared walk; a frequent phrase whose prefix runs out of fresh
   rows fetches the rest of its rows from the engine, so the pool stays exact;
5. the pool: one task per run of blocks keeps the pooled rows; the driver takes the runs in
   order (no sort: the blocks are in row order), streams them to the shared writers and counts
   the pool's phrases on the way.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from instructgen.cc3m.input import TSV_PIECE_BYTES, BadRow, CaptionRow, Piece, open_source
from instructgen.cc3m.outputs import BAD_LINES_SHOWN, FilterOptions, FilterSummary, write_outputs
from instructgen.cc3m.phrases import PARSE_CHUNK, load_pipeline, model_key, phrases_of
from instructgen.cc3m.selection import by_frequency, in_key_order, rare_and_frequent, walk
from instructgen.errors import InstructgenError
from instructgen.files import read_json, write_json

PHRASES_DIR = "np_phrases"  # the parsed rows, parquet; np_phrases.json says what they parsed
PHRASES_FORMAT = "row-ordered parts"  # part-NNNNNNNNN.parquet, in row order
PREFIX_FACTOR = 10  # rows per frequent phrase sent to the driver, in units of max_per_phrase
PIECES_PER_WORKER = 4  # a small TSV is cut finer so that every actor gets work
MIN_PIECE_BYTES = 64 << 10
ROWS_PER_PARTITION = 1_000_000  # input rows per partition of the count's shuffle


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
    """The filter with parsing and counting on Ray; `address` names a running cluster
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
    context.execution_options.preserve_order = True  # the parsed blocks come in row order
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        source = open_source(inputs, piece_bytes=_piece_bytes(inputs, workers))
        summary = FilterSummary(
            model=model_key(options.model), layout=source.description, engine="ray"
        )
        summary.rows = source.rows or 0
        blocks = _parsed_blocks(ray, source, out_dir, options.model, workers, summary)
        summary.parse_seconds = time.perf_counter() - started
        runs = _runs(blocks, _partitions(summary.rows))
        counts = _count_and_select(ray, runs, summary, options)
        after = np.zeros(len(counts.phrases), np.int64)
        pool_rows = _pool_rows(ray, runs, counts, workers, after)
        write_outputs(
            out_dir, options, summary, counts.phrases, counts.freq, lambda: after, pool_rows
        )
    finally:
        if ours:
            ray.shutdown()
    return summary


def _partitions(rows: int) -> int:
    """Partitions of the count's shuffle: one per ROWS_PER_PARTITION rows, at least one."""
    return max(1, -(-rows // ROWS_PER_PARTITION))


def _runs(blocks: list, partitions: int) -> list[list]:
    """The blocks cut into `partitions` runs of consecutive blocks (fewer if there are fewer
    blocks): one shuffle-map, fetch or pool task each."""
    cuts = np.linspace(0, len(blocks), min(partitions, len(blocks)) + 1).astype(int)
    return [blocks[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def _piece_bytes(inputs: Sequence[Path | str], workers: int) -> int:
    size = sum(Path(p).stat().st_size for p in inputs if Path(p).is_file())
    return max(MIN_PIECE_BYTES, min(TSV_PIECE_BYTES, size // (PIECES_PER_WORKER * workers) + 1))


# --- read and parse --------------------------------------------------------------------------


def _parsed_blocks(ray, source, out_dir: Path, model: str, workers: int, summary: FilterSummary):
    """References to the parsed rows (row, id, caption, url, bad, phrases) as Arrow blocks in
    row order: read from OUT/np_phrases/ when it holds this input's parse by this model, else
    parsed now and written there."""
    table_dir = out_dir / PHRASES_DIR
    manifest = out_dir / f"{PHRASES_DIR}.json"
    wanted = {"model": summary.model, "input": source.fingerprint(), "format": PHRASES_FORMAT}
    reuse = manifest.is_file() and table_dir.is_dir() and read_json(manifest) == wanted
    good_rows = summary.rows  # less the bad rows, which the count finds
    summary.parsed, summary.cached = (0, good_rows) if reuse else (good_rows, 0)
    if reuse:
        read = ray.remote(_read_part)
        return [read.remote(str(part)) for part in sorted(table_dir.glob("part-*.parquet"))]
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
    blocks = [ref for bundle in parsed.iter_internal_ref_bundles() for ref in bundle.block_refs]
    staging = out_dir / f".{PHRASES_DIR}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write = ray.remote(_write_part)
    ray.get([write.remote(b, str(staging / f"part-{i:09d}.parquet")) for i, b in enumerate(blocks)])
    shutil.rmtree(table_dir, ignore_errors=True)
    staging.rename(table_dir)
    write_json(manifest, wanted)
    return blocks


def _write_part(block, path: str) -> None:
    import pyarrow.parquet as pq

    pq.write_table(block, path)


def _read_part(path: str):
    import pyarrow.parquet as pq

    return pq.read_table(path)


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


def _shuffle_map(partitions: int, *blocks):
    """The count's records of a run of blocks, cut by a hash of their key (the same in every
    process, unlike Python's `hash`) into `partitions` tables."""
    import pyarrow as pa

    keyed = pa.concat_tables([_keyed_rows(b) for b in blocks]).combine_chunks()
    if partitions == 1:
        return keyed
    part = np.fromiter(
        (zlib.crc32(k.encode()) % partitions for k in keyed["key"].to_pylist()),
        np.int64,
        len(keyed),
    )
    return [keyed.filter(pa.array(part == p)) for p in range(partitions)]


def _shuffle_reduce(min_freq: int, max_per_phrase: int, seed: int, *parts):
    """One partition of the count: its records from every run, grouped by key."""
    import pyarrow as pa

    return _phrase_groups(pa.concat_tables(parts), min_freq, max_per_phrase, seed)


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


def _count_and_select(ray, runs: list[list], summary: FilterSummary, options: FilterOptions):
    """Count on the engine, walk on the driver; the counts, their `pooled` mask complete."""
    partitions = len(runs)
    shuffle_map = ray.remote(_shuffle_map).options(num_returns=partitions)
    mapped = [shuffle_map.remote(partitions, *run) for run in runs]
    mapped = [[m] for m in mapped] if partitions == 1 else mapped
    reduce = ray.remote(_shuffle_reduce)
    settings = (options.min_freq, options.max_per_phrase, options.seed)
    groups = [reduce.remote(*settings, *(m[p] for m in mapped)) for p in range(partitions)]
    del mapped  # the shuffle's records are freed as the partitions are grouped
    counts = gather_counts((ray.get(g) for g in groups), summary.rows, options)
    summary.unique_captions = counts.captions
    summary.bad_lines = counts.bad
    summary.bad_examples = [where for _, where in counts.first_bad]
    if summary.parsed:
        summary.parsed -= counts.bad
    else:
        summary.cached -= counts.bad

    walk_on_driver(counts, options, partial(_rows_of, ray, runs))
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


def _rows_of(ray, runs: list[list], phrase: str) -> np.ndarray:
    """Every row with `phrase`, from the engine."""
    rows_with = ray.remote(_rows_with)
    found = ray.get([rows_with.remote(phrase, *run) for run in runs])
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _rows_with(phrase: str, *blocks) -> np.ndarray:
    import pyarrow.compute as pc

    found = []
    for block in blocks:
        phrases = block["phrases"]
        parents = pc.list_parent_indices(phrases).filter(pc.equal(pc.list_flatten(phrases), phrase))
        found.append(block["row"].take(parents).to_numpy())
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _pooled_of(pooled: np.ndarray, *blocks):
    """The pooled rows of a run of blocks, in the blocks' order."""
    import pyarrow as pa

    return pa.concat_tables([b.filter(pooled[b["row"].to_numpy()]) for b in blocks])


def _pool_rows(
    ray, runs: list[list], counts: Counts, workers: int, after: np.ndarray
) -> Iterator[tuple[CaptionRow, list]]:
    """The pooled rows with their phrases, in input order: the runs' pooled rows, taken in
    order with a few runs in flight; counts each phrase into `after` on the way (the driver
    streams every pooled row to the outputs anyway)."""
    index = {p: i for i, p in enumerate(counts.phrases)}
    pooled_of = ray.remote(_pooled_of)
    pooled = ray.put(counts.pooled)
    pending = deque(pooled_of.remote(pooled, *run) for run in runs[: workers + 1])
    later = iter(runs[workers + 1 :])
    last = -1
    while pending:
        table = ray.get(pending.popleft())
        if (run := next(later, None)) is not None:
            pending.append(pooled_of.remote(pooled, *run))
        for r in table.to_pylist():
            if r["row"] <= last:
                raise InstructgenError(
                    "the engine gave the parsed rows out of order; please report this"
                )
            last = r["row"]
            for p in r["phrases"]:
                after[index[p]] += 1
            yield CaptionRow(r["row"], r["id"], r["caption"], r["url"]), r["phrases"]
