"""CC3M filter speed: spaCy parsing and pool selection, each beside a naive baseline.

1. Parsing, on the real CC3M validation captions (../shared/data/cc3m): the naive baseline
   (`nlp(caption)` per caption, full pipeline) on the first NAIVE_CAPTIONS distinct captions,
   against ours (`parse_captions`: `nlp.pipe`, `ner` and `lemmatizer` excluded, worker
   processes, fresh cache, start-up included) on the same captions and on all of them; the
   noun phrases of both are checked equal; the time for 3.3M captions is projected.
2. Selection on synthetic phrase lists the size of CC3M (3.3M captions, Zipf-distributed
   phrases): `select_pool` against a plain-Python walk, both on a tenth, ours also at full size.
3. Engines (with the [ray] extra): `cc3m`, local against ray (Ray started before the clock,
   as a cluster would be), fresh outputs, on all real validation captions and on 100K
   distinct captions mixed from them; the overhead ratio of each, side by side.
4. The ray engine's driver at 3.3M and 33M synthetic captions: a child process turns the
   synthetic phrase lists into the count's records with the engine's own partition function
   (as the workers would) and writes them to parquet; a second child, the driver, gathers them,
   walks and orders the phrases for the stats; its peak RSS and time are reported.

Run: .venv/bin/python benchmarks/cc3m.py  (a quarter of an hour; figures go to stdout);
`--engines` runs section 3 alone.
"""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from instructgen.cc3m.input import detect_layout, read_rows
from instructgen.cc3m.local import PhraseCache, parse_captions
from instructgen.cc3m.phrases import model_key, noun_phrases, resolve_model
from instructgen.cc3m.selection import PhraseTable, select_pool

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


def synthetic_pairs(captions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(row, phrase id) pairs with Zipf-distributed phrase ids, as real noun phrases are; a
    phrase is listed once per caption, as in real tables; sorted by row."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(*PHRASES_PER_CAPTION, size=captions)
    ids = (rng.zipf(ZIPF, size=int(lengths.sum())) - 1) % SYNTHETIC_VOCAB
    rows = np.repeat(np.arange(captions, dtype=np.int64), lengths)
    pairs = np.unique(rows * SYNTHETIC_VOCAB + ids)  # drops repeats within a caption
    rows, ids = np.divmod(pairs, SYNTHETIC_VOCAB)
    return rows, ids.astype(np.int32)


def synthetic_table(captions: int, seed: int = 0) -> PhraseTable:
    rows, ids = synthetic_pairs(captions, seed)
    offsets = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=captions))))
    return PhraseTable([f"p{i}" for i in range(SYNTHETIC_VOCAB)], offsets, ids)


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


def parsing() -> None:
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


def selection() -> None:
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
    print(f"peak RSS after selection: {peak_rss_mib()[0]:.0f} MiB")


def main() -> None:
    if not CC3M.is_file():
        sys.exit(f"{CC3M} not found (shared data sits beside the project)")
    parsing()
    selection()
    engines()
    driver_at_scale()


MIXED_CAPTIONS = 100_000  # the larger engine input: distinct captions mixed from real ones


def mixed_captions(path: Path, size: int = MIXED_CAPTIONS) -> None:
    """A TSV of `size` distinct captions, each the first half of one real validation caption's
    words and the second half of another's (fixed pairs), so lengths and
    vocabulary stay those of CC3M and every caption must be parsed."""
    real = unique_captions()
    seen: dict[str, None] = {}
    i = 0
    while len(seen) < size:
        lap, first = divmod(i, len(real))  # lap k pairs each caption with the (k+1)-th next
        a, b = real[first].split(), real[(first + lap + 1) % len(real)].split()
        seen.setdefault(" ".join(a[: (len(a) + 1) // 2] + b[len(b) // 2 :]), None)
        i += 1
    path.write_text(
        "".join(f"{c}\thttp://example.com/{n}.jpg\n" for n, c in enumerate(seen)),
        encoding="utf-8",
    )


def engines() -> None:
    try:
        import ray
    except ImportError:
        print("\nengines: skipped (no [ray] extra: pip install 'instructgen[ray]')")
        return
    import logging

    from instructgen.cc3m import filter_cc3m

    started = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, logging_level=logging.WARNING)
    t_init = time.perf_counter() - started
    print(
        f"\nengines: cc3m, {WORKERS} workers each, Ray start {t_init:.1f} s (apart), fresh outputs"
    )
    print(f"{'':44s}{'seconds':>9s}{'parse s':>9s}{'rest s':>9s}{'vs local':>9s}{'load':>6s}")
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        mixed = Path(tmp) / "mixed.tsv"
        mixed_captions(mixed)
        inputs = {"15,833 real": CC3M, f"{MIXED_CAPTIONS:,} mixed": mixed}
        for name, captions in inputs.items():
            runs = {}
            for engine in ("local", "ray", "ray again"):
                out = Path(tmp) / name.split()[1] / engine.split()[0]
                runs[engine] = s = filter_cc3m(
                    captions, out, workers=WORKERS, engine=engine.split()[0]
                )
                label = {"local": "local", "ray": "ray", "ray again": "ray rerun (parses nothing)"}
                print(
                    f"{name + ', ' + label[engine]:44s}{s.seconds:9.1f}{s.parse_seconds:9.1f}"
                    f"{s.seconds - s.parse_seconds:9.1f}{s.seconds / runs['local'].seconds:8.2f}x"
                    f"{os.getloadavg()[0]:6.1f}"
                )
            root = Path(tmp) / name.split()[1]
            assert all(
                (root / "local" / n).read_bytes() == (root / "ray" / n).read_bytes()
                for n in ("cc3m_filtered.jsonl", "pretrain.json", "np_stats.json")
            ), "the engines wrote different outputs"
            ratios[name] = runs["ray"].seconds / runs["local"].seconds
    ray.shutdown()
    print(
        "outputs identical: yes; overhead ratio ray/local: "
        + ", ".join(f"{ratio:.2f}x on {name}" for name, ratio in ratios.items())
    )


DRIVER_SIZES = (CC3M_SIZE, 10 * CC3M_SIZE)
PARTITIONS = 16  # the count's hash partitions the records are made in


def driver_at_scale() -> None:
    print("\nray engine driver: gather the count's records, walk, order phrases for the stats")
    print(
        f"{'captions':>12s}{'phrases':>11s}{'frequent':>10s}{'fetched':>9s}{'pool':>11s}"
        f"{'seconds':>9s}{'peak MiB':>10s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in DRIVER_SIZES:
            records = Path(tmp) / f"records-{size}.parquet"
            me = [sys.executable, __file__]
            subprocess.run([*me, "--records", str(size), str(records)], check=True)
            out = subprocess.run(
                [*me, "--driver", str(size), str(records)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            phrases, frequent, fetched, pool, seconds, peak = out
            print(
                f"{size:12,d}{int(phrases):11,d}{int(frequent):10,d}{int(fetched):9,d}"
                f"{int(pool):11,d}{float(seconds):9.1f}{float(peak):10.0f}"
            )


def write_records(size: int, path: Path) -> None:
    """The count's records for `size` synthetic captions, made by the engine's partition
    function on PARTITIONS hash partitions (here by phrase id), as the workers would."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from instructgen.cc3m.ray_engine import _phrase_groups

    texts = pa.array([f"p{i}" for i in range(SYNTHETIC_VOCAB)], pa.string())
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(PARTITIONS)]
    for chunk in range(size // CC3M_SIZE):  # CC3M-sized chunks bound the memory of making them
        rows, ids = synthetic_pairs(CC3M_SIZE, seed=chunk)
        rows = (rows + chunk * CC3M_SIZE).astype(np.int32)
        for part in range(PARTITIONS):
            mine = ids % PARTITIONS == part
            parts[part].append((rows[mine], ids[mine]))
    writer = None
    for part in parts:
        rows, ids = (np.concatenate(column) for column in zip(*part, strict=True))
        part.clear()
        keyed = pa.table({"key": pc.take(texts, pa.array(ids)), "row": rows.astype(np.int64)})
        records = _phrase_groups(keyed, 3, 100, 0)
        writer = writer or pq.ParquetWriter(path, records.schema)
        writer.write_table(records)
    writer.close()


def drive(size: int, path: Path) -> None:
    """The driver's part of the ray engine on records from `write_records`; prints phrases,
    frequent phrases, fetched phrases, pool size, seconds and peak RSS in MiB."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from instructgen.cc3m.outputs import FilterOptions
    from instructgen.cc3m.ray_engine import gather_counts, walk_on_driver
    from instructgen.cc3m.selection import by_frequency

    def fetch(text: str) -> np.ndarray:  # what the engine would send: every row of the phrase
        found = pq.read_table(path, filters=pc.field("key") == text)
        return found["rows"][0].values.to_numpy()  # records hold only the prefix: counted

    started = time.perf_counter()
    options = FilterOptions(3, 100, 0)
    counts = gather_counts(pq.ParquetFile(path).iter_batches(), size, options)
    frequent = len(counts.prefixes)
    fetched = walk_on_driver(counts, options, fetch)
    by_frequency(counts.phrases, counts.freq, np.flatnonzero(counts.freq), descending=True)
    index = {p: i for i, p in enumerate(counts.phrases)}  # the after count's phrase index
    seconds = time.perf_counter() - started
    print(len(index), frequent, fetched, int(counts.pooled.sum()), seconds, high_water_mib())


def high_water_mib() -> float:
    """This process's peak resident memory, MiB (VmHWM: unlike ru_maxrss, not inherited from
    the parent through fork and exec)."""
    status = Path("/proc/self/status").read_text()
    return (
        int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
        / 1024
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--records"]:
        write_records(int(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["--driver"]:
        drive(int(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["--engines"]:
        engines()
    else:
        main()
