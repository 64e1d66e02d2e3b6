"""`scienceqa convert | questions | score`: ScienceQA as training data, questions and scores."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import typer
from rich.markup import escape

from instructgen.cli.app import app, console
from instructgen.errors import InputError
from instructgen.scienceqa.problems import DEFAULT_FORMAT, quote_pids

scienceqa_app = typer.Typer(
    help="ScienceQA: LLaVA training data in a chosen prompt format, questions for `answer`, "
    "and accuracy with the paper's breakdown.",
    no_args_is_help=True,
)
app.add_typer(scienceqa_app, name="scienceqa")

_PROBLEMS = typer.Option(
    None, "--problems", help="Official layout: problems.json ({pid: problem})."
)
_PID_SPLITS = typer.Option(
    None, "--pid-splits", help="Official layout: pid_splits.json (each split's list of pids)."
)
_PARQUET = typer.Option(
    None,
    "--parquet",
    help="Hugging Face layout: parquet files, or folders holding `{split}-*.parquet` "
    "(repeat the option for several). Ids are `{split}-{row}`.",
)
_SPLIT = typer.Option(
    ..., "--split", help="train, val (or validation), test, or any split of pid_splits.json."
)
_FORMAT = typer.Option(
    DEFAULT_FORMAT,
    "--format",
    help="Prompt format <input>-<output>: input letters C context, Q question, M options; "
    "output letters A answer sentence, L lecture, E explanation (QCM-LEA: reasoning first; "
    "QCM-ALE, QCM-AE: answer first; QCM-A, CQM-A: the letter only).",
)
_IMAGES = typer.Option(
    None,
    "--images",
    help="Official layout: the images/ folder (train/, val/, test/ in it) or one split's "
    "folder; every image is checked and paths are written relative to it.",
)
_IMAGES_OUT = typer.Option(
    None,
    "--images-out",
    help="Parquet layout: folder to write the embedded images to, as {id}.png; paths are "
    "relative to it.",
)


def _load(
    problems: Path | None,
    pid_splits: Path | None,
    parquet: list[Path] | None,
    split: str,
    images: Path | None = None,
    images_out: Path | None = None,
    need_image_files: bool = True,
):
    """Read the split from whichever layout the options name; report what was read."""
    if parquet and (problems or pid_splits):
        raise InputError("give --problems and --pid-splits, or --parquet, not both")
    if parquet:
        if images:
            raise InputError("--images is for the official layout; with --parquet use --images-out")
        return _load_parquet(parquet, split, images_out, need_image_files)
    if problems is None or pid_splits is None:
        raise InputError(
            "give --problems problems.json --pid-splits pid_splits.json (official layout) "
            "or --parquet FILE|DIR (Hugging Face layout)"
        )
    if images_out:
        raise InputError("--images-out is for the parquet layout; use --images with problems.json")
    return _load_official(problems, pid_splits, split, images, need_image_files)


def _load_parquet(parquet: list[Path], split: str, images_out: Path | None, need_image_files: bool):
    from instructgen.scienceqa import files as sf

    rows, has_images = sf.parquet_shape(parquet, split)
    if need_image_files and has_images and images_out is None:
        raise InputError("the parquet files embed images: pass --images-out DIR to write them")
    with _progress(f"reading {sf.canonical_split(split)} parquet", rows) as advance:
        read = sf.read_parquet(parquet, split, images_out, advance)
    if not read.problems:
        raise InputError(f"the parquet files of split {read.split} hold no rows")
    console.print(f"read {len(read.problems):,} rows of split {read.split}")
    if need_image_files and has_images:
        n_images = sum(p.image is not None for p in read.problems)
        console.print(
            f"images: {n_images:,} in {images_out}/ ({read.images_written:,} written, "
            f"{n_images - read.images_written:,} already there)"
        )
    return read


def _load_official(
    problems: Path, pid_splits: Path, split: str, images: Path | None, need_image_files: bool
):
    from instructgen.scienceqa import files as sf

    read = sf.read_official(problems, pid_splits, split)
    if not read.problems:
        raise InputError(
            f"{problems}: holds none of the {len(read.absent):,} pids of split {split}"
        )
    listed = len(read.problems) + len(read.absent)
    absent = f" ({len(read.absent):,} absent, skipped)" if read.absent else ""
    console.print(
        f"split {split}: {listed:,} pids, {len(read.problems):,} in {problems.name}{absent}"
    )
    if not need_image_files:
        return read
    n_images = sum(p.image is not None for p in read.problems)
    if images is None:
        console.print(
            f"images: {n_images:,} paths follow the official layout "
            "(<split>/<pid>/image.png under images/), not checked; pass --images DIR to check them"
        )
        return read
    read = replace(read, problems=sf.locate_images(read.problems, images))
    console.print(f"images: all {n_images:,} found under {images}/")
    return read


@contextmanager
def _progress(label: str, total: int):
    """A rich progress bar (done/total, rows/s, ETA); yields the function that advances it."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total, rate="")

        def advance(n: int) -> None:
            bar.advance(task, n)
            speed = bar.tasks[task].speed
            bar.update(task, rate=f"{speed:,.0f} rows/s" if speed else "")

        yield advance


@scienceqa_app.command()
def convert(
    output: Path = typer.Option(..., "-o", "--output", help="The LLaVA training JSON to write."),
    split: str = _SPLIT,
    problems: Path = _PROBLEMS,
    pid_splits: Path = _PID_SPLITS,
    parquet: list[Path] = _PARQUET,
    format_code: str = _FORMAT,
    images: Path = _IMAGES,
    images_out: Path = _IMAGES_OUT,
) -> None:
    """Convert one split to LLaVA training JSON (id = pid, `<image>` once for image questions)."""
    from instructgen.files import write_json
    from instructgen.scienceqa.problems import llava_record, parse_format

    fmt = parse_format(format_code)
    read = _load(problems, pid_splits, parquet, split, images, images_out)
    records, empty = [], []
    for p in read.problems:
        record = llava_record(p, fmt)
        if record is None:
            empty.append(p.pid)
        else:
            records.append(record)
    write_json(output, records)
    with_image = sum("image" in r for r in records)
    console.print(
        f"[green]wrote {len(records):,} records[/green] in format {fmt.code} "
        f"({with_image:,} with an image, {len(records) - with_image:,} text only) -> {output}",
        highlight=False,
    )
    if empty:
        console.print(
            f"[yellow]{len(empty):,} problems skipped[/yellow]: format {fmt.code} gives them "
            f"an empty answer (no lecture or solution): {escape(quote_pids(empty))}"
        )


@scienceqa_app.command()
def questions(
    output: Path = typer.Option(
        ..., "-o", "--output", help="Questions file for `answer` (JSON Lines)."
    ),
    split: str = _SPLIT,
    problems: Path = _PROBLEMS,
    pid_splits: Path = _PID_SPLITS,
    parquet: list[Path] = _PARQUET,
    format_code: str = _FORMAT,
    images: Path = _IMAGES,
    images_out: Path = _IMAGES_OUT,
) -> None:
    """Write the split's questions for `answer`: question_id (pid), image, text, category."""
    from instructgen.files import write_jsonl
    from instructgen.scienceqa.problems import parse_format, question_line

    fmt = parse_format(format_code)
    read = _load(problems, pid_splits, parquet, split, images, images_out)
    n = write_jsonl(output, (question_line(p, fmt) for p in read.problems))
    console.print(
        f"[green]wrote {n:,} questions[/green] (prompt of format {fmt.code}) -> {output}",
        highlight=False,
    )


@scienceqa_app.command()
def score(
    answers: Path = typer.Option(
        ...,
        "--answers",
        help="Answer-format lines (question_id, text, ...) or LLaVA's result JSON (outputs).",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="result.json to write."),
    split: str = _SPLIT,
    problems: Path = _PROBLEMS,
    pid_splits: Path = _PID_SPLITS,
    parquet: list[Path] = _PARQUET,
) -> None:
    """Accuracy of the answers on one split, with the paper's breakdown beside its LLaVA row.

    An answer is read by rules, in order: the text is exactly an option letter; it starts with
    an option letter and `.`; `The answer is X.` occurs exactly once. Anything else is
    unparsed and counted wrong, as is a question with no answer (missing).
    """
    from instructgen.files import write_json
    from instructgen.scienceqa.files import read_answers
    from instructgen.scienceqa.problems import breakdown_table, score_answers

    read = _load(problems, pid_splits, parquet, split, need_image_files=False)
    texts = read_answers(answers)
    result = score_answers(read.problems, texts)
    write_json(output, result.to_json(), indent=2)
    _print_table(breakdown_table(result, f"these answers ({split})"), result.group_sizes)
    console.print(
        f"[green]accuracy {result.acc:.2f}%[/green]: {result.correct:,} of {result.count:,} "
        f"correct; {len(result.unparsed):,} unparsed, {len(result.missing):,} missing"
        + (f"; {result.ignored:,} answers for other pids ignored" if result.ignored else ""),
        highlight=False,
    )
    if result.unparsed:
        reasons: dict[str, int] = {}
        for reason in result.unparsed.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items()))
        console.print(
            f"[yellow]unparsed[/yellow] ({kinds}): {escape(quote_pids(list(result.unparsed)))}"
        )
    if result.missing:
        console.print(f"[yellow]missing[/yellow]: {escape(quote_pids(result.missing))}")
    console.print(f"-> {output}", highlight=False)


def _print_table(table, sizes: dict[str, int]) -> None:
    """The breakdown DataFrame as a rich table, one column per row of it (80 columns fit)."""
    from rich.table import Table

    out = Table(title="ScienceQA accuracy (%) per group")
    out.add_column("group")
    for label in table.index:
        out.add_column(label.replace(" (", "\n("), justify="right")
    out.add_column("questions", justify="right", style="dim")
    for group in table.columns:
        cells = ("-" if v is None or v != v else f"{v:.2f}" for v in table[group])
        out.add_row(group, *cells, f"{sizes[group]:,}")
    console.print(out)
