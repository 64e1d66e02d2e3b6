"""`report`: one static HTML page of a run folder's data, cost, training and evaluation."""

from __future__ import annotations

from pathlib import Path

import typer

from instructgen.cli.app import app, console
from instructgen.errors import InputError


@app.command()
def report(
    run_dir: Path = typer.Argument(
        ..., help="The run folder (RUN= of `make recipe`: data/, stage1/, stage2/, eval/ ...)."
    ),
    output: Path = typer.Option(
        None, "-o", "--output", help="The HTML file to write; default RUN_DIR/report.html."
    ),
) -> None:
    """Write one static HTML page (no server, plots inline) from a run folder's files.

    Sections: data (records per task, quarantine reasons, flags, image mode, CHAIR), cost
    (estimated and spent), training (loss and lr per stage, the plan beside what was used),
    evaluation (judge, POPE, ScienceQA beside the published LLaVA figures) and settings. A
    section whose files are missing says so; only files inside RUN_DIR are read.
    """
    from instructgen.report.page import write_report

    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder")
    output = output or run_dir / "report.html"
    sections = write_report(run_dir, output)
    for s in sections:
        shown = "nothing found" if s.empty else "shown"
        gaps = f" (missing {', '.join(s.missing)})" if s.missing else ""
        console.print(f"{s.title.lower()}: {shown}{gaps}", highlight=False)
    console.print(f"[green]wrote[/green] {output}", highlight=False)
