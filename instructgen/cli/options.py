"""The batch client's options, one definition for every command that sends requests
(`run`, `answer`, `judge`)."""

from __future__ import annotations

import typer

from instructgen.client import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_RPM,
    DEFAULT_TIMEOUT_S,
    DEFAULT_TPM,
)


def _seconds(value: float) -> float:
    """A duration option: more than 0 seconds."""
    if value <= 0:
        raise typer.BadParameter(f"must be more than 0 seconds, not {value:g}")
    return value


RPM = typer.Option(
    DEFAULT_RPM,
    "--rpm",
    min=1,
    help="Requests per minute budget (GPT-4o, OpenAI usage tier 2); lowered to the "
    "server's x-ratelimit-limit-requests when that is less.",
)
TPM = typer.Option(
    DEFAULT_TPM,
    "--tpm",
    min=1,
    help="Tokens per minute budget (GPT-4o, tier 2); a request costs its prompt "
    "tokens plus max_tokens. Lowered to x-ratelimit-limit-tokens when that is less.",
)
MAX_IN_FLIGHT = typer.Option(
    DEFAULT_MAX_IN_FLIGHT,
    "--max-in-flight",
    min=1,
    help="Most requests awaiting an answer at once (also the most a kill -9 "
    "can make you pay twice).",
)
MAX_ATTEMPTS = typer.Option(
    DEFAULT_MAX_ATTEMPTS,
    "--max-attempts",
    min=1,
    help="Attempts per request before it is written as a failed line.",
)
TIMEOUT = typer.Option(
    DEFAULT_TIMEOUT_S, "--timeout", callback=_seconds, help="Seconds to wait for one answer."
)
DRY_RUN = typer.Option(False, "--dry-run", help="Print the token and cost estimate; send nothing.")
BATCH_API = typer.Option(
    False,
    "--batch-api",
    help="Run the job through the OpenAI Batch API (half price, "
    "results within 24 h); rerun to resume polling.",
)
POLL_INTERVAL = typer.Option(
    DEFAULT_POLL_INTERVAL_S,
    "--poll-interval",
    callback=_seconds,
    help="Seconds between Batch API status polls.",
)
HEDGE = typer.Option(
    True,
    "--hedge/--no-hedge",
    help="At the tail of the run, send a call once more when it takes over 3x the usual "
    "answer time (and over 1 s), so one stalled request does not hold the run; the "
    "stalled call may still be billed.",
)
