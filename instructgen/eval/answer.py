"""`answer`: a model's answers to a questions file, resumable, one atomic answers file.

Two backends share the bookkeeping here. A local checkpoint answers in batches (`generate.py`);
an OpenAI-compatible vision endpoint answers through the batch client (journal, rate budgets,
retries, resume), the image sent as a base64 data URL in the chat message.

Answers land in `<answers>.partial` (one JSON line per answer, appended as they come) and the
answers file is written atomically, in question order, when the run ends; a killed run leaves
the partial file, and a rerun skips every question answered in either file.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from instructgen.errors import InputError
from instructgen.eval.records import Answer, Question, answer_id, read_answers, response_text
from instructgen.files import iter_jsonl, write_jsonl

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True, slots=True)
class AnswerStats:
    """What an answer run did: counts, generated tokens and wall time in seconds."""

    total: int
    answered_before: int
    answered_now: int
    failed: int
    completion_tokens: int
    seconds: float

    @property
    def answers_per_s(self) -> float:
        return self.answered_now / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


class AnswerFile:
    """The answers of one run: those already on disk, and new ones appended as they come."""

    def __init__(self, path: Path, questions: list[Question], model_id: str):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.questions = questions
        self.model_id = model_id
        self.answers: dict[int | str, Answer] = {}
        if self.path.is_file():
            self.answers |= read_answers(self.path)
        if self.partial.is_file():
            self.answers |= _read_partial(self.partial)
        others = {a.model_id for a in self.answers.values()} - {model_id}
        if others:
            raise InputError(
                f"{self.path}: holds answers of "
                f"{', '.join(sorted(o or '(no model_id)' for o in others))}, not {model_id}; "
                "write to another -o (or delete the file) to answer with this model"
            )
        known = {q.question_id for q in questions}
        self.answered_before = sum(1 for qid in self.answers if qid in known)

    def todo(self) -> list[Question]:
        """Questions without an answer yet, in file order."""
        return [q for q in self.questions if q.question_id not in self.answers]

    def add(self, answers: Iterable[Answer]) -> None:
        """Keep `answers`, appended and synced to the partial file at once."""
        answers = list(answers)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        with open(self.partial, "a", encoding="utf-8") as f:
            for a in answers:
                f.write(json.dumps(a.to_json(), ensure_ascii=False) + "\n")
                self.answers[a.question_id] = a
            f.flush()
            os.fsync(f.fileno())

    def finish(self) -> int:
        """Write the answers file atomically in question order; drop the partial file."""
        order = {q.question_id: i for i, q in enumerate(self.questions)}
        rows = sorted(self.answers.values(), key=lambda a: order.get(a.question_id, len(order)))
        n = write_jsonl(self.path, (a.to_json() for a in rows))
        self.partial.unlink(missing_ok=True)
        return n


def _read_partial(path: Path) -> dict[int | str, Answer]:
    """Answers of a partial file; a torn last line (a kill mid-write) is skipped."""
    answers: dict[int | str, Answer] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            answers[obj["question_id"]] = Answer(**obj)
    return answers


def check_images(questions: list[Question], images: Path | None) -> list[Question]:
    """Every question's image must exist before any model or endpoint is asked; returns the
    questions with each image named as found. A name missing as given is looked for under
    COCO's own file name (`000000441147.jpg` in LLaVA's question files is
    `COCO_val2014_000000441147.jpg` in COCO's val2014 folder)."""
    pictured = [q for q in questions if q.image is not None]
    if not pictured:
        return questions
    if images is None:
        q = pictured[0]
        raise InputError(
            f"{len(pictured)} question(s) have an image, first {q.image} (question "
            f"{q.question_id!r}); pass the image folder with --images"
        )
    if not Path(images).is_dir():
        raise InputError(f"{images}: no such image folder (pass the folder with --images)")
    coco_names: dict[str, str] | None = None  # `000000441147.jpg` -> `COCO_val2014_...`
    located, missing = [], []
    for q in questions:
        if q.image is None or (Path(images) / q.image).is_file():
            located.append(q)
            continue
        if coco_names is None:
            coco_names = {
                f.name.split("_")[-1]: f.name for f in Path(images).glob("COCO_*_*") if f.is_file()
            }
        found = coco_names.get(q.image)
        if found is None:
            missing.append(q)
        located.append(replace(q, image=found))
    if missing:
        q = missing[0]
        raise InputError(
            f"{len(missing)} image(s) not found in {images}, first {q.image} (question "
            f"{q.question_id!r}); fix --images or remove those questions"
        )
    return located


# --- the endpoint backend: one chat request per question, through the batch client ---


def data_url(path: Path) -> str:
    """The image file as a `data:` URL (base64), as OpenAI-compatible vision APIs take it."""
    mime = mimetypes.guess_type(path.name)[0] or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def custom_id(question: Question) -> str:
    """The batch client's key of the request answering `question`."""
    return f"answer-{question.question_id}"


def vision_request(
    question: Question, images: Path | None, model: str, temperature: float, max_tokens: int
) -> dict:
    """One Batch API input line: the question's text and its image (if any) in one user
    message."""
    content: str | list[dict] = question.text
    if question.image is not None:
        content = [
            {"type": "text", "text": question.text},
            {"type": "image_url", "image_url": {"url": data_url(Path(images) / question.image)}},
        ]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    return {
        "custom_id": custom_id(question),
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
    }


def write_vision_requests(
    path: Path,
    questions: list[Question],
    images: Path | None,
    model: str,
    temperature: float,
    max_tokens: int,
) -> int:
    """Write the requests of `questions` (Batch API input format) atomically; return the count."""
    return write_jsonl(
        path, (vision_request(q, images, model, temperature, max_tokens) for q in questions)
    )


def answers_from_responses(
    responses: Path, questions: list[Question], model: str, temperature: float, max_tokens: int
) -> tuple[list[Answer], int, int]:
    """Answers from a responses.jsonl of `vision_request`s: (answers, failed, tokens).

    A question counts as failed unless a response line answers it: an error line, no line at
    all, and a reply without text are all failures, asked again on a rerun.
    """
    by_id = {custom_id(q): q for q in questions}
    answered: dict[int | str, Answer] = {}
    tokens = 0
    for _, line in iter_jsonl(responses):
        question = by_id.get(line.get("custom_id"))
        if question is None or question.question_id in answered:
            continue
        text, _ = response_text(line)
        if text is None:
            continue
        body = line["response"]["body"]  # a reply with text has a body with choices
        choice = body["choices"][0]
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        tokens += int(usage.get("completion_tokens") or 0)
        text = text.strip()
        metadata = {
            "backend": "endpoint",
            "temperature": temperature,
            "max_tokens": max_tokens,
            "finish_reason": choice.get("finish_reason"),
            "completion_tokens": usage.get("completion_tokens"),
            "served_by": body.get("model"),
        }
        model_answer = Answer(
            question.question_id,
            question.text,
            text,
            answer_id(model, question.question_id, text),
            model,
            metadata,
        )
        answered[question.question_id] = model_answer
    return list(answered.values()), len(questions) - len(answered), tokens


def endpoint_files(output: Path) -> tuple[Path, Path, Path]:
    """Where the endpoint backend keeps its requests, responses and journal: beside `output`."""
    stem = Path(output).with_suffix("")
    return (
        stem.with_name(stem.name + ".requests.jsonl"),
        stem.with_name(stem.name + ".responses.jsonl"),
        stem.with_name(stem.name + ".journal.sqlite"),
    )


def answer_with_endpoint(
    questions: list[Question],
    images: Path | None,
    output: Path,
    model: str,
    temperature: float,
    max_tokens: int,
    send: Callable[[Path, Path], bool],
) -> AnswerStats | None:
    """Answer the unanswered questions through `send(requests, responses)` (the batch client).

    `send` returns False when it sent nothing on purpose (a dry run): then nothing is written
    but the requests file, and None is returned.
    """
    started = time.monotonic()
    answers = AnswerFile(output, questions, model)
    todo = answers.todo()
    failed = tokens = 0
    if todo:
        todo = check_images(todo, images)
        requests, responses, _ = endpoint_files(output)
        write_vision_requests(requests, todo, images, model, temperature, max_tokens)
        if not send(requests, responses):
            return None
        new, failed, tokens = answers_from_responses(
            responses, todo, model, temperature, max_tokens
        )
        answers.add(new)
    answers.finish()
    return AnswerStats(
        total=len(questions),
        answered_before=answers.answered_before,
        answered_now=len(todo) - failed,
        failed=failed,
        completion_tokens=tokens,
        seconds=time.monotonic() - started,
    )
