"""Contexts x tasks -> requests.jsonl (OpenAI Batch API input lines), and their cost estimate."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from instructgen.client.image_tokens import image_part_tokens, image_parts, takes_images
from instructgen.client.pricing import cost_usd
from instructgen.contracts import TASKS, ImageContext, custom_id, split_custom_id
from instructgen.errors import InputError
from instructgen.files import atomic_writer, iter_jsonl
from instructgen.generate.images import ImageInput
from instructgen.generate.prompts import (
    DEFAULT_PROMPTS,
    DEFAULT_SEEDS,
    TaskPrompt,
    load_task_prompt,
)
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

    def line(self, context: ImageContext, user_messages: dict, image_part: dict | None) -> str:
        """The request line for `context`; `user_messages` caches its rendered context message."""
        key = self.prompt.context_template.filename
        user = user_messages.get(key)
        if user is None:
            user = user_messages[key] = json.dumps(
                self.prompt.user_message(context, image_part), ensure_ascii=False
            )
        cid = json.dumps(custom_id(context.image_id, self.prompt.task))
        return f'{{"custom_id": {cid}{self._head}{user}{self._tail}'


def _read_contexts(path: Path) -> Iterator[ImageContext]:
    for lineno, obj in iter_jsonl(path):
        yield ImageContext.from_json(obj, where=f"{path}:{lineno}")


def render_requests(
    contexts_path: Path,
    output: Path,
    tasks: tuple[str, ...] = TASKS,
    model: str = DEFAULT_MODEL,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    prompts_dir: Path = DEFAULT_PROMPTS,
    seeds_dir: Path = DEFAULT_SEEDS,
    image: ImageInput | None = None,
) -> RenderSummary:
    """Write one request per (context, task) to `output` atomically, streaming the contexts.

    With `image`, each request's last user message carries the image beside its context; the
    system prompt and seeds stay one shared prefix per task.
    """
    tasks = tuple(dict.fromkeys(tasks))  # a task named twice would repeat custom_ids
    if not tasks:
        raise InputError(f"no tasks to render (choose from {', '.join(TASKS)})")
    if image is not None:
        if takes_images(model) is False:
            raise InputError(
                f"--image {image.mode}: model {model} takes no image input; choose a vision "
                "model (gpt-4o, gpt-4o-mini, gpt-4.1, ...) or render without --image"
            )
        image.check(_read_contexts(contexts_path), str(contexts_path))
    writers = [
        _RequestLineWriter(
            load_task_prompt(t, prompts_dir, seeds_dir, image is not None),
            model,
            max_tokens,
            temperature,
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
            image_part = image.part(context) if image is not None else None
            for writer in writers:
                f.write(writer.line(context, user_messages, image_part))
                summary.per_task[writer.prompt.task] += 1
                summary.requests += 1
    return summary


@dataclass
class TaskEstimate:
    """Expected tokens and dollars of one task's requests (or of all, for the total row).

    `image_tokens` and the costs are None when an image's tokens or the model's price are
    not known.
    """

    task: str
    requests: int = 0
    prompt_tokens: int = 0  # text
    completion_tokens: int = 0
    cached_tokens: int = 0
    images: int = 0
    image_tokens: int | None = 0
    cost_standard: float | None = 0.0
    cost_cached: float | None = 0.0
    cost_batch: float | None = 0.0

    def add(self, prompt: int, cached: int, completion: int, images: list, costs: tuple) -> None:
        """Count one request; `images` holds its images' tokens (None: unknown)."""
        self.requests += 1
        self.prompt_tokens += prompt
        self.cached_tokens += cached
        self.completion_tokens += completion
        self.images += len(images)
        self.image_tokens = _sum_known(self.image_tokens, *images)
        self.cost_standard, self.cost_cached, self.cost_batch = (
            _sum_known(total, cost)
            for total, cost in zip(
                (self.cost_standard, self.cost_cached, self.cost_batch), costs, strict=True
            )
        )


def _sum_known(*values):
    """The sum, or None if any value is None (unknown)."""
    return None if any(v is None for v in values) else sum(values)


@dataclass
class Estimate:
    """The estimate of a requests file: rows per task, the total, and how tokens were counted."""

    model: str
    rows: list[TaskEstimate]
    total: TaskEstimate
    token_method: str
    completion_method: str
    batch_files: int  # input files `run --batch-api` would upload
    image_sizes: str  # where the images' pixel sizes came from


@dataclass(frozen=True, slots=True)
class _SizedLine:
    """What the Batch API split needs of a request line: its endpoint and its bytes."""

    url: str
    length: int


def _lines_with_length(path: Path) -> Iterator[tuple[int, dict, int]]:
    """(line number, object, bytes) for each non-blank line of a JSON Lines file."""
    with open(path, "rb") as raw:
        lengths = (len(line) for line in raw if line.strip())
        for (lineno, obj), length in zip(iter_jsonl(path), lengths, strict=True):
            yield lineno, obj, length


class _ImageCounter:
    """Tokens of each image part: inline ones measured from their JPEG, others by context."""

    def __init__(self, contexts_path: Path | None) -> None:
        self.contexts_path = contexts_path
        self._sizes: dict[int, tuple[int, int]] | None = None

    def _context_size(self, image_id: int | None) -> tuple[int, int] | None:
        if self._sizes is None:  # read only when a request sends an image by URL
            contexts = _read_contexts(self.contexts_path) if self.contexts_path else ()
            self._sizes = {c.image_id: (c.width, c.height) for c in contexts}
        return self._sizes.get(image_id)

    def request(self, messages: list[dict], model: str, cid: str) -> list[int | None]:
        """Tokens of each image of one request (None: unknown size or formula)."""
        counts = []
        for image in image_parts(messages):
            linked = None
            if not str(image.get("url", "")).startswith("data:"):
                parsed = split_custom_id(cid)
                linked = self._context_size(parsed[0] if parsed else None)
            counts.append(image_part_tokens(model, image, linked))
        return counts


@dataclass
class ImageTotals:
    """Images of the requests to send, their prompt tokens and what those cost (None: unknown)."""

    images: int = 0
    tokens: int | None = 0
    cost_usd: float | None = 0.0  # at standard input prices


def image_totals(
    requests_path: Path, contexts_path: Path | None = None, skip: frozenset[str] = frozenset()
) -> ImageTotals:
    """The images of the requests in `requests_path` whose custom_id is not in `skip`."""
    counter = _ImageCounter(contexts_path)
    totals = ImageTotals()
    for _, obj in iter_jsonl(requests_path):
        cid = str(obj.get("custom_id", ""))
        body = obj.get("body")
        if cid in skip or not isinstance(body, dict):
            continue
        model = str(body.get("model", DEFAULT_MODEL))
        counts = counter.request(body.get("messages") or [], model, cid)
        totals.images += len(counts)
        totals.tokens = _sum_known(totals.tokens, *counts)
        if counts:
            tokens = _sum_known(*counts)
            cost = None if tokens is None else cost_usd(model, tokens, 0)
            totals.cost_usd = _sum_known(totals.cost_usd, cost)
    return totals


def estimate_requests(
    requests_path: Path, model: str | None = None, contexts_path: Path | None = None
) -> Estimate:
    """Prompt tokens (counted), completion tokens (expected) and cost of a requests file.

    The expected completion of a request is the mean length of the assistant replies among its
    few-shot examples (models imitate them), capped at its max_tokens; without examples, half
    of max_tokens. The cached cost assumes the provider caches the shared prefix (system and
    seeds) of every request as OpenAI does: from 1,024 tokens, in steps of 128. Costs use each
    request's model unless `model` overrides it.

    Image tokens follow the model's published formula (`client.image_tokens`): an inline image
    is measured from its JPEG, an image sent by URL from its context's width and height in
    `contexts_path` (unknown without it).
    """
    from instructgen.client.batch_api import chunks  # imports openai: only when estimating

    counter = TokenCounter(model or DEFAULT_MODEL)
    rows: dict[str, TaskEstimate] = {}
    total = TaskEstimate("total")
    models: set[str] = set()
    sized: list[_SizedLine] = []
    image_counter = _ImageCounter(contexts_path)
    for lineno, obj, length in _lines_with_length(requests_path):
        body = obj.get("body")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise InputError(
                f"{requests_path}:{lineno}: not a Batch API request line (no body.messages)"
            )
        sized.append(_SizedLine(str(obj.get("url", CHAT_URL)), length))
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
        images = image_counter.request(messages, request_model, cid)
        if images and takes_images(request_model) is False:
            raise InputError(
                f"{requests_path}:{lineno}: the request sends an image, and {request_model} "
                "takes no image input; estimate it as a vision model (--model gpt-4o, ...)"
            )
        with_images = _sum_known(prompt, *images)
        costs = (
            _cost(request_model, with_images, completion),
            _cost(request_model, with_images, completion, cached_tokens=cached),
            _cost(request_model, with_images, completion, batch=True),
        )
        rows.setdefault(task, TaskEstimate(task)).add(prompt, cached, completion, images, costs)
        total.add(prompt, cached, completion, images, costs)
    ordered = [rows[t] for t in (*TASKS, "other") if t in rows]
    return Estimate(
        model=", ".join(sorted(models)) or (model or DEFAULT_MODEL),
        rows=ordered,
        total=total,
        token_method=counter.method,
        completion_method="mean few-shot reply length per request (capped at max_tokens)",
        batch_files=len(chunks(sized)),
        image_sizes="inline images from their JPEG, of images by URL "
        + (f"from {contexts_path}" if contexts_path else "unknown (pass --contexts)"),
    )


def _cost(model: str, prompt: int | None, completion: int, **kwargs) -> float | None:
    return None if prompt is None else cost_usd(model, prompt, completion, **kwargs)
