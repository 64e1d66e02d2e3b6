"""The retrying batch client: budgets, retries, a SQLite journal; read `runner.py` first.

The defaults live here, not in `runner`, so that the CLI can show them in `--help` without
importing the OpenAI SDK for every command.
"""

# Defaults for GPT-4o at OpenAI usage tier 2 (platform.openai.com/docs/guides/rate-limits).
DEFAULT_RPM = 5_000
DEFAULT_TPM = 450_000
# Little's law: 450k TPM / ~2k tokens per request ~ 4 req/s x ~20 s per GPT-4o answer ~ 80.
DEFAULT_MAX_IN_FLIGHT = 100
DEFAULT_TIMEOUT_S = 120.0  # a long GPT-4-class completion can take a minute or more
DEFAULT_MAX_ATTEMPTS = 6  # with waits 0.1-0.5, 2, 4, 8, 16 s: rides out about half a minute
DEFAULT_POLL_INTERVAL_S = 30.0  # Batch API status polls: a batch takes minutes to hours
