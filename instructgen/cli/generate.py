"""Commands of the COCO generation pipeline: coco, render, estimate, run, build, stats."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import typer
from rich.console import Console

from instructgen.cli.app import app, console, taking_several_files
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
from instructgen.errors import InstructgenError
from instructgen.generate.images import DEFAULT_DETAIL, DEFAULT_MAX_SIDE

# --- coco, render, estimate (stage 1) ---


@app.command(cls=taking_several_files("--exclude-images"))
def coco(
    captions: Path = typer.Option(..., help="COCO captions_*.json annotation file."),
    instances: Path | None = typer.Option(
        None, help="COCO instances_*.json (boxes); without it contexts have captions only."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="contexts.jsonl to write."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N images (by id)."),
    image_ids: Path | None = typer.Option(
        None, help="File with the image ids to keep, one per line."
    ),
    exclude_images: list[Path] = typer.Option(
        [],
        "--exclude-images",
        help="Evaluation files whose images get no context (so no request, no cost): LLaVA "
        "question JSONL, POPE files, or one image name or id per line. "
        "COCO_val2014_000000441147.jpg, 000000441147.jpg and 441147 are one image. "
        "Several files: --exclude-images A B C, up to the next option.",
    ),
) -> None:
    """COCO annotations -> one image context (captions + normalized boxes) per image.

    Crowd boxes are dropped, boxes reaching outside the image are clipped, boxes with no
    area are dropped; each is counted in the summary. Images without captions are reported.
    LLaVA-Bench (COCO) asks about 30 val2014 images, 27 of them in train2017: pass its
    questions with --exclude-images before generating from train2017.
    """
    from instructgen.generate.coco import write_contexts

    s = write_contexts(captions, output, instances, limit, image_ids, tuple(exclude_images))
    console.print(
        f"[green]wrote[/green] {output}: {s.contexts} contexts from {s.images} images, "
        f"{s.captions} captions, {s.boxes} boxes "
        f"(dropped {s.crowd_dropped} crowd, {s.zero_area_dropped} zero-area; clipped {s.clipped})"
    )
    if s.no_captions:
        shown = ", ".join(map(str, s.no_captions[:10]))
        more = f" and {len(s.no_captions) - 10} more" if len(s.no_captions) > 10 else ""
        n = len(s.no_captions)
        console.print(f"[yellow]{n} images have no captions[/yellow]: {shown}{more}")
    for path, dropped in s.excluded.items():
        console.print(f"excluded {dropped} image{'' if dropped == 1 else 's'} named in {path}")


@app.command()
def render(
    contexts: Path = typer.Argument(..., help="contexts.jsonl written by `coco`."),
    output: Path = typer.Option(..., "--output", "-o", help="requests.jsonl to write."),
    tasks: str = typer.Option(
        "conversation,detail,complex_reasoning", help="Comma-separated tasks to render."
    ),
    model: str = typer.Option("gpt-4o", help="Model named in each request body."),
    max_tokens: int = typer.Option(1024, min=1, help="Completion token cap per request."),
    temperature: float = typer.Option(1.0, min=0.0, max=2.0, help="Sampling temperature."),
    prompts: Path | None = typer.Option(
        None, help="Prompts folder (ours or LLaVA's layout); default: the bundled prompts/."
    ),
    seeds: Path | None = typer.Option(None, help="Seeds folder; default: the bundled seeds/."),
    image: str = typer.Option(
        "none",
        help="Show the model the image too: none (text only: captions and boxes), url (an "
        "image_url part: the context's coco_url, or --image-base-url + file_name), inline (a "
        "base64 JPEG read from --images).",
    ),
    image_base_url: str | None = typer.Option(
        None, help="url mode: send this URL joined with each file_name instead of coco_url."
    ),
    images: Path | None = typer.Option(
        None, help="inline mode: the folder holding the images' files (e.g. COCO train2017/)."
    ),
    image_max_side: int | None = typer.Option(
        None,
        help="inline mode: shrink each image so its longest side is at most this (px). "
        f"Default {DEFAULT_MAX_SIDE}.",
    ),
    image_detail: str | None = typer.Option(
        None,
        help=f"The image_url detail asked of the API: low, high or auto. Default {DEFAULT_DETAIL}.",
    ),
) -> None:
    """Contexts -> OpenAI Batch API request lines, one per image and task.

    Messages: system prompt, the seed examples (user/assistant pairs), the image's context
    (with --image, the image beside it); the prefix is identical across requests so providers
    can cache it.
    """
    from instructgen.generate import prompts as prompt_files
    from instructgen.generate.images import ImageInput
    from instructgen.generate.render import render_requests

    image_input = None
    image_options = (image_base_url, images, image_detail, image_max_side)
    if image == "none" and any(o is not None for o in image_options):
        raise InstructgenError(
            "--image-base-url, --images, --image-detail and --image-max-side need --image url "
            "or inline (without --image, requests are text only)"
        )
    if image == "url" and image_max_side is not None:
        raise InstructgenError("--image-max-side is for --image inline; url mode sends addresses")
    image_detail = image_detail or DEFAULT_DETAIL
    if image != "none":
        image_input = ImageInput(
            image, image_detail, image_base_url, images, image_max_side or DEFAULT_MAX_SIDE
        )
    task_list = tuple(t.strip() for t in tasks.split(",") if t.strip())
    s = render_requests(
        contexts,
        output,
        task_list,
        model,
        max_tokens,
        temperature,
        prompts or prompt_files.DEFAULT_PROMPTS,
        seeds or prompt_files.DEFAULT_SEEDS,
        image_input,
    )
    per_task = ", ".join(f"{t} {n}" for t, n in s.per_task.items())
    shown = f"image {image}, detail {image_detail}" if image_input else "text only"
    console.print(
        f"[green]wrote[/green] {output}: {s.requests} requests "
        f"from {s.contexts} contexts ({per_task}; {shown})"
    )


@app.command()
def estimate(
    requests: Path = typer.Argument(..., help="requests.jsonl (Batch API input lines)."),
    model: str | None = typer.Option(None, help="Price as this model instead of each request's."),
    contexts: Path | None = typer.Option(
        None,
        help="contexts.jsonl with the pixel sizes of images sent by URL; default: "
        "contexts.jsonl beside the requests file, when there.",
    ),
) -> None:
    """Prompt tokens (text and image), expected completion tokens and cost, per task.

    Also how many input files `run --batch-api` would upload.
    """
    from rich.table import Table

    from instructgen.generate.render import estimate_requests

    est = estimate_requests(requests, model, contexts or _contexts_beside(requests))
    table = Table(title=f"Estimate for {requests} ({est.model})")
    columns = ("task", "requests", "text tokens", "images", "image tokens", "completion tokens")
    for col in (*columns, "standard $", "cached prefix $", "batch $"):
        table.add_column(col, justify="left" if col == "task" else "right", no_wrap=True)

    def dollars(cost: float | None) -> str:
        return "unknown" if cost is None else f"{cost:,.2f}"

    for row in [*est.rows, est.total]:
        table.add_row(
            row.task,
            f"{row.requests:,}",
            f"{row.prompt_tokens:,}",
            f"{row.images:,}",
            "unknown" if row.image_tokens is None else f"{row.image_tokens:,}",
            f"{row.completion_tokens:,}",
            dollars(row.cost_standard),
            dollars(row.cost_cached),
            dollars(row.cost_batch),
            style="bold" if row.task == "total" else None,
        )
    out = Console()
    Console(width=max(out.width, 150)).print(table)  # never squeeze the figures
    console.print(f"tokens: {est.token_method}; completions: {est.completion_method}")
    if est.total.images:
        console.print(
            "image tokens: OpenAI's published formula for the model (detail auto counted as "
            f"high); pixel sizes of {est.image_sizes}"
        )
    console.print(f"run --batch-api would upload {est.batch_files:,} input file(s)")


def _contexts_beside(requests: Path) -> Path | None:
    """contexts.jsonl in the requests file's folder, if there is one."""
    beside = requests.parent / "contexts.jsonl"
    return beside if beside.is_file() else None


# --- run (batch client) ---


def estimate_line(est, rpm: int, tpm: int) -> str:
    """What a run would send and cost, at most, and how long it takes at these budgets."""
    cost = "unknown (no price for the model)"
    if est.max_cost_usd is not None:
        cost = f"${est.prompt_cost_usd:,.2f} prompts, at most ${est.max_cost_usd:,.2f} in all"
        cost += f" (Batch API: at most ${est.max_cost_usd / 2:,.2f})"
    return (
        f"{est.to_send:,} of {est.total:,} requests to send; {est.prompt_tokens:,} prompt "
        f"tokens, at most {est.max_completion_tokens:,} completion tokens; {cost}; about "
        f"{est.minutes:,.1f} min at {rpm:,} RPM / {tpm:,} TPM"
    )


@app.command()
def run(
    requests: Path = typer.Argument(..., help="requests.jsonl (OpenAI Batch API input lines)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="responses.jsonl to write (Batch API output lines)."
    ),
    journal: Path | None = typer.Option(
        None, help="SQLite journal for resume (default: journal.sqlite beside the output)."
    ),
    backend: str = typer.Option(
        "openai",
        help="openai: send to an OpenAI-compatible API. template: the naive offline baseline "
        "(a listed question, the caption as answer); no key, no journal.",
    ),
    base_url: str | None = typer.Option(
        None,
        envvar="OPENAI_BASE_URL",
        help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM, llama.cpp, "
        "Ollama); default https://api.openai.com/v1.",
    ),
    rpm: int = RPM,
    tpm: int = TPM,
    max_in_flight: int = MAX_IN_FLIGHT,
    max_attempts: int = MAX_ATTEMPTS,
    timeout: float = TIMEOUT,
    dry_run: bool = DRY_RUN,
    batch_api: bool = BATCH_API,
    poll_interval: float = POLL_INTERVAL,
    resend_changed: bool = typer.Option(
        False,
        help="Send again done requests whose line changed in the requests file "
        "(otherwise such a change is an error).",
    ),
    hedge: bool = HEDGE,
) -> None:
    """Send requests.jsonl within rate limits, retrying faults; resumable from the journal."""
    from instructgen.client import runner

    if backend not in ("openai", "template"):
        raise InstructgenError(f"--backend must be openai or template, not {backend!r}")
    if output is None and not dry_run:
        raise InstructgenError("missing --output/-o: the responses.jsonl to write")
    journal = journal or (output or requests).parent / "journal.sqlite"
    config = runner.RunConfig(
        base_url=base_url,
        rpm=rpm,
        tpm=tpm,
        max_in_flight=max_in_flight,
        max_attempts=max_attempts,
        timeout_s=timeout,
        resend_changed=resend_changed,
        hedge=hedge,
    )
    if dry_run:
        est = runner.dry_run(requests, journal, config)
        console.print(f"dry run: {estimate_line(est, rpm, tpm)}. Nothing sent.")
        _print_dry_run_images(requests, journal)
        return
    if backend == "template":
        from instructgen.generate.template_backend import write_template_responses

        n = write_template_responses(requests, output)
        console.print(f"template baseline: {n:,} responses written to {output} (no model called)")
        return
    key = runner.api_key_from_env()
    if batch_api:
        from instructgen.client.batch_api import run_batch

        summary = run_batch(
            requests, output, journal, base_url, poll_interval, console, key, resend_changed
        )
    else:
        summary = runner.run_requests(requests, output, journal, config, console, key)
    errors = ", ".join(f"{k} {v}" for k, v in sorted(summary.errors.items())) or "none"
    if summary.hedged:
        errors += f"; {summary.hedged:,} stalled call(s) sent again at the tail"
    finishes = ", ".join(f"{k} {v}" for k, v in sorted(summary.finish_reasons.items())) or "-"
    console.print(
        f"run: {summary.done:,} done, {summary.failed:,} failed of {summary.total:,} "
        f"({summary.sent:,} finished now, {summary.skipped:,} done before) in "
        f"{summary.wall_s:,.1f} s; cost ${summary.cost_usd:,.4f}; retried/failed attempts: "
        f"{errors}; finish reasons: {finishes}; {summary.output_lines:,} lines -> {output}; "
        f"journal {journal}"
    )


def _print_dry_run_images(requests: Path, journal: Path) -> None:
    """The image tokens of the requests a run would send (those not done in the journal)."""
    from instructgen.generate.render import image_totals

    done: frozenset[str] = frozenset()
    if journal.is_file():
        with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT custom_id FROM requests WHERE status = 'done'")
            done = frozenset(cid for (cid,) in rows)
    totals = image_totals(requests, _contexts_beside(requests), done)
    if not totals.images:
        return
    tokens = "unknown" if totals.tokens is None else f"{totals.tokens:,}"
    cost = "unknown" if totals.cost_usd is None else f"${totals.cost_usd:,.2f}"
    console.print(
        f"images: {totals.images:,} to send, {tokens} image tokens, {cost} more "
        "(not in the figures above; detail auto counted as high)"
    )


# --- build (parse and curate) ---


@app.command()
def build(
    responses: Path = typer.Argument(..., help="responses.jsonl (Batch API output lines)."),
    requests: Path = typer.Option(..., help="requests.jsonl the responses answer."),
    contexts: Path = typer.Option(..., help="contexts.jsonl the requests were rendered from."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write the outputs into."),
    seed: int = typer.Option(
        0, help="Seed for detail questions, the <image> position and the shuffle."
    ),
    instructions: Path | None = typer.Option(
        None, help="Folder with detail.txt (question phrasings); default: prompts/instructions."
    ),
) -> None:
    """Responses -> LLaVA training JSON, with every rejection explained.

    Writes into OUT: llava_instruct.json (all tasks, shuffled), <task>.json,
    quarantine.jsonl (each request that became no record: reason, raw text),
    chair.json (CHAIR object hallucination per record, as `chair` writes it)
    and stats.json. Fails unless records + quarantined = requests + unknown
    + duplicate responses.
    """
    from instructgen.curate.build import build, stats_report
    from instructgen.generate.prompts import INSTRUCTIONS_DIR

    stats = build(responses, requests, contexts, output, seed, instructions or INSTRUCTIONS_DIR)
    Console().print(stats_report(stats))
    console.print(
        f"[green]wrote[/green] {output}/llava_instruct.json ({stats['records']['total']} records), "
        f"quarantine.jsonl ({stats['quarantined']['total']}), per-task files, chair.json, "
        "stats.json"
    )


@app.command()
def stats(
    path: Path = typer.Argument(..., help="A build output folder, or its stats.json."),
) -> None:
    """Print the tables of a finished build (its stats.json): records, rejections, flags and
    CHAIR (object hallucination: CHAIR_i, CHAIR_s, recall, in percent)."""
    from instructgen.curate.build import read_stats_report

    Console().print(read_stats_report(path))
