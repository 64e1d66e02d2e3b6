"""The `instructgen` command line: one command per pipeline stage (see DESIGN.md).

Each command parses its options, calls one function of its stage and prints a summary.
Errors a user can fix (InstructgenError) become one red line and exit code 1.
One module per stage group registers its commands on the shared app.
"""

from __future__ import annotations

import sys

from rich.markup import escape

# isort: off
# Each module registers its commands; the import order is the order of `--help`.
from instructgen.cli import generate, train, evaluate, hallucination, review  # noqa: F401
from instructgen.cli import cc3m, scienceqa, export, report  # noqa: F401

# isort: on
from instructgen.cli.app import app, console
from instructgen.errors import InstructgenError

__all__ = ["app", "main"]


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
