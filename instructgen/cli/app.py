"""The Typer app and the console that every command module of the CLI shares."""

from __future__ import annotations

import typer
from rich.console import Console
from typer.core import TyperCommand

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


def taking_several_files(*names: str) -> type[TyperCommand]:
    """A command class whose options `names` take several values after one flag.

    `--exclude-images a b c` reads as `--exclude-images a --exclude-images b --exclude-images c`
    (Typer has no nargs=-1 for options); the values end at the next option or at `--`, and the
    repeated form still works.
    """

    class SeveralFilesCommand(TyperCommand):
        def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
            return super().parse_args(ctx, _spread(args, set(names), self._value_options()))

        def _value_options(self) -> set[str]:
            return {
                opt
                for p in self.params
                # Typer bundles its own click: its options are not `click.Option`s
                if p.param_type_name == "option" and not p.is_flag and not p.count
                for opt in p.opts
            }

    return SeveralFilesCommand


def _spread(args: list[str], several: set[str], takes_value: set[str]) -> list[str]:
    spread: list[str] = []
    flag: str | None = None  # the option whose values are being read
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            spread += [arg, *rest]
            break
        name = arg.split("=", 1)[0]
        if arg.startswith("-") and len(arg) > 1:
            flag = name if name in several else None
            spread.append(arg)
            if name in takes_value and "=" not in arg:
                value = next(rest, None)
                if value is not None:
                    spread.append(value)
        elif flag is not None:
            spread += [flag, arg]
        else:
            spread.append(arg)
    return spread
