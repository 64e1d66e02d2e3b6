"""`answer` and `judge`: a model's answers to a question set, and their GPT-judge score."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from instructgen.cli.app import app, console
from instructgen.cli.generate import run as run_command
from instructgen.client import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_RPM,
    DEFAULT_TIMEOUT_S,
    DEFAULT_TPM,
)
from instructgen.errors import InstructgenError

# --- the batch client's options, as `run` has them ---

JOURNAL = typer.Option(None, "--journal", help="SQLite journal of the requests (for resume).")
RPM = typer.Option(DEFAULT_RPM, "--rpm", min=1, help="Requests per minute budget.")
TPM = typer.Option(DEFAULT_TPM, "--tpm", min=1, help="Tokens per minute budget.")
MAX_IN_FLIGHT = typer.Option(
    DEFAULT_MAX_IN_FLIGHT, "--max-in-flight", min=1, help="Most requests awaiting an answer."
)
MAX_ATTEMPTS = typer.Option(
    DEFAULT_MAX_ATTEMPTS, "--max-attempts", min=1, help="Attempts per request."
)
TIMEOUT = typer.Option(DEFAULT_TIMEOUT_S, "--timeout", min=0.001, help="Seconds per answer.")
BATCH_API = typer.Option(
    False, "--batch-api", help="Through the OpenAI Batch API (half price, within 24 h)."
)
POLL_INTERVAL = typer.Option(
    DEFAULT_POLL_INTERVAL_S, "--poll-interval", min=0.001, help="Seconds between batch polls."
)
DRY_RUN = typer.Option(False, "--dry-run", help="Print the cost estimate; send nothing.")


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
) -> Callable[[Path, Path], bool]:
    """`send(requests, responses)`: `run` on a request file (its estimate first, its summary
    after); False when it only estimated (--dry-run)."""

    def send(requests: Path, responses: Path) -> bool:
        options = dict(
            base_url=base_url,
            rpm=rpm,
            tpm=tpm,
            max_in_flight=max_in_flight,
            max_attempts=max_attempts,
            timeout=timeout,
            poll_interval=poll_interval,
            resend_changed=False,
            backend="openai",
        )
        run_command(
            requests, output=responses, journal=journal, dry_run=True, batch_api=False, **options
        )
        if dry_run:
            return False
        run_command(
            requests, output=responses, journal=journal, dry_run=False, batch_api=batch_api,
            **options,
        )  # fmt: skip
        return True

    return send


@app.command()
def answer(
    questions: Path = typer.Option(
        ..., "--questions", help="Questions (LLaVA format: question_id, image, text, category)."
    ),
    images: Path = typer.Option(..., "--images", help="Folder holding the questions' images."),
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
        help="Checkpoint: plain or v1; default: the template it was trained with (v1 for a "
        "LLaVA folder not trained here).",
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
            max_attempts, timeout, batch_api, poll_interval, dry_run,
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
