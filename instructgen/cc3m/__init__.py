"""CC3M captions -> a noun-phrase-balanced pretraining pool; read `local.py` first.

The filter (DESIGN.md, "The CC3M filter, exactly"):
1. parse every distinct caption once with spaCy and take its noun phrases (`phrases.py`);
2. a phrase's frequency is the number of input rows (image-text pairs) whose caption has it;
3. phrases with frequency < `min_freq` are dropped;
4. from the least to the most frequent phrase (ties: in text order), the rows that contain
   the phrase and are not yet pooled join the pool; above `max_per_phrase` of them, a seeded
   random subset of `max_per_phrase` joins instead: those of smallest `sample_keys`, a hash of
   (seed, phrase, row), so the sample does not depend on the order an engine reads rows in.

Two engines run it: `local.py` (processes on this machine) and `ray_engine.py` (parsing and
counting on Ray Data). Both stand on the shared pieces below them (`input`, `phrases`,
`selection`, `outputs`), so both write the same bytes; the engine is chosen here, above both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from instructgen.cc3m.outputs import BRIEF_INSTRUCTIONS, FilterOptions, FilterSummary
from instructgen.cc3m.phrases import resolve_model
from instructgen.errors import InputError
from instructgen.generate.prompts import read_instructions


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
        from instructgen.cc3m.ray_engine import filter_on_ray

        summary = filter_on_ray(inputs, out_dir, options, workers, ray_address)
    else:
        from instructgen.cc3m.local import filter_local

        summary = filter_local(inputs, out_dir, options, workers, cache_path)
    summary.seconds = time.perf_counter() - started
    return summary
