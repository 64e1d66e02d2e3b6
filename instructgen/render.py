"""Contexts x tasks -> requests.jsonl (OpenAI Batch API input lines), and their cost estimate."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from instructgen.client.pricing import cost_usd
from instructgen.contracts import TASKS, ImageContext, custom_id, split_custom_id
from instructgen.errors import InputError
from instructgen.files import atomic_writer, iter_jsonl
from instructgen.prompts import DEFAULT_PROMPTS, DEFAULT_SEEDS, TaskPrompt, load_task_prompt
from instructgen.tokens import TokenCounter, message_text

DEFAULT_MODEL = "gpt-4o"
DEFAULT_MAX_TOKENS = 1024  # room for six conversation turns; the longest seed reply is ~450
DEFAULT_TEMPERATURE = 1.0
CHAT_URL = "/v1/chat/completions"
CACHE_MIN, CACHE_STEP = 1024, 128  # OpenAI prompt caching: prefixes from 1,024 tokens, by 128


@dataclass
class RenderSummary:
    """Counts of one `render` run."""

    contexts: int = 0
    requests: int = 0
    per_task: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class _RequestLineWriter:
    """Builds request lines fast: the shared prefix of each task is serialized once."""

    def __init__(self, prompt: TaskPrompt, model: str, max_tokens: int, temperature: float):
        self.prompt = prompt
        prefix = json.dumps(prompt.prefix(), ensure_ascii=False)[:-1]  # drop the closing ]
        self._head = (
            f', "method": "POST", "url": "{CHAT_URL}", '
            f'"body": {{"model": {json.dumps(model)}, "messages": {prefix}, '
        )
        self._tail = (
            f'], "temperature": {json.dumps(temperature)}, "max_tokens": {max_tokens}}}}}\n'
        )

    def line(self, context: ImageContext, user_messages: dict) -> str:
        """The request line for `context`; `user_messages` caches its rendered context message."""
        key = self.prompt.context_template.filename
        user = user_messages.get(key)
        if user is None:
            user = user_messages[key] = json.dumps(
                self.prompt.user_message(context), ensure_ascii=False
            )
        cid = json.dumps(custom_id(context.image_id, self.prompt.task))
        return f'{{"custom_id": {cid}{self._head}{user}{self._tail}'


def render_requests(
    contexts_path: Path,
    output: Path,
    tasks: tuple[str, ...] = TASKS,
    model: str = DEFAULT_MODEL,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    prompts_dir: Path = DEFAULT_PROMPTS,
    seeds_dir: Path = DEFAULT_SEEDS,
) -> RenderSummary:
    """Write one request per (context, task) to `output` atomically, streaming the contexts."""
    tasks = tuple(dict.fromkeys(tasks))  # a task named twice would repeat custom_ids
    if not tasks:
        raise InputError(f"no tasks to render (choose from {', '.join(TASKS)})")
    writers = [
        _RequestLineWriter(
            load_task_prompt(t, prompts_dir, seeds_dir), model, max_tokens, temperature
        )
        for t in tasks
    ]
    summary = RenderSummary()
    seen: dict[int, int] = {}
    with atomic_writer(output) as f:
        for lineno, obj in iter_jsonl(contexts_path):
            context = ImageContext.from_json(obj, where=f"{contexts_path}:{lineno}")
            if context.image_id in seen:
                raise InputError(
                    f"{contexts_path}:{lineno}: image {context.image_id} already on line "
                    f"{seen[context.image_id]} (custom_ids must be unique)"
                )
            seen[context.image_id] = lineno
            summary.contexts += 1
            user_messages: dict = {}  # tasks sharing a context template render it once
            for writer in writers:
                f.write(writer.line(context, user_messages))
                summary.per_task[writer.prompt.task] += 1
                summary.requests += 1
    return summary


@dataclass
class TaskEstimate:
    """Expected tokens and dollars of one task's requests (or of all, for the total row)."""

    task: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_standard: float | None = 0.0
    cost_cached: float | None = 0.0
    cost_batch: float | None = 0.0

    def add(self, prompt: int, cached: int, completion: int, costs: tuple) -> None:
        """Count one request; a cost of None (unpriced model) makes the sum unknown."""
        self.requests += 1
        self.prompt_tokens += prompt
        self.cached_tokens += cached
        self.completion_tokens += completion
        self.cost_standard, self.cost_cached, self.cost_batch = (
            None if total is None or cost is None else total + cost
            for total, cost in zip(
                (self.cost_standard, self.cost_cached, self.cost_batch), costs, strict=True
            )
        )


@dataclass
class Estimate:
    """The estimate of a requests file: rows per task, the total, and how tokens were counted."""

    model: str
    rows: list[TaskEstimate]
    total: TaskEstimate
    token_method: str
    completion_method: str


def estimate_requests(requests_path: Path, model: str | None = None) -> Estimate:
    """Prompt tokens (counted), completion tokens (expected) and cost of a requests file.

    The expected completion of a request is the mean length of the assistant replies among its
    few-shot examples (models imitate them), capped at its max_tokens; without examples, half
    of max_tokens. The cached cost assumes the provider caches the shared prefix (system and
    seeds) of every request as OpenAI does: from 1,024 tokens, in steps of 128. Costs use each
    request's model unless `model` overrides it.
    """
    counter = TokenCounter(model or DEFAULT_MODEL)
    rows: dict[str, TaskEstimate] = {}
    total = TaskEstimate("total")
    models: set[str] = set()
    for lineno, obj in iter_jsonl(requests_path):
        body = obj.get("body")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise InputError(
                f"{requests_path}:{lineno}: not a Batch API request line (no body.messages)"
            )
        cid = str(obj.get("custom_id", ""))
        parsed = split_custom_id(cid)
        task = parsed[1] if parsed else "other"
        messages = body["messages"]
        if not all(isinstance(m, dict) for m in messages):
            raise InputError(f"{requests_path}:{lineno}: body.messages must be a list of objects")
        prompt = counter.count_messages(messages)
        prefix = counter.count_messages(messages[:-1])
        cached = prefix - prefix % CACHE_STEP if prefix >= CACHE_MIN else 0
        replies = [counter.count(message_text(m)) for m in messages if m.get("role") == "assistant"]
        max_tokens = (
            body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
        )
        if not isinstance(max_tokens, int):
            raise InputError(f"{requests_path}:{lineno}: max_tokens must be an integer")
        completion = min(sum(replies) // len(replies), max_tokens) if replies else max_tokens // 2
        request_model = model or str(body.get("model", DEFAULT_MODEL))
        models.add(request_model)
        costs = (
            cost_usd(request_model, prompt, completion),
            cost_usd(request_model, prompt, completion, cached_tokens=cached),
            cost_usd(request_model, prompt, completion, batch=True),
        )
        rows.setdefault(task, TaskEstimate(task)).add(prompt, cached, completion, costs)
        total.add(prompt, cached, completion, costs)
    ordered = [rows[t] for t in (*TASKS, "other") if t in rows]
    return Estimate(
        model=", ".join(sorted(models)) or (model or DEFAULT_MODEL),
        rows=ordered,
        total=total,
        token_method=counter.method,
        completion_method="mean few-shot reply length per request (capped at max_tokens)",
    )
