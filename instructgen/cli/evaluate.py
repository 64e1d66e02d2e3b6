"""`answer` and `judge`: a model's answers to a question set, and their GPT-judge score."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

from instructgen.cli.app import app, console
from instructgen.cli.generate import estimate_line
from instructgen.cli.generate import run as run_command
from instructgen.cli.options import (
    BATCH_API,
    DRY_RUN,
    HEDGE,
    MAX_ATTEMPTS,
    MAX_IN_FLIGHT,
    POLL_INTERVAL,
    RPM,
    TIMEOUT,
    TPM,
)
from instructgen.errors import InputError, InstructgenError

JOURNAL = typer.Option(None, "--journal", help="SQLite journal of the requests (for resume).")


def _sender(
    journal: Path,
    base_url: str | None,
    rpm: int,
    tpm: int,
    max_in_flight: int,
    max_attempts: int,
    timeout: float,
    batch_api: bool,
    poll_interval: float,
    dry_run: bool,
    hedge: bool,
) -> Callable[[Path, Path], bool]:
    """`send(requests, responses)`: the cost estimate, then `run` on a request file (its
    summary after); False when it only estimated (--dry-run)."""

    def send(requests: Path, responses: Path) -> bool:
        from instructgen.client.runner import RunConfig
        from instructgen.client.runner import dry_run as estimate

        config = RunConfig(base_url=base_url, rpm=rpm, tpm=tpm)
        line = estimate_line(estimate(requests, journal, config), rpm, tpm)
        if dry_run:
            console.print(f"dry run: {line}. Nothing sent.")
            return False
        console.print(f"estimate: {line}")
        run_command(
            requests, output=responses, journal=journal, backend="openai", base_url=base_url,
            rpm=rpm, tpm=tpm, max_in_flight=max_in_flight, max_attempts=max_attempts,
            timeout=timeout, dry_run=False, batch_api=batch_api, poll_interval=poll_interval,
            resend_changed=False, hedge=hedge,
        )  # fmt: skip
        return True

    return send


@app.command()
def answer(
    questions: Path = typer.Option(
        ..., "--questions", help="Questions (LLaVA format: question_id, image, text, category)."
    ),
    images: Path | None = typer.Option(
        None,
        "--images",
        help="Folder holding the questions' images (needed unless every question is text-only).",
    ),
    output: Path = typer.Option(
        ..., "-o", "--output", help="answers.jsonl to write (LLaVA's answer format)."
    ),
    model: str = typer.Option(
        ...,
        "--model",
        help="A checkpoint folder (written by `train`, or any LlavaForConditionalGeneration "
        "folder); with --base-url, the model name the endpoint serves.",
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="An OpenAI-compatible vision endpoint, e.g. https://api.openai.com/v1 or a vLLM "
        "server's http://localhost:8000/v1. Requests go through the batch client.",
    ),
    model_id: str | None = typer.Option(
        None, "--model-id", help="model_id written in each answer (default: the model's name)."
    ),
    batch_size: int = typer.Option(
        8, "--batch-size", min=1, help="Checkpoint: questions per batch."
    ),
    temperature: float = typer.Option(
        0.0, "--temperature", min=0.0, max=2.0, help="0: greedy decoding."
    ),
    max_new_tokens: int = typer.Option(
        1024, "--max-new-tokens", min=1, help="Longest answer, in tokens."
    ),
    template: str | None = typer.Option(
        None,
        "--template",
        help="Checkpoint: plain, v1 or chat (the model's own chat template); default: the "
        "template it was trained with (for a LLaVA folder not trained here: its own chat "
        "template if it has one, else v1).",
    ),
    journal: Path | None = JOURNAL,
    rpm: int = RPM,
    tpm: int = TPM,
    max_in_flight: int = MAX_IN_FLIGHT,
    max_attempts: int = MAX_ATTEMPTS,
    timeout: float = TIMEOUT,
    batch_api: bool = BATCH_API,
    poll_interval: float = POLL_INTERVAL,
    dry_run: bool = DRY_RUN,
    hedge: bool = HEDGE,
) -> None:
    """Answer a questions file with a checkpoint or an endpoint; a rerun skips what is answered.

    Answers are kept as they come in OUT.partial; OUT is written atomically at the end. The
    endpoint backend keeps OUT-stem.requests.jsonl, .responses.jsonl and .journal.sqlite.
    """
    from instructgen.eval.records import read_questions

    items = read_questions(questions)
    if base_url is not None:
        from instructgen.eval.answer import answer_with_endpoint, endpoint_files

        send = _sender(
            journal or endpoint_files(output)[2], base_url, rpm, tpm, max_in_flight,
            max_attempts, timeout, batch_api, poll_interval, dry_run, hedge,
        )  # fmt: skip
        stats = answer_with_endpoint(
            items, images, output, model_id or model, temperature, max_new_tokens, send
        )
        if stats is None:
            return
    else:
        stats = _answer_with_checkpoint(
            items, images, output, Path(model), model_id, batch_size, temperature,
            max_new_tokens, template,
        )  # fmt: skip
    console.print(
        f"[green]answers[/green]: {stats.answered_now:,} new, {stats.answered_before:,} before, "
        f"{stats.failed:,} failed of {stats.total:,} questions -> {output}; "
        f"{stats.answers_per_s:,.2f} answers/s, {stats.tokens_per_s:,.1f} tokens/s "
        f"({stats.completion_tokens:,} tokens in {stats.seconds:,.1f} s)",
        highlight=False,
    )
    if stats.failed:
        raise InstructgenError(
            f"{stats.failed} question(s) got no answer (see the journal's errors); "
            "rerun the same command to ask them again"
        )


def _answer_with_checkpoint(
    items, images, output, model, model_id, batch_size, temperature, max_new_tokens, template
):
    from instructgen.cli.train import _require_train_extra

    if not model.is_dir():  # a model's name: it needs --base-url, whatever is installed
        raise InputError(
            f"{model}: no such checkpoint folder; for a model an endpoint serves, "
            "add --base-url URL (e.g. --base-url https://api.openai.com/v1 --model gpt-4o)"
        )
    _require_train_extra()
    import torch
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from instructgen.eval.answer import AnswerFile, check_images
    from instructgen.eval.generate import answer_with_checkpoint, load_answerer

    answers = AnswerFile(output, items, model_id or model.resolve().name)
    check_images(answers.todo(), images)
    cuda = torch.cuda.is_available()
    answerer = load_answerer(
        model, torch.bfloat16 if cuda else torch.float32, "cuda" if cuda else "cpu", template
    )
    if not console.is_terminal:
        return answer_with_checkpoint(
            answerer, answers, images, batch_size, max_new_tokens, temperature
        )
    columns = (
        TextColumn("[bold]answer"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[tokens]:,} tokens"),
    )
    with Progress(*columns, console=console, refresh_per_second=2) as progress:
        task = progress.add_task("answer", total=len(items), tokens=0)
        progress.update(task, completed=answers.answered_before)

        def advance(answers: int, tokens: int) -> None:
            done = progress.tasks[task].fields["tokens"] + tokens
            progress.update(task, advance=answers, tokens=done)

        return answer_with_checkpoint(
            answerer, answers, images, batch_size, max_new_tokens, temperature, advance
        )


@app.command()
def judge(
    questions: Path = typer.Option(
        ..., "--questions", help="Questions (question_id, image, text, category)."
    ),
    contexts: Path = typer.Option(
        ...,
        "--contexts",
        help="What the judge is told about each image: LLaVA's caps_boxes file (image, "
        "captions, instances), LLaVA-Bench In-the-Wild's context.jsonl (image, caption) or a "
        "contexts.jsonl of `coco`.",
    ),
    reference: Path = typer.Option(
        ..., "--reference", help="Reference answers (answer format), shown as Assistant 1."
    ),
    candidate: Path = typer.Option(
        ..., "--candidate", help="The answers to score (answer format), shown as Assistant 2."
    ),
    output: Path = typer.Option(
        ...,
        "-o",
        "--output",
        help="Folder: requests.jsonl, journal.sqlite, responses.jsonl, reviews.jsonl, "
        "summary.json, scores.png.",
    ),
    model: str = typer.Option("gpt-4o", "--model", help="The judge model."),
    temperature: float = typer.Option(
        0.2, "--temperature", min=0.0, max=2.0, help="The judge's sampling temperature."
    ),
    max_tokens: int = typer.Option(1024, "--max-tokens", min=1, help="Longest verdict, tokens."),
    swap: bool = typer.Option(
        False,
        "--swap",
        help="Judge each question twice, the answers' order reversed; average both and report "
        "the position bias (not in the paper's protocol; twice the cost).",
    ),
    compat: str | None = typer.Option(
        None,
        "--compat",
        help="llava: LLaVA's arithmetic, an unparsed verdict counts as scores (-1, -1).",
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        envvar="OPENAI_BASE_URL",
        help="OpenAI-compatible endpoint of the judge; default https://api.openai.com/v1.",
    ),
    rpm: int = RPM,
    tpm: int = TPM,
    max_in_flight: int = MAX_IN_FLIGHT,
    max_attempts: int = MAX_ATTEMPTS,
    timeout: float = TIMEOUT,
    batch_api: bool = BATCH_API,
    poll_interval: float = POLL_INTERVAL,
    dry_run: bool = DRY_RUN,
    hedge: bool = HEDGE,
) -> None:
    """Score candidate answers against reference answers with a text-only GPT judge.

    Relative score = 100 x mean(candidate) / mean(reference) per category and overall, over
    the verdicts whose two scores parse; the others are counted as unparsed. Questions missing
    an answer are listed and not judged (exit 1 once the others are scored). A killed judge
    resumes from OUT/journal.sqlite.
    """
    from rich.table import Table

    from instructgen.eval import judge as judging
    from instructgen.eval.plot import plot_scores
    from instructgen.eval.records import check_known, read_answers, read_contexts, read_questions
    from instructgen.files import write_jsonl

    if compat is not None and compat not in judging.COMPAT:
        raise InstructgenError(f"--compat must be {', '.join(judging.COMPAT)}, not {compat!r}")
    items = read_questions(questions)
    answers = {}
    for path in (reference, candidate):
        answers[path] = read_answers(path)
        check_known(answers[path], items, path)
    pairs, missing = judging.match_pairs(
        items, read_contexts(contexts), answers[reference], answers[candidate], contexts
    )
    if not pairs:
        raise InstructgenError("no question has both a reference and a candidate answer")
    settings = judging.JudgeSettings(model, temperature, max_tokens, swap, compat)
    requests, responses = output / "requests.jsonl", output / "responses.jsonl"
    lines = list(judging.judge_requests(pairs, settings))
    if (output / "journal.sqlite").is_file():
        judging.check_same_requests(lines, requests)
    n = write_jsonl(requests, lines)
    console.print(f"judge: {n:,} requests for {len(pairs):,} questions -> {requests}")
    send = _sender(
        output / "journal.sqlite", base_url, rpm, tpm, max_in_flight, max_attempts, timeout,
        batch_api, poll_interval, dry_run, hedge,
    )  # fmt: skip
    if not send(requests, responses):
        if missing:
            raise InstructgenError(_missing_line(missing, len(pairs)))
        return
    reviews = judging.make_reviews(pairs, judging.read_verdicts(responses), swap)
    summary = judging.summarize(reviews, settings, missing)
    judging.write_outputs(output, reviews, summary, swap)
    names = [_name(answers[path], path) for path in (reference, candidate)]
    plot_scores(summary, output / "scores.png", *names)
    table = Table(title=f"{candidate.name} vs {reference.name} (judge {model})")
    frame = judging.summary_frame(summary)
    table.add_column("category")
    for column in frame.columns:
        table.add_column(column.replace("_", " "), justify="right")
    formats = {"relative": "{:.1f}", "reference_mean": "{:.2f}", "candidate_mean": "{:.2f}"}
    formats["first_position_gain"] = "{:+.2f}"
    for category, row in frame.iterrows():
        cells = [
            "-" if value is None or value != value else formats.get(col, "{:.0f}").format(value)
            for col, value in row.items()
        ]
        table.add_row(str(category), *cells, style="bold" if category == "all" else None)
    Console(width=max(Console().width, 110)).print(table)
    console.print(
        f"[green]wrote[/green] {output}/reviews.jsonl, summary.json, scores.png; relative "
        f"score {_percent(summary['all']['relative'])}, {summary['all']['unparsed']} of "
        f"{summary['all']['n']} verdicts unparsed",
        highlight=False,
    )
    problems = []
    if missing:
        problems.append(_missing_line(missing, len(pairs)))
    if summary["all"]["failed"]:
        problems.append(
            f"{summary['all']['failed']} judge request(s) failed (their errors are in "
            f"{output}/reviews.jsonl); rerun the same command to ask them again"
        )
    if problems:
        raise InstructgenError("; ".join(problems))


def _missing_line(missing: list, complete: int) -> str:
    shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
    return (
        f"{len(missing)} question(s) were not judged, an answer is missing "
        f"(question ids {shown}); the judge covers the {complete} complete pairs"
    )


def _percent(relative: float | None) -> str:
    return "- (no verdict parsed)" if relative is None else f"{relative:.1f}%"


def _name(answers: dict, path: Path) -> str:
    """The model_id(s) of an answers file, else the file's name."""
    ids = {a.model_id for a in answers.values() if a.model_id}
    return ", ".join(sorted(ids)) or path.name
