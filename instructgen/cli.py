"""The `instructgen` command line: one command per pipeline stage (see DESIGN.md).

Each command parses its options, calls one function of its stage and prints a summary.
Errors a user can fix (InstructgenError) become one red line and exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from instructgen.errors import InstructgenError

app = typer.Typer(
    help="Build LLaVA-style multimodal instruction-tuning data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold the API key
)
console = Console(stderr=True)


# --- coco, render, estimate (stage 1) ---

# --- run (batch client) ---

# --- build (parse and curate) ---

# --- review (web page) ---

# --- cc3m (noun-phrase filter) ---

# --- train, chat (extra [train]) ---


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one red line."""
    try:
        app()
    except InstructgenError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
