"""The retrying batch client: rate budgets, retries, a SQLite journal, the Batch API."""
