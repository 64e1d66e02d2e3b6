"""Object hallucination: `chair` on generated text and answers; `pope build` and `pope score`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from instructgen.cli.app import app, console
from instructgen.errors import InputError


@app.command()
def chair(
    data: Path = typer.Argument(
        ...,
        help="A build output folder (its per-task files: figures per task), a LLaVA JSON "
        "(assistant turns scored; grouped by task when records carry our custom_id or a "
        "task, else one group `all`), or an "
        "answers file (with --questions; grouped by question category).",
    ),
    contexts: Path = typer.Option(
        ...,
        help="contexts.jsonl (or LLaVA's caps_boxes lines): the truth per image is its boxes "
        "plus the objects its captions name.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="chair.json to write."),
    questions: Path | None = typer.Option(
        None, help="The questions file of an answers DATA: maps each question_id to its image."
    ),
    skip_negated: bool = typer.Option(
        False,
        "--skip-negated",
        help="Leave out mentions under a negation ('no', 'not', 'without', 'n't'... among the "
        "5 words before, same clause). Default: every mention counts, as published.",
    ),
) -> None:
    """CHAIR (Rohrbach et al., 2018): CHAIR_i = hallucinated mentions / mentions, CHAIR_s =
    records with one / records, recall = true objects named / true objects.

    chair.json holds fractions in [0, 1] (`overall`, `by_task`) and, per record, its
    hallucinated and mentioned objects as [word, category].
    """
    from instructgen.curate.chair import (
        ChairReport,
        chair_of_llava,
        chair_table,
        read_truths,
        score_answers,
    )
    from instructgen.files import atomic_writer

    with console.status("scoring CHAIR"):
        truths = read_truths(contexts)
        if questions is not None:
            from instructgen.eval.records import read_answers, read_questions

            by_id = {q.question_id: (q.image, q.category) for q in read_questions(questions)}
            report = ChairReport(skip_negated)
            answers = read_answers(data)
            score_answers(report, ((qid, a.text) for qid, a in answers.items()), by_id, truths)
        else:
            if data.is_file() and data.suffix == ".jsonl":
                raise InputError(f"{data}: an answers file needs --questions (to find each image)")
            report = chair_of_llava(data, truths, skip_negated)
        figures = report.figures()
        if not figures["overall"]["records"]:
            skipped = sum(len(ids) for ids in report.skipped.values())
            why = ", ".join(f"{len(ids):,} {reason}" for reason, ids in report.skipped.items())
            raise InputError(
                f"{data}: none of its {skipped:,} records matches {contexts} ({why or 'none'}); "
                "pass the contexts.jsonl they were made from"
            )
        with atomic_writer(output) as f:
            report.write(f, str(data))
    Console().print(chair_table({"overall": figures["overall"], **figures["by_task"]}))
    console.print(f"[green]wrote[/green] {output}: {figures['overall']['records']:,} records")
    for reason, ids in report.skipped.items():
        console.print(f"[yellow]skipped {len(ids):,} ({reason})[/yellow]: {', '.join(ids[:5])}")


pope_app = typer.Typer(
    help="POPE (Li et al., 2023): yes/no object questions in random, popular and adversarial "
    "splits; build them from COCO contexts, score a model's answers.",
    no_args_is_help=True,
)
app.add_typer(pope_app, name="pope")


@pope_app.command("build")
def pope_build(
    contexts: Path = typer.Option(..., help="contexts.jsonl from `instructgen coco` (with boxes)."),
    images: int = typer.Option(
        500, "--images", min=1, help="Images to sample (each needs 3+ boxed categories)."
    ),
    seed: int = typer.Option(0, help="Seed of the draw: the same seed gives the same files."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for pope_<split>.jsonl."),
) -> None:
    """Per image 3 boxed objects (label yes) and 3 absent ones (no), alternating, in
    pope_random.jsonl, pope_popular.jsonl, pope_adversarial.jsonl (LLaVA question lines
    plus `label`; question ids unique across the three)."""
    from instructgen.eval.pope import split_file, write_pope

    counts = write_pope(contexts, images, seed, output)
    for split, n in counts.items():
        console.print(f"[green]wrote[/green] {output / split_file(split)}: {n:,} questions")


@pope_app.command("score")
def pope_score(
    questions: Path = typer.Option(..., help="A folder of pope_<split>.jsonl, or one such file."),
    answers: Path = typer.Option(..., help="answers.jsonl (matched by question_id, any order)."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="result.json to write; the bar plot goes beside it (.png)."
    ),
) -> None:
    """Accuracy, precision, recall, F1 and yes ratio per split (yes is the positive class),
    as fractions in [0, 1]; `published` holds published figures in percent, not measured here.

    The yes/no rule is LLaVA's: the words before the first period (commas dropped) containing
    "No", "no" or "not" mean no, anything else yes. Missing answers are listed, never scored.
    """
    from instructgen.eval.plot import plot_pope
    from instructgen.eval.pope import METRICS, read_pope_questions, score_pope
    from instructgen.eval.records import read_answers
    from instructgen.files import write_json

    pope_questions = read_pope_questions(questions)
    known = {q.question_id for q in pope_questions}
    every_answer = read_answers(answers)
    texts = {qid: a.text for qid, a in every_answer.items() if qid in known}
    result = score_pope(pope_questions, texts)
    write_json(output, result, indent=1)
    plot = output.with_suffix(".png")
    plot_pope(result, plot)
    table = Table(title="POPE (%)", title_justify="left")
    table.add_column("split", overflow="fold")
    for col in ("n", "accuracy", "precision", "recall", "F1", "yes ratio", "missing"):
        # headers and figures whole at 80 columns: the split names fold instead
        table.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    rows = {**result["splits"], "average": result["average"]}
    for split, f in rows.items():
        table.add_row(
            split,
            str(f.get("n", "")),
            *("-" if f[k] is None else f"{100 * f[k]:.1f}" for k in METRICS),
            str(f.get("missing", "")),
        )
    Console().print(table)
    for split in result["splits"]:
        if split not in result["average"]["splits"]:
            console.print(f"[yellow]{split}: no answers; left out of the average[/yellow]")
    for name, value in result["published"].items():
        console.print(f"{name}: {value} (as published, not measured here)")
    if result["missing"]:
        console.print(
            f"[yellow]{len(result['missing']):,} "
            f"{'question has' if len(result['missing']) == 1 else 'questions have'} no answer"
            "[/yellow] "
            f"(listed in {output})"
        )
    if len(every_answer) > len(texts):
        ignored = len(every_answer) - len(texts)
        console.print(
            f"[yellow]{ignored:,} answers to questions not in {questions}: ignored[/yellow]"
        )
    console.print(f"[green]wrote[/green] {output} and {plot}")
