"""Send a Batch-API-format request file through the chat API: paced, retried, journaled.

Workers (one per request in flight) take requests in file order. Each attempt waits for the
rate budget, is marked in flight in the journal, and goes out through `openai.AsyncOpenAI` with
the SDK's own retries off; tenacity decides what is retried and how long to wait. A request
ends `done` (a 200 and its body, whatever its finish_reason) or `failed` (a non-retryable
error, or the last attempt's error), and that end is one journal commit.

An answer about the account (a refused key, no credit, an unknown model) stops the run: no
request is sent after those in flight, the unsent ones stay pending, and no responses file is
written. At the tail of a run, when nothing is left to hand out, a call that takes much longer
than the usual answer is sent once more and the first answer wins, so one stalled request does
not hold the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import statistics
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from instructgen.client import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_RPM,
    DEFAULT_TIMEOUT_S,
    DEFAULT_TPM,
)
from instructgen.client.image_tokens import known_image_tokens
from instructgen.client.journal import Journal, Outcome
from instructgen.client.limiter import DEFAULT_PAUSE_S, RateBudget, retry_after_s
from instructgen.client.pricing import cost_usd, price_for
from instructgen.errors import InputError, InstructgenError
from instructgen.files import require_file, write_jsonl
from instructgen.tokens import TokenCounter

ASSUMED_COMPLETION_TOKENS = 1024  # charged to the token budget when a request sets no cap
RETRYABLE_STATUS = {408, 409, 429} | set(range(500, 600))
HEDGE_FACTOR = 3.0  # at the tail, a call slower than 3x the usual (90th percentile) answer ...
HEDGE_MIN_S = 1.0  # ... and than a second is sent once more


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How to send: budgets per minute, concurrency, attempts, timeout and backoff in seconds."""

    base_url: str | None = None
    rpm: float = DEFAULT_RPM
    tpm: float = DEFAULT_TPM
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_s: float = DEFAULT_TIMEOUT_S
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    resend_changed: bool = False
    hedge: bool = True  # send a stalled call once more at the tail of the run


@dataclass(frozen=True, slots=True)
class RequestLine:
    """One line of the requests file, indexed: the body itself is read again when sent."""

    custom_id: str
    line: int
    offset: int  # byte offset of the line in the file
    length: int  # bytes
    sha256: str
    model: str
    url: str
    prompt_tokens: int  # the text's
    max_tokens: int
    image_tokens: int = 0  # those known without a download (image_tokens.known_image_tokens)

    @property
    def tokens(self) -> int:
        """The request's charge to the token budget: prompt estimate (text and images) plus
        completion cap."""
        return self.prompt_tokens + self.image_tokens + self.max_tokens


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a run would send: counts, tokens, dollars (None when a model has no price)."""

    total: int
    to_send: int
    prompt_tokens: int
    max_completion_tokens: int
    prompt_cost_usd: float | None
    max_cost_usd: float | None
    minutes: float  # at the configured budgets


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run did. `errors` counts failed attempts by kind (a retried one included)."""

    total: int
    done: int
    failed: int
    sent: int  # requests finished by this run
    skipped: int  # already done before this run
    errors: dict[str, int]
    finish_reasons: dict[str, int]
    cost_usd: float  # all done requests of the input, this run and earlier ones
    wall_s: float
    output_lines: int
    hedged: int = 0  # calls sent a second time at the tail of the run


def load_requests(path: Path) -> list[RequestLine]:
    """Index a requests.jsonl (Batch API input format); a bad line raises InputError."""
    require_file(path)
    index: list[RequestLine] = []
    first_line: dict[str, int] = {}
    counters: dict[str, TokenCounter] = {}
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InputError(f"{where}: invalid JSON: {e}") from None
            cid, body = _check_request(obj, where)
            if cid in first_line:
                raise InputError(
                    f"{where}: custom_id {cid!r} already used on line {first_line[cid]}; "
                    "each request needs a unique custom_id"
                )
            first_line[cid] = lineno
            model = body["model"]
            if model not in counters:
                counters[model] = TokenCounter(model)
            cap = body.get("max_tokens") or body.get("max_completion_tokens")
            canon = json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()
            index.append(
                RequestLine(
                    custom_id=cid,
                    line=lineno,
                    offset=start,
                    length=len(raw),
                    sha256=hashlib.sha256(canon).hexdigest(),
                    model=model,
                    url=obj["url"],
                    prompt_tokens=counters[model].count_messages(body.get("messages", [])),
                    max_tokens=cap or ASSUMED_COMPLETION_TOKENS,
                    image_tokens=known_image_tokens(model, body.get("messages", [])),
                )
            )
    return index


def _check_request(obj: object, where: str) -> tuple[str, dict]:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        raise InputError(f"{where}: missing custom_id (a non-empty string)")
    if obj.get("method", "POST") != "POST":
        raise InputError(f"{where}: {cid}: method must be POST, got {obj.get('method')!r}")
    url = obj.get("url")
    if not isinstance(url, str) or not url.startswith("/v1/"):
        raise InputError(f"{where}: {cid}: url must be an API path such as /v1/chat/completions")
    body = obj.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise InputError(f"{where}: {cid}: body must be an object with a model name")
    if url == "/v1/chat/completions" or "messages" in body:
        _check_messages(body.get("messages"), f"{where}: {cid}")
    for name in ("max_tokens", "max_completion_tokens"):
        cap = body.get(name)
        if cap is not None and (type(cap) is not int or cap < 1):
            raise InputError(f"{where}: {cid}: body.{name} must be a positive integer, not {cap!r}")
    return cid, body


def _check_messages(messages: object, where: str) -> None:
    """Chat messages: a list of objects, each with a string role and a text or parts content."""
    if not isinstance(messages, list):
        raise InputError(f"{where}: body.messages must be a list of chat messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise InputError(
                f"{where}: body.messages[{i}] must be an object with a role and a content, "
                f"not {json.dumps(m, ensure_ascii=False)[:80]}"
            )
        content = m["content"]
        parts_ok = isinstance(content, list) and all(
            isinstance(p, dict) and isinstance(p.get("text", ""), str) for p in content
        )
        if not (content is None or isinstance(content, str) or parts_ok):
            raise InputError(
                f"{where}: body.messages[{i}].content must be a string or a list of parts "
                '(objects such as {"type": "text", "text": "..."})'
            )


def estimate(index: list[RequestLine], done: set[str], rpm: float, tpm: float) -> Estimate:
    """What sending the not-done requests would cost, at most, and take at these budgets."""
    todo = [r for r in index if r.custom_id not in done]
    prompt = sum(r.prompt_tokens for r in todo)
    completion = sum(r.max_tokens for r in todo)
    prompt_cost = full_cost = 0.0
    for r in todo:
        p, f = (
            cost_usd(r.model, r.prompt_tokens, 0),
            cost_usd(r.model, r.prompt_tokens, r.max_tokens),
        )
        if p is None or f is None:
            prompt_cost = full_cost = None
            break
        prompt_cost, full_cost = prompt_cost + p, full_cost + f
    minutes = max(len(todo) / rpm, (prompt + completion) / tpm) if todo else 0.0
    return Estimate(len(index), len(todo), prompt, completion, prompt_cost, full_cost, minutes)


def api_key_from_env() -> str:
    """The key from OPENAI_API_KEY; the only place it is read."""
    key = os.environ.get("OPENAI_API_KEY", "")
    if not key:
        raise InstructgenError(
            "OPENAI_API_KEY is not set: export it (for a local server that needs no key, "
            "any value will do)"
        )
    return key


def redact(text: str, key: str) -> str:
    """`text` with the API key (and any prefix of it longer than 8 characters) removed."""
    if key and len(key) >= 8:
        text = text.replace(key, "[redacted]").replace(key[:12], "[redacted]")
    return text


def outcome_from_body(
    data: dict, model: str, status: int, request_id: str | None, line_id: str | None, batch: bool
) -> Outcome:
    """A `done` Outcome from a 200 body: finish reason, usage and dollar cost."""
    usage = data.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    choices = data.get("choices") or [{}]
    priced = data.get("model") if price_for(str(data.get("model", ""))) else model
    return Outcome(
        status="done",
        http_status=status,
        body=data,
        finish_reason=choices[0].get("finish_reason"),
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        cost_usd=cost_usd(priced, prompt, completion, cached, batch=batch),
        request_id=request_id,
        line_id=line_id or request_id or data.get("id"),
    )


def response_line(row) -> dict:
    """One responses.jsonl line (Batch API output format) from a journal row."""
    if row["status"] == "done":
        return {
            "id": row["response_line_id"],
            "custom_id": row["custom_id"],
            "response": {
                "status_code": row["http_status"],
                "request_id": row["request_id"],
                "body": json.loads(row["response_body"]),
            },
            "error": None,
        }
    error = {"code": row["error_code"], "message": row["error_message"]}
    return {
        "id": row["response_line_id"],
        "custom_id": row["custom_id"],
        "response": None,
        "error": error,
    }


def export_responses(journal: Journal, output_path: Path) -> int:
    """Write responses.jsonl atomically from the journal, in input order; return the lines.

    Refuses while any request of the input has no result yet: a file missing lines would
    look like a finished run to `make` and to the next stage.
    """
    unfinished = journal.unfinished()
    if unfinished:
        raise InstructgenError(
            f"{output_path} not written: {len(unfinished):,} of {journal.counts().total:,} "
            f"requests have no result yet (first: {', '.join(unfinished[:3])}); "
            "rerun the same command to send them"
        )
    return write_jsonl(output_path, (response_line(r) for r in journal.finished_rows()))


class Retryable(Exception):
    """An attempt that failed in a way worth another try."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None, status=None):
        super().__init__(message)
        self.kind, self.message, self.retry_after, self.status = kind, message, retry_after, status


class Final(Exception):
    """An attempt that failed in a way another try would not fix (a 400 about this request)."""

    def __init__(self, kind: str, message: str, status: int | None = None):
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status


class AccountError(InstructgenError):
    """An answer that no retry and no other request can fix: the key, the credit, the model.
    The run stops; `pending` says what waits for the rerun."""

    def __init__(self, kind: str, message: str, fix: str):
        super().__init__()  # the text is __str__'s, after the key is scrubbed from `message`
        self.kind, self.message, self.fix, self.pending = kind, message, fix, ""

    def __str__(self) -> str:
        fix = f"{self.fix}, then rerun the same command"
        return f"run stopped: {self.message}. Fix: {fix}{self.pending}"


class Stopped(Exception):
    """An attempt not sent because an account error stopped the run."""


def account_error(
    status: int, code: str, message: str, model: str, url: str
) -> AccountError | None:
    """The AccountError an error answer stands for; None when it belongs to one request."""
    said = f"HTTP {status} {code}: {message}" if code else f"HTTP {status}: {message}"
    if status == 401:
        return AccountError(
            "invalid_key",
            f"the API key was refused ({said})",
            "set OPENAI_API_KEY to a valid key for this endpoint",
        )
    if status == 403:
        return AccountError(
            "forbidden",
            f"the key may not use this endpoint or model ({said})",
            "check the key's project, permissions and region at the provider",
        )
    if status == 429 and code == "insufficient_quota":
        return AccountError(
            "insufficient_quota",
            f"the account is out of credit ({said})",
            "add credit or raise the usage limit in the provider's billing settings",
        )
    if status == 404 and "model" in code:
        return AccountError(
            "model_not_found",
            f"model {model!r} does not exist or this key cannot use it ({said})",
            "name an available model in the requests (render --model), or use a key that has it",
        )
    if status == 404:
        return AccountError(
            "not_found",
            f"{url} was not found at the server ({said})",
            "check --base-url (it usually ends in /v1)",
        )
    if status == 400 and ("model" in code or "key" in code):
        return AccountError(
            code,
            f"the server refused the model or the key ({said})",
            "fix the model in the requests or OPENAI_API_KEY",
        )
    return None


@dataclass
class RunStats:
    """Live counters of a run, for the progress line."""

    total: int
    skipped: int
    done: int = 0
    failed: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    hedged: int = 0
    errors: Counter = field(default_factory=Counter)
    finish_reasons: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def record(self, outcome: Outcome) -> None:
        if outcome.status == "done":
            self.done += 1
            self.tokens += (outcome.prompt_tokens or 0) + (outcome.completion_tokens or 0)
            self.cost_usd += outcome.cost_usd or 0.0
            self.finish_reasons[outcome.finish_reason or "none"] += 1
        else:
            self.failed += 1

    def line(self) -> str:
        minutes = max(time.monotonic() - self.started, 1e-6) / 60
        errors = " ".join(f"{k}:{v}" for k, v in self.errors.most_common()) or "none"
        return (
            f"{(self.done + self.failed) / minutes:,.0f} req/min  {self.tokens / minutes:,.0f} "
            f"tok/min  ${self.cost_usd:,.4f}  errors {errors}"
        )


class Runner:
    """Sends the requests of one run; `await runner.run(todo)`."""

    def __init__(self, requests_path: Path, journal: Journal, config: RunConfig, key: str):
        self.requests_path = requests_path
        self.journal = journal
        self.config = config
        self.key = key
        self.budget = RateBudget(config.rpm, config.tpm)
        self.stats = RunStats(0, 0)
        self.stopped: AccountError | None = None
        self.latencies: deque[float] = deque(maxlen=200)  # seconds of recent answered calls

    async def run(self, todo: list[RequestLine], on_progress=None) -> None:
        """Send every request of `todo`, with at most `max_in_flight` at once; raise
        AccountError when an answer about the account stopped the run."""
        self.client = openai.AsyncOpenAI(
            api_key=self.key,
            base_url=self.config.base_url,
            max_retries=0,  # our policy decides
            timeout=self.config.timeout_s,
        )
        self._queue = deque(todo)
        self._tail = asyncio.get_running_loop().create_future()  # done once all are handed out
        self._stop = asyncio.Event()  # set with `stopped`: wakes requests waiting to retry
        self._file = open(self.requests_path, "rb")  # noqa: SIM115 (closed below)
        try:
            workers = min(self.config.max_in_flight, len(todo))
            await asyncio.gather(*(self._worker(on_progress) for _ in range(workers)))
        finally:
            self._file.close()
            await self.client.close()
        if self.stopped:
            raise self.stopped

    async def _worker(self, on_progress) -> None:
        while self._queue and not self.stopped:
            req = self._queue.popleft()
            if not self._queue and not self._tail.done():
                self._tail.set_result(None)
            try:
                outcome = await self._send(req)
            except (AccountError, Stopped):
                self.journal.release(req.custom_id)  # pending again: the rerun sends it
                continue
            self.journal.finish(req.custom_id, outcome)
            self.stats.record(outcome)
            if on_progress:
                on_progress(self.stats)

    def _body(self, req: RequestLine) -> dict:
        self._file.seek(req.offset)
        return json.loads(self._file.read(req.length))["body"]

    async def _send(self, req: RequestLine) -> Outcome:
        body = self._body(req)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(Retryable),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    outcome = await self._attempt(req, body)
        except (Retryable, Final) as e:
            return Outcome(
                status="failed",
                http_status=e.status,
                error_code=e.kind,
                error_message=f"{e.message} (after {self._attempts(req)} attempt(s))",
            )
        return outcome

    def _attempts(self, req: RequestLine) -> int:
        row = self.journal.db.execute(
            "SELECT attempts FROM requests WHERE custom_id = ?", (req.custom_id,)
        ).fetchone()
        return row[0] if row else 0

    async def _sleep(self, seconds: float) -> None:
        """Wait before a retry; cut short when the run stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _wait(self, state) -> float:
        """Retry-After when the server gave one; else a short random wait before the first
        retry (most faults are single: a retry at the end of the run must not hold it), then
        exponential backoff with jitter."""
        error = state.outcome.exception()
        if isinstance(error, Retryable) and error.retry_after is not None:
            return error.retry_after
        if state.attempt_number == 1:
            return random.uniform(0.1, 0.5) * self.config.backoff_initial_s
        backoff = wait_exponential_jitter(
            multiplier=self.config.backoff_initial_s,
            max=self.config.backoff_max_s,
            jitter=self.config.backoff_initial_s,
        )
        return backoff(state)

    async def _attempt(self, req: RequestLine, body: dict) -> Outcome:
        await self.budget.acquire(req.tokens)
        if self.stopped:
            raise Stopped
        self.journal.start_attempt(req.custom_id)
        try:
            try:
                response = await self._post(req, body)
            except openai.APIStatusError as e:
                raise self._status_error(e, req) from None
            except openai.APITimeoutError:
                raise Retryable(
                    "timeout", f"no answer within {self.config.timeout_s:g} s"
                ) from None
            except openai.APIConnectionError as e:
                cause = type(e.__cause__).__name__ if e.__cause__ else "connection error"
                raise Retryable("connection", f"connection failed ({cause})") from None
            self.budget.observe(response.headers)
            try:
                data = json.loads(response.content)
            except (json.JSONDecodeError, UnicodeDecodeError):
                data = None
            if not isinstance(data, dict):
                size = len(response.content)
                raise Retryable("invalid_body", f"status 200 with {size} bytes of invalid JSON")
        except (Retryable, Final, AccountError) as e:
            e.message = redact(e.message, self.key)
            self.stats.errors[e.kind] += 1
            self.journal.note_error(req.custom_id, f"{e.kind}: {e.message}")
            raise
        request_id = response.headers.get("x-request-id")
        return outcome_from_body(data, req.model, response.status_code, request_id, None, False)

    async def _post(self, req: RequestLine, body: dict) -> httpx.Response:
        """One call. At the tail of the run, a call slower than the usual answer is sent once
        more (charged to the budget and counted as an attempt); the first answer wins."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.ensure_future(self._call(req, body))
        calls = [first]
        try:
            if not self.config.hedge:
                return await first
            if not self._tail.done():
                await asyncio.wait({first, self._tail}, return_when=asyncio.FIRST_COMPLETED)
            if first.done() or (after := self._hedge_after()) is None:
                return await first
            await asyncio.wait({first}, timeout=max(0.0, started + after - loop.time()))
            if first.done():
                return first.result()
            await self.budget.acquire(req.tokens)
            if first.done() or self.stopped:
                return await first
            self.journal.start_attempt(req.custom_id)
            self.stats.hedged += 1
            calls.append(asyncio.ensure_future(self._call(req, body)))
            failure: BaseException | None = None
            waiting = set(calls)
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for call in done:
                    failure = failure or call.exception()
                answered = [c for c in done if c.exception() is None]
                if answered:
                    return answered[0].result()
            raise failure
        finally:
            for call in calls:
                if not call.done():
                    call.cancel()

    async def _call(self, req: RequestLine, body: dict) -> httpx.Response:
        started = time.monotonic()
        response = await self.client.post(
            req.url.removeprefix("/v1"), body=body, cast_to=httpx.Response
        )
        self.latencies.append(time.monotonic() - started)
        return response

    def _hedge_after(self) -> float | None:
        """Seconds after which a call at the tail is sent again; None before 10 answers."""
        if len(self.latencies) < 10:
            return None
        p90 = statistics.quantiles(self.latencies, n=10)[-1]
        return max(HEDGE_MIN_S, HEDGE_FACTOR * p90)

    def _status_error(self, e: openai.APIStatusError, req: RequestLine) -> Exception:
        status = e.status_code
        body = e.body if isinstance(e.body, dict) else {}
        detail = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        code = str(detail.get("code") or detail.get("type") or "")
        said = detail.get("message") or e.message
        headers = e.response.headers
        problem = account_error(status, code, said, req.model, req.url)
        if problem:
            if not self.stopped:  # no new request goes out from now on
                self.stopped = problem
                self._stop.set()
                self.budget.close()
            return problem
        message = f"HTTP {status}: {said}"
        kind = f"http_{status}"
        if status != 429:
            self.budget.observe(headers)
        if status not in RETRYABLE_STATUS:
            return Final(kind, message, status)
        wait = retry_after_s(headers)
        if status == 429 and self.budget.refused(headers, req.tokens, wait or DEFAULT_PAUSE_S):
            wait = wait if wait is not None else DEFAULT_PAUSE_S  # every sender paused as long
        return Retryable(kind, message, wait, status)


def _progress(console: Console) -> Progress | None:
    """A rich progress bar on a terminal; None elsewhere (a plain summary comes at the end)."""
    if not console.is_terminal:
        return None
    return Progress(
        TextColumn("[bold]run"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        refresh_per_second=2,
    )


def run_requests(
    requests_path: Path,
    output_path: Path,
    journal_path: Path,
    config: RunConfig,
    console: Console,
    key: str,
) -> RunSummary:
    """Send what the journal does not have done, then write responses.jsonl from the journal."""
    started = time.monotonic()
    index = load_requests(requests_path)
    with Journal(journal_path) as journal:
        if journal.open_batches():
            raise InstructgenError(
                f"{journal_path}: a Batch API batch for these requests is still open; "
                "rerun with --batch-api to collect it (sending directly would pay twice)"
            )
        journal.sync(((r.custom_id, r.line, r.sha256) for r in index), config.resend_changed)
        todo_ids = set(journal.todo())
        todo = [r for r in index if r.custom_id in todo_ids]
        runner = Runner(requests_path, journal, config, key)
        runner.stats = RunStats(total=len(index), skipped=len(index) - len(todo))
        try:
            _send_all(runner, todo, len(index), console)
        except AccountError as e:
            counts = journal.counts()
            e.pending = (
                f": {counts.pending:,} of {counts.total:,} requests wait in {journal_path} "
                f"({counts.done:,} already done; {output_path.name} not written)"
            )
            raise
        lines = export_responses(journal, output_path)
        counts = journal.counts()
    stats = runner.stats
    return RunSummary(
        total=counts.total,
        done=counts.done,
        failed=counts.failed,
        sent=stats.done + stats.failed,
        skipped=stats.skipped,
        errors=dict(stats.errors),
        finish_reasons=dict(stats.finish_reasons),
        cost_usd=counts.cost_usd,
        wall_s=time.monotonic() - started,
        output_lines=lines,
        hedged=stats.hedged,
    )


def _send_all(runner: Runner, todo: list[RequestLine], total: int, console: Console) -> None:
    """Run the sender, with a live progress bar on a terminal."""
    progress = _progress(console)
    if progress is None:
        asyncio.run(runner.run(todo))
        return
    with progress:
        task = progress.add_task("run", total=total, info="")
        progress.update(task, completed=runner.stats.skipped)

        def show(stats: RunStats) -> None:
            done = stats.skipped + stats.done + stats.failed
            progress.update(task, completed=done, info=stats.line())

        asyncio.run(runner.run(todo, show))


def dry_run(requests_path: Path, journal_path: Path, config: RunConfig) -> Estimate:
    """The estimate of a run; reads the journal if there is one, sends and writes nothing."""
    index = load_requests(requests_path)
    done: set[str] = set()
    if Path(journal_path).is_file():
        with Journal(journal_path) as journal:
            rows = journal.db.execute(
                "SELECT custom_id, request_sha256 FROM requests WHERE status = 'done'"
            )
            done_sha = dict(rows.fetchall())
        done = {r.custom_id for r in index if done_sha.get(r.custom_id) == r.sha256}
    return estimate(index, done, config.rpm, config.tpm)
