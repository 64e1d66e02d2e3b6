"""The Typer app and the console that every command module of the CLI shares."""

from __future__ import annotations

import typer
from rich.console import Console

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
