"""The selection, pure and shared by both engines: phrases per row as flat arrays, the seeded
sample keys, and the walk from the least to the most frequent phrase (see `instructgen.cc3m`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np


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
