"""The curation review page: `review` (serve) and `review export`."""

from __future__ import annotations

from pathlib import Path

import typer

from instructgen.cli.app import app, console
from instructgen.errors import InstructgenError

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
    chair: Path | None = typer.Option(
        None,
        help="chair.json (CHAIR: `build` writes it beside the records, `instructgen chair` "
        "too): hallucinated objects are marked in the answers and the summary shows the "
        "figures. Default: the chair.json beside RECORDS, if there is one.",
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
    if chair is None and (records.parent / "chair.json").is_file():
        chair = records.parent / "chair.json"
    conn = open_store(db)
    try:
        with console.status(f"importing into {db} (once; about 30 s per 158K records)"):
            report = import_sources(conn, Sources(records, contexts, quarantine, chair))
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
        + (f"; CHAIR marks from {chair}" if chair else "")
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
