"""What both engines write: the run's options and summary, cc3m_filtered.jsonl, pretrain.json,
np_stats.json and the before/after plot, byte for byte the same whichever engine ran."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instructgen.cc3m.input import BadRow, CaptionRow
from instructgen.cc3m.plot import plot_phrase_frequency
from instructgen.cc3m.selection import by_frequency
from instructgen.contracts import IMAGE_TOKEN
from instructgen.files import atomic_writer, write_json
from instructgen.generate.prompts import INSTRUCTIONS_DIR

BAD_LINES_SHOWN = 5
BRIEF_INSTRUCTIONS = INSTRUCTIONS_DIR / "brief.txt"


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
