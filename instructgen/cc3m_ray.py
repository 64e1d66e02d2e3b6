"""The CC3M filter on Ray Data (extra `[ray]`): parsing and counting on the engine; the
selection and the writers are the local engine's (cc3m.py), so both write the same bytes.

The stages (local mode on a laptop runs the same code as a cluster):
1. read: one task per input piece (a TSV byte range, a parquet row group) gives rows
   (row, id, caption, url, bad), exactly as the local engine reads them;
2. parse: an actor pool, one spaCy pipeline per actor (loaded in the actor, never pickled),
   `nlp.pipe` over the distinct captions of each batch; the rows with their phrases are
   written as parquet to OUT/np_phrases/, which a rerun on the same input and model reads
   instead of parsing;
3. count: (phrase, row) pairs grouped by phrase give each phrase's frequency and the rows the
   driver needs: all rows of a kept phrase of at most `max_per_phrase` rows (they all join),
   and the first PREFIX_FACTOR x `max_per_phrase` rows in sample-key order of a frequent one;
4. select, on the driver: the shared walk; a frequent phrase whose prefix runs out of fresh
   rows fetches the rest of its rows from the engine, so the pool stays exact;
5. the pool's phrases are counted on the engine, and its rows, sorted by row, stream to the
   shared writers.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from instructgen.cc3m import (
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
PREFIX_FACTOR = 4  # rows per frequent phrase sent to the driver, in units of max_per_phrase
PIECES_PER_WORKER = 4  # a small TSV is cut finer so that every actor gets work
MIN_PIECE_BYTES = 64 << 10


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
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        source = open_source(inputs, piece_bytes=_piece_bytes(inputs, workers))
        summary = FilterSummary(
            model=model_key(options.model), layout=source.description, engine="ray"
        )
        summary.rows = source.rows or 0
        parsed = _parsed_rows(ray, source, out_dir, options.model, workers, summary)
        summary.parse_seconds = time.perf_counter() - started
        phrases, before, pooled = _select(ray, parsed, summary.rows, options)
        pool = parsed.map_batches(
            _pooled_only, fn_kwargs={"pooled": ray.put(pooled)}, batch_format="pyarrow"
        ).materialize()
        after = _frequency(pool, phrases)
        write_outputs(out_dir, options, summary, phrases, before, after, _pool_rows(pool))
    finally:
        if ours:
            ray.shutdown()
    return summary


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
    dataset = ray.data.read_parquet(str(table_dir))
    bad = dataset.map_batches(_bad_only, batch_format="pyarrow").materialize()
    summary.bad_lines = bad.count()
    summary.bad_examples = [r["bad"] for r in bad.sort("row").take(5)]
    good_rows = summary.rows - summary.bad_lines
    summary.parsed, summary.cached = (0, good_rows) if reuse else (good_rows, 0)
    captions = dataset.select_columns(["caption", "bad"]).map_batches(
        _good_only, batch_format="pyarrow"
    )
    summary.unique_captions = captions.groupby("caption").count().count()
    return dataset


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


def _bad_only(batch):
    import pyarrow.compute as pc

    return batch.select(["row", "bad"]).filter(pc.is_valid(batch["bad"]))


def _good_only(batch):
    import pyarrow.compute as pc

    return batch.filter(pc.is_null(batch["bad"])).select(["caption"])


def _pooled_only(batch, pooled):
    mask = pooled[batch["row"].to_numpy()]
    return batch.filter(mask)


# --- count and select ------------------------------------------------------------------------


def _pairs(batch):
    """One (phrase, row) record per phrase of each row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = pc.list_value_length(batch["phrases"]).to_numpy()
    rows = np.repeat(batch["row"].to_numpy(), lengths)
    return pa.table({"phrase": pc.list_flatten(batch["phrases"]), "row": rows})


def _phrase_group(group, min_freq: int, max_per_phrase: int, seed: int):
    """One phrase's record: its frequency and the rows the driver needs (none for a dropped
    phrase, all for a rare one, a key-ordered prefix for a frequent one)."""
    import pyarrow as pa

    phrase = group["phrase"][0].as_py()
    rows = group["row"].to_numpy()
    freq = len(rows)
    if freq < min_freq:
        rows = rows[:0]
    elif freq > max_per_phrase:
        rows = in_key_order(seed, phrase, rows)[: PREFIX_FACTOR * max_per_phrase]
    return pa.table(
        {
            "phrase": pa.array([phrase], pa.string()),
            "freq": pa.array([freq], pa.int64()),
            "rows": pa.array([rows], pa.list_(pa.int64())),
        }
    )


def _select(ray, parsed, rows: int, options: FilterOptions):
    """Count phrases on the engine and walk on the driver: (phrases, their frequencies, the
    pooled-row mask)."""
    pairs = parsed.map_batches(_pairs, batch_format="pyarrow")
    groups = pairs.groupby("phrase").map_groups(
        _phrase_group,
        batch_format="pyarrow",
        fn_kwargs={
            "min_freq": options.min_freq,
            "max_per_phrase": options.max_per_phrase,
            "seed": options.seed,
        },
    )
    phrases, freq, prefixes, pooled = select_inputs(
        groups.iter_batches(batch_format="pyarrow", batch_size=None), rows, options
    )

    def candidates(phrase: int) -> Iterator[np.ndarray]:
        prefix = prefixes.pop(phrase)
        yield prefix
        if len(prefix) < freq[phrase]:  # the prefix ran out of fresh rows: fetch the rest
            text = phrases[phrase]
            everything = _rows_of(pairs, text)
            yield in_key_order(options.seed, text, everything)[len(prefix) :]

    _, frequent = rare_and_frequent(freq, options.min_freq, options.max_per_phrase)
    order = by_frequency(phrases, freq, np.flatnonzero(frequent), descending=False)
    walk(order, candidates, pooled, options.max_per_phrase)
    return phrases, freq, pooled


def select_inputs(batches, rows: int, options: FilterOptions):
    """Gather the engine's phrase records on the driver: phrase texts, frequencies, the
    prefixes of frequent phrases (by phrase id), and the pool of the rare kept phrases."""
    import pyarrow as pa
    import pyarrow.compute as pc

    phrases: list[str] = []
    freqs: list[np.ndarray] = []
    prefixes: dict[int, np.ndarray] = {}
    pooled = np.zeros(rows, dtype=bool)
    for batch in batches:
        freq = batch["freq"].to_numpy()
        rare, frequent = rare_and_frequent(freq, options.min_freq, options.max_per_phrase)
        if rare.any():
            pooled[pc.list_flatten(batch["rows"].filter(pa.array(rare))).to_numpy()] = True
        for i in np.flatnonzero(frequent):
            prefixes[len(phrases) + int(i)] = batch["rows"][int(i)].values.to_numpy()
        phrases.extend(batch["phrase"].to_pylist())
        freqs.append(freq)
    freq = np.concatenate(freqs) if freqs else np.zeros(0, np.int64)
    return phrases, freq, prefixes, pooled


def _rows_of(pairs, phrase: str) -> np.ndarray:
    """Every row with `phrase`, from the engine."""
    import pyarrow.compute as pc

    def only(batch):
        return batch.filter(pc.equal(batch["phrase"], phrase)).select(["row"])

    found = pairs.map_batches(only, batch_format="pyarrow")
    parts = [b["row"].to_numpy() for b in found.iter_batches(batch_format="pyarrow")]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _frequency(pool, phrases: list[str]) -> np.ndarray:
    """Per phrase of `phrases`: how many rows of `pool` contain it, counted on the engine."""
    index = {p: i for i, p in enumerate(phrases)}
    freq = np.zeros(len(phrases), np.int64)
    counts = pool.map_batches(_pairs, batch_format="pyarrow").groupby("phrase").count()
    for batch in counts.iter_batches(batch_format="pyarrow"):
        ids = [index[p] for p in batch["phrase"].to_pylist()]
        freq[ids] = batch["count()"].to_numpy()
    return freq


def _pool_rows(pool) -> Iterator[tuple[CaptionRow, list[str]]]:
    """The pooled rows with their phrases, in input order."""
    for batch in pool.sort("row").iter_batches(batch_format="pyarrow"):
        for r in batch.to_pylist():
            yield CaptionRow(r["row"], r["id"], r["caption"], r["url"]), r["phrases"]
