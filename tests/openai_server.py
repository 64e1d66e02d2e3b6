"""A local OpenAI-compatible HTTP server for the client's tests and benchmark.

Real sockets on 127.0.0.1, a small HTTP/1.1 implementation on asyncio streams, so that faults
can be exact: a socket closed mid-body, a body cut short, a reply that never comes in time.

- `POST /v1/chat/completions` answers deterministic, clearly synthetic text (never a model) in
  the conversation format (`Question:` / `Answer:` lines); a vision request (image parts as
  `data:` URLs) gets a synthetic answer naming each image's type, size and hash; `replies`
  scripts given texts for requests that contain given words.
- Per-minute budgets (requests, tokens) are enforced in one of three ways (`window`): `bucket`,
  token buckets holding one second of budget, refilled continuously; `second`, fixed one-second
  windows of limit/60 each, as providers quantize a per-minute limit; `minute`, buckets holding
  a whole minute, starting empty as an hour into a long job. Over budget answers 429 with
  `Retry-After`, `retry-after-ms` and `x-ratelimit-*` headers; every answer carries the
  `x-ratelimit-*` headers, unless `rate_headers` is off (many OpenAI-compatible servers send
  none), which drops them and the Retry-After of budget 429s.
- Faults are deterministic. A user message containing `[[faults: 500, drop]]` gets a 500 on its
  first admitted attempt, a dropped connection on its second, and a normal answer after.
  `fault_mix` adds seeded faults keyed on (request, attempt) for the benchmark.
- `account_error` answers every chat request after the first `account_error_after` with an
  error no retry fixes: a refused key, no credit left, an unknown model.
- `/v1/files` and `/v1/batches` run a Batch API job that completes after `batch_polls` polls;
  the first `batch_failures` batches fail instead, as one over the enqueued token limit does.
- `GET /_stats` reports what was answered, and the image parts of each request;
  in-process users read `server.stats()`.

Run standalone: `python tests/openai_server.py --port 8765 --rpm 6000 --latency 0.2`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

CHAT_PATH = "/v1/chat/completions"
FAULT_MARK = re.compile(r"\[\[faults:([^\]]*)\]\]")
FAULT_KINDS = (
    "429",  # a stray rate limit, with Retry-After, its headers showing budget left
    "500",
    "502",
    "503",
    "slow",  # no answer before `slow_s`, to exceed the client's timeout
    "drop",  # headers and half the body, then the socket is closed
    "truncated",  # a complete 200 reply whose JSON body is cut short
    "400",
    "401",
    "length",  # 200, finish_reason "length"
    "content_filter",  # 200, finish_reason "content_filter", no content
    "empty",  # 200, empty content
    "spent",  # a rate limit with Retry-After, its headers showing the budget spent elsewhere
)
ACCOUNT_ERRORS = {  # name: (status, code, message), as OpenAI words them
    "invalid_api_key": (401, "invalid_api_key", "Incorrect API key provided."),
    "forbidden": (403, "unsupported_country_region_territory", "Country not supported."),
    "insufficient_quota": (
        429,
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "model_not_found": (404, "model_not_found", "The model does not exist or you lack access."),
    "invalid_model": (400, "invalid_model", "Invalid model name."),
}
WINDOWS = ("bucket", "second", "minute")


@dataclass
class ServerConfig:
    """Budgets in per-minute units; times in seconds."""

    rpm: int | None = None
    tpm: int | None = None
    latency_s: float = 0.0  # added before every chat answer
    slow_s: float = 5.0  # how long a `slow` fault stalls before answering
    injected_retry_after_ms: int = 200  # Retry-After of an injected 429
    window: str = "bucket"  # how a per-minute budget is enforced: one of WINDOWS
    rate_headers: bool = True  # x-ratelimit-* on every answer, Retry-After on budget 429s
    fault_mix: dict[str, float] = field(default_factory=dict)  # fault kind: share of attempts
    fault_seed: str = "instructgen"
    batch_polls: int = 2  # batch retrievals before a batch completes
    batch_failures: int = 0  # the first this many batches fail validation, answering nothing
    api_key: str | None = None  # when set, any other bearer token gets a 401
    account_error: str | None = None  # a key of ACCOUNT_ERRORS, for every chat request ...
    account_error_after: int = 0  # ... after this many admitted ones
    replies: dict[str, str] = field(default_factory=dict)  # scripted: see `reply_text`


class _Bucket:
    """A per-minute budget holding `window_s` of it, refilled continuously."""

    def __init__(self, per_minute: int, window_s: float = 1.0, start_full: bool = True) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate * window_s, 1.0)
        self.level = self.capacity if start_full else 0.0
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 when it is)."""
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)

    def take(self, amount: float) -> None:
        self.level -= amount

    def headers(self, kind: str) -> dict[str, str]:
        reset = (self.capacity - self.level) / self.rate
        return {
            f"x-ratelimit-limit-{kind}": str(self.limit),
            f"x-ratelimit-remaining-{kind}": str(max(0, int(self.level))),
            f"x-ratelimit-reset-{kind}": f"{reset:.3f}s",
        }


class _SecondWindows:
    """A per-minute budget quantized to fixed one-second windows of limit/60 each."""

    def __init__(self, per_minute: int) -> None:
        self.limit = per_minute
        self.allowance = max(per_minute / 60.0, 1.0)
        self.origin = time.monotonic()
        self.window = 0
        self.used = 0.0
        self.now = self.origin

    def refill(self, now: float) -> None:
        self.now = now
        window = int(now - self.origin)
        if window != self.window:
            self.window, self.used = window, 0.0

    def wait_for(self, amount: float) -> float:
        """0 when `amount` fits this window; else the seconds to the next one."""
        if self.used + min(amount, self.allowance) <= self.allowance:
            return 0.0
        return self.origin + self.window + 1 - self.now

    def take(self, amount: float) -> None:
        self.used += amount

    def headers(self, kind: str) -> dict[str, str]:
        reset = self.origin + self.window + 1 - self.now
        return {
            f"x-ratelimit-limit-{kind}": str(self.limit),
            f"x-ratelimit-remaining-{kind}": str(max(0, int(self.allowance - self.used))),
            f"x-ratelimit-reset-{kind}": f"{reset:.3f}s",
        }


def _budget(per_minute: int | None, window: str) -> _Bucket | _SecondWindows | None:
    if not per_minute:
        return None
    if window == "second":
        return _SecondWindows(per_minute)
    if window == "minute":
        return _Bucket(per_minute, window_s=60.0, start_full=False)
    if window == "bucket":
        return _Bucket(per_minute)
    raise ValueError(f"window must be one of {', '.join(WINDOWS)}, not {window!r}")


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    drop: bool = False  # close the socket half-way through the body


def _json_reply(status: int, obj: object, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(status, json.dumps(obj).encode(), headers or {})


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> _Reply:
    body = {"error": {"message": message, "type": "test_server_error", "code": code}}
    return _json_reply(status, body, headers)


def request_key(body: dict) -> str:
    """The identity of a chat request at the server: a hash of its model and messages."""
    canon = json.dumps([body.get("model"), body.get("messages")], sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def token_estimate(body: dict) -> int:
    """The server's token charge: characters/4 of the messages plus max_tokens."""
    chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
    return chars // 4 + int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)


def count_image_parts(body: dict) -> int:
    """The `image_url` content parts of a chat request, over all its messages."""
    return sum(
        1
        for m in body.get("messages", [])
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )


def synthetic_text(key: str) -> str:
    """Deterministic, clearly synthetic text in the conversation format."""
    return (
        f"Question: What does synthetic request {key[:8]} show?\n"
        f"Answer: This is synthetic text from the instructgen test server, not a model "
        f"(request {key[:8]}).\n"
        f"Question: Is this answer from a language model?\n"
        f"Answer: No. The test server wrote it so that tests can check the pipeline."
    )


def image_parts(body: dict) -> list[str]:
    """The `data:` URLs of the image parts of a chat request's messages."""
    return [
        part["image_url"]["url"]
        for m in body.get("messages", [])
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if part.get("type") == "image_url" and "url" in (part.get("image_url") or {})
    ]


def describe_image(url: str) -> str:
    """What the server saw of one image: its media type, size in bytes and a hash prefix."""
    head, _, data = url.partition(",")
    raw = base64.b64decode(data) if head.endswith(";base64") else data.encode()
    mime = head.removeprefix("data:").split(";")[0] or "unknown type"
    return f"{mime}, {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()[:12]}"


def reply_text(body: dict, key: str, replies: dict[str, str] | None = None) -> str:
    """The reply: the scripted one whose key text the request's messages contain (first
    match), else a synthetic description of the images sent, else the synthetic dialogue."""
    messages = json.dumps(body.get("messages", []), ensure_ascii=False)
    for needle, reply in (replies or {}).items():
        if json.dumps(needle, ensure_ascii=False)[1:-1] in messages:
            return reply
    images = image_parts(body)
    if images:
        seen = "; ".join(describe_image(url) for url in images)
        return f"Synthetic answer from the instructgen test server, not a model (images: {seen})."
    return synthetic_text(key)


def completion(body: dict, key: str, fault: str | None, replies: dict | None = None) -> dict:
    """A chat.completion object for `body`, shaped by a 200-status fault if any."""
    text = reply_text(body, key, replies)
    finish = "stop"
    if fault == "length":
        text, finish = text[: len(text) // 2], "length"
    elif fault == "content_filter":
        text, finish = None, "content_filter"
    elif fault == "empty":
        text = ""
    prompt = token_estimate(body) - int(body.get("max_tokens") or 0)
    done = len(text or "") // 4
    return {
        "id": f"chatcmpl-test-{key}",
        "object": "chat.completion",
        "created": 1700000000,
        "model": body.get("model", "unknown"),
        "system_fingerprint": "instructgen-test-server",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": done,
            "total_tokens": prompt + done,
            "prompt_tokens_details": {"cached_tokens": prompt // 2},
        },
    }


class OpenAITestServer:
    """The server state and routes. `start_in_thread()` serves it for in-process tests."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.requests = _budget(self.config.rpm, self.config.window)
        self.tokens = _budget(self.config.tpm, self.config.window)
        self.attempts: Counter[str] = Counter()  # admitted chat requests per key
        self.image_parts: dict[str, int] = {}  # image_url parts per chat request key
        self.answered: Counter[str] = Counter()  # 200 answers per key (what a user pays for)
        self.statuses: Counter[str] = Counter()  # replies by status or fault kind
        self.admitted_per_second: Counter[int] = Counter()
        self.last_auth = ""
        self.admitted_at: list[float] = []  # monotonic times of admitted chat requests
        self.files: dict[str, tuple[str, bytes]] = {}
        self.batches: dict[str, dict] = {}
        self.started = time.monotonic()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # --- serving ---

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start_in_thread(self) -> OpenAITestServer:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop a server started by `start_in_thread`, closing its open connections."""
        if self._loop and self._server:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.readexactly(int(headers.get("content-length", 0)))
                reply = await self.route(method, target.split("?")[0], headers, body)
                if not await _send(writer, reply):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    # --- routes ---

    async def route(self, method: str, path: str, headers: dict, body: bytes) -> _Reply:
        auth = headers.get("authorization", "")
        self.last_auth = auth
        if path == "/_stats":
            return _json_reply(200, self.stats())
        if self.config.api_key and auth != f"Bearer {self.config.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        if method == "POST" and path == CHAT_PATH:
            return await self.chat(json.loads(body))
        if method == "POST" and path == "/v1/files":
            return self.upload(headers.get("content-type", ""), body)
        if method == "GET" and path.startswith("/v1/files/"):
            return self.file(path.removeprefix("/v1/files/"))
        if method == "POST" and path == "/v1/batches":
            return self.create_batch(json.loads(body))
        if method == "GET" and path == "/v1/batches":
            data = list(reversed(self.batches.values()))
            return _json_reply(200, {"object": "list", "data": data, "has_more": False})
        if method == "GET" and path.startswith("/v1/batches/"):
            return self.retrieve_batch(path.removeprefix("/v1/batches/"))
        return _error(404, f"no route {method} {path}", "not_found")

    async def chat(self, body: dict) -> _Reply:
        now = time.monotonic()
        cost = token_estimate(body)
        wait = 0.0
        for bucket, amount in ((self.requests, 1), (self.tokens, cost)):
            if bucket:
                bucket.refill(now)
                wait = max(wait, bucket.wait_for(amount))
        if wait > 0:
            self.statuses["429_budget"] += 1
            headers = self._limit_headers() | _retry_after(wait) if self.config.rate_headers else {}
            return _error(429, "Rate limit reached (test server budget).", "rate_limit", headers)
        for bucket, amount in ((self.requests, 1), (self.tokens, cost)):
            if bucket:
                bucket.take(amount)
        limits = self._limit_headers()
        key = request_key(body)
        self.attempts[key] += 1
        self.image_parts[key] = count_image_parts(body)
        if self.config.account_error and sum(self.attempts.values()) > (
            self.config.account_error_after
        ):
            self.statuses[self.config.account_error] += 1
            status, code, message = ACCOUNT_ERRORS[self.config.account_error]
            return _error(status, message, code, limits)
        self.admitted_per_second[int(now - self.started)] += 1
        self.admitted_at.append(now)
        fault = self.fault_for(body, key, self.attempts[key])
        self.statuses[fault or "200"] += 1
        if self.config.latency_s:
            await asyncio.sleep(self.config.latency_s)
        if fault == "slow":
            await asyncio.sleep(self.config.slow_s)
        if fault == "429":
            ra = _retry_after(self.config.injected_retry_after_ms / 1000)
            ra = ra if self.config.rate_headers else {}
            return _error(429, "Rate limit reached (injected).", "rate_limit", limits | ra)
        if fault == "spent":
            spent = {k: "0" for k in limits if k.startswith("x-ratelimit-remaining")}
            ra = _retry_after(self.config.injected_retry_after_ms / 1000)
            return _error(429, "Rate limit reached (elsewhere).", "rate_limit", limits | spent | ra)
        if fault in ("500", "502", "503"):
            return _error(int(fault), f"Injected {fault}.", "server_error", limits)
        if fault == "400":
            return _error(400, "Injected bad request.", "invalid_request", limits)
        if fault == "401":  # echoes the credential, as careless servers do, to test redaction
            message = f"Injected authentication error for {self.last_auth}."
            return _error(401, message, "invalid_api_key", limits)
        data = json.dumps(completion(body, key, fault, self.config.replies)).encode()
        headers = limits | {"x-request-id": f"req_test_{key}_{self.attempts[key]}"}
        if fault == "truncated":
            return _Reply(200, data[: len(data) // 2], headers)
        if fault != "drop":
            self.answered[key] += 1
        return _Reply(200, data, headers, drop=fault == "drop")

    def fault_for(self, body: dict, key: str, attempt: int) -> str | None:
        """The fault for this (request, attempt): the request's schedule, else a seeded draw."""
        for message in body.get("messages", []):
            m = FAULT_MARK.search(str(message.get("content") or ""))
            if m:
                schedule = [f.strip() for f in m.group(1).split(",") if f.strip()]
                return schedule[attempt - 1] if attempt <= len(schedule) else None
        if self.config.fault_mix:
            seed = f"{self.config.fault_seed}:{key}:{attempt}".encode()
            draw = int.from_bytes(hashlib.sha256(seed).digest()[:4]) / 2**32
            for kind, share in self.config.fault_mix.items():
                if draw < share:
                    return kind
                draw -= share
        return None

    def _limit_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if not self.config.rate_headers:
            return headers
        if self.requests:
            headers |= self.requests.headers("requests")
        if self.tokens:
            headers |= self.tokens.headers("tokens")
        return headers

    def upload(self, content_type: str, body: bytes) -> _Reply:
        boundary = content_type.split("boundary=")[-1].strip('"').encode()
        name, data = "upload.jsonl", b""
        for part in body.split(b"--" + boundary):
            head, _, content = part.partition(b"\r\n\r\n")
            if b'name="file"' in head:
                data = content.removesuffix(b"\r\n")
                m = re.search(rb'filename="([^"]*)"', head)
                name = m.group(1).decode() if m else name
        file_id = f"file-test{len(self.files) + 1}"
        self.files[file_id] = (name, data)
        return _json_reply(200, self._file_object(file_id))

    def _file_object(self, file_id: str) -> dict:
        name, data = self.files[file_id]
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": 1700000000,
            "filename": name,
            "purpose": "batch",
            "status": "processed",
        }

    def file(self, rest: str) -> _Reply:
        file_id, _, what = rest.partition("/")
        if file_id not in self.files:
            return _error(404, f"No such file: {file_id}", "not_found")
        if what == "content":
            return _Reply(200, self.files[file_id][1], content_type="application/octet-stream")
        return _json_reply(200, self._file_object(file_id))

    def create_batch(self, req: dict) -> _Reply:
        if req.get("input_file_id") not in self.files:
            return _error(400, f"No such file: {req.get('input_file_id')}", "invalid_request")
        batch_id = f"batch_test{len(self.batches) + 1}"
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": req.get("endpoint"),
            "errors": None,
            "input_file_id": req["input_file_id"],
            "completion_window": req.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": 1700000000,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": req.get("metadata"),
            "_polls": 0,
        }
        return _json_reply(200, _public(self.batches[batch_id]))

    def retrieve_batch(self, batch_id: str) -> _Reply:
        batch = self.batches.get(batch_id)
        if batch is None:
            return _error(404, f"No such batch: {batch_id}", "not_found")
        batch["_polls"] += 1
        if batch["status"] == "validating" and int(batch_id.removeprefix("batch_test")) <= (
            self.config.batch_failures
        ):
            error = {"code": "token_limit_exceeded", "message": "Enqueued token limit reached."}
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [error | {"line": None, "param": None}]}
        elif batch["status"] == "validating":
            lines = self.files[batch["input_file_id"]][1].decode().splitlines()
            batch["status"] = "in_progress"
            batch["request_counts"]["total"] = sum(1 for line in lines if line.strip())
        elif batch["status"] == "in_progress" and batch["_polls"] >= self.config.batch_polls:
            self._complete(batch)
        return _json_reply(200, _public(batch))

    def _complete(self, batch: dict) -> None:
        out, err = [], []
        for line in self.files[batch["input_file_id"]][1].decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            body = item["body"]
            key = request_key(body)
            self.attempts[key] += 1
            self.image_parts[key] = count_image_parts(body)
            fault = self.fault_for(body, key, 1)
            row = {"id": f"batch_req_{key}", "custom_id": item["custom_id"], "error": None}
            if fault in ("400", "401"):
                error = {"message": f"Injected {fault}.", "type": "invalid_request_error"}
                response = {"status_code": int(fault), "body": {"error": error}}
                err.append(row | {"response": response | {"request_id": f"req_b_{key}"}})
                continue
            self.answered[key] += 1
            kind = fault if fault in FAULT_KINDS[9:] else None
            body_out = completion(body, key, kind, self.config.replies)
            response = {"status_code": 200, "request_id": f"req_b_{key}", "body": body_out}
            out.append(row | {"response": response})
        for rows, slot in ((out, "output_file_id"), (err, "error_file_id")):
            if rows:
                file_id = f"file-test{len(self.files) + 1}"
                data = "".join(json.dumps(r) + "\n" for r in rows).encode()
                self.files[file_id] = (f"{batch['id']}_{slot}.jsonl", data)
                batch[slot] = file_id
        batch["status"] = "completed"
        batch["request_counts"] |= {"completed": len(out), "failed": len(err)}

    def stats(self) -> dict:
        """What the server answered: per-key counts, replies by kind, admissions per second."""
        return {
            "answered": dict(self.answered),
            "attempts": dict(self.attempts),
            "statuses": dict(self.statuses),
            "admitted_per_second": {str(k): v for k, v in sorted(self.admitted_per_second.items())},
            "duplicates": sum(n - 1 for n in self.answered.values() if n > 1),
            "image_parts": dict(self.image_parts),
        }


def _public(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _retry_after(seconds: float) -> dict[str, str]:
    ms = max(1, int(seconds * 1000 + 0.999))
    return {"retry-after-ms": str(ms), "retry-after": str(max(1, int(seconds + 0.999)))}


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        data += await reader.readexactly(size + 2)
        if size == 0:
            return data[:-2]
        data = data[:-2]


async def _send(writer: asyncio.StreamWriter, reply: _Reply) -> bool:
    """Write `reply`; False when the connection was closed on purpose."""
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
    head = [f"HTTP/1.1 {reply.status} {reason.get(reply.status, 'Status')}"]
    head += [f"content-type: {reply.content_type}", f"content-length: {len(reply.body)}"]
    head += [f"{k}: {v}" for k, v in reply.headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    if reply.drop:
        writer.write(reply.body[: len(reply.body) // 2])
        await writer.drain()
        writer.transport.abort()  # an RST mid-body, as a crashed proxy would
        return False
    writer.write(reply.body)
    await writer.drain()
    return True


def write_chat_requests(
    path, n: int, faults: dict[int, str] | None = None, model: str = "gpt-4o", max_tokens: int = 64
) -> list[str]:
    """Write `n` chat requests in Batch API input format; `faults` maps index to a schedule
    such as "500,drop". Returns the custom_ids in order."""
    faults = faults or {}
    ids = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            cid = f"coco-{i}-conversation"
            text = f"Captions:\n- Synthetic image number {i}."
            if i in faults:
                text += f" [[faults: {faults[i]}]]"
            body = {
                "model": model,
                "messages": [
                    {"role": "system", "content": "Ask and answer questions about the image."},
                    {"role": "user", "content": text},
                ],
                "temperature": 1.0,
                "max_tokens": max_tokens,
            }
            line = {"custom_id": cid, "method": "POST", "url": CHAT_PATH, "body": body}
            f.write(json.dumps(line) + "\n")
            ids.append(cid)
    return ids


def main() -> None:
    p = argparse.ArgumentParser(description="Local OpenAI-compatible test server (synthetic).")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rpm", type=int)
    p.add_argument("--tpm", type=int)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    p.add_argument("--slow", type=float, default=5.0, help="seconds a `slow` fault stalls")
    p.add_argument("--window", choices=WINDOWS, default="bucket", help="how budgets are enforced")
    p.add_argument("--no-rate-headers", action="store_true", help="send no x-ratelimit-* headers")
    p.add_argument("--faults", default="", help="seeded faults, e.g. 500=0.02,drop=0.01")
    p.add_argument("--injected-retry-after-ms", type=int, default=200)
    p.add_argument("--account-error", choices=sorted(ACCOUNT_ERRORS))
    args = p.parse_args()
    config = ServerConfig(
        rpm=args.rpm,
        tpm=args.tpm,
        latency_s=args.latency,
        slow_s=args.slow,
        window=args.window,
        rate_headers=not args.no_rate_headers,
        fault_mix={k: float(v) for k, v in (f.split("=") for f in args.faults.split(",") if f)},
        injected_retry_after_ms=args.injected_retry_after_ms,
        account_error=args.account_error,
    )

    async def serve() -> None:
        server = OpenAITestServer(config)
        await server.start(args.port)
        print(f"listening {server.base_url}", flush=True)  # the parent reads the port here
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
